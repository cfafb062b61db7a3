"""Decode throughput (random weights). RandAR: 256 one-token steps vs the 88-step parallel schedule. RAR: its
256 raster steps (2-slot prefill + 255 single-slot steps, pow-cosine CFG), the paper's table 5 setting.

    python -m benchmarks.bench_decode                                # CPU default: 12x512, batch 16, CFG 1->4
    python -m benchmarks.bench_decode --batch 1
    python -m benchmarks.bench_decode --layers 24 --dim 1024 --heads 16 --batch 64 --dtype bfloat16   # RandAR-L
    python -m benchmarks.bench_decode --model rar                    # CPU default: 12x512, V 1024, powcos:16,2.75
    python -m benchmarks.bench_decode --model rar --layers 24 --dim 1024 --heads 16 --batch 128   # RAR-L (T5: f32)

    python -m benchmarks.bench_decode --plans fit,buckets --no-full    # before/after, interleaved in one run
    python -m benchmarks.bench_decode --original benchmarks/original_randar_cpu.json   # ratio to the original
    python -m benchmarks.bench_decode --original-checkout ~/src/RandAR   # the original timed in the same run
    python -m benchmarks.bench_decode --profile /tmp/trace           # + a jax.profiler trace of one decode

Prints one JSON line: images/s (RandAR: at 256 and 88 steps and the speed-up; RAR: at 256 steps), compile
seconds and count, KV-cache bytes, chunk slots fed against the schedule's minimum (slots_fed_88, slots_min_88
and for 32, 64, 88, 256 steps), the FLOPs each image costs under the plan actually run (padding included;
attention counted over each segment's cache window, as the masked kernel computes it) and the bytes it moves
(weights per forward shared by the batch, KV-cache window reads and chunk writes), with the achieved fractions
of a measured matmul rate and memory bandwidth, and the 1-minute load average (the machine may be shared).
Timed runs of several plans are interleaved. Images/s exclude the VQ decoder. ``--original`` reads the
original PyTorch RandAR's images/s measured on the same machine (benchmarks/compare_original.py measures
them where torch and a RandAR checkout are available) and prints the ratio; ``--original-checkout`` times the
original in the same run instead (before and after ours, each in a subprocess of its own, so the two never
share the cores), and the ratio is to the mean of the two.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import compare_original
from benchmarks.common import load_average, matmul_peak, maybe_profile, memory_bandwidth, report
from randar_jax import checkpoint, families, sharding
from randar_jax.decode import rar as rar_decode
from randar_jax.decode.plan import Plan
from randar_jax.decode.randar import generate, make_plan
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models.llama import layer_slot_flops
from randar_jax.models.randar import RandARConfig
from randar_jax.models.rar import RARConfig
from randar_jax.utils.compiles import compile_events


def flops_per_image(cfg: RandARConfig, plan: Plan, branches: int) -> float:
  """Matmul FLOPs of one image (all branches) under ``plan``: every fed slot (padding included) through every
  layer, attention against its segment's cache window (as the masked kernel computes it), and the head at the
  query rows the plan runs."""
  attention = 2 * 2 * cfg.n_head * cfg.head_dim  # per (slot, window slot): QK^T and PV
  body = sum(seg.width * len(seg.start) * (layer_slot_flops(cfg) + attention * seg.window) for seg in plan.segments)
  head = plan.query_rows * 2 * cfg.dim * cfg.vocab_size
  return float(branches * (cfg.n_layer * body + head))


def bytes_per_image(cfg: RandARConfig, plan: Plan, branches: int, batch: int) -> dict[str, float]:
  """Bytes one image moves under ``plan``: the weights read once per forward (shared by the batch), the KV
  cache windows every forward's attention reads and the chunk it writes, per layer and branch. Activations
  (a few MB per forward) are left out."""
  item = jnp.dtype(cfg.dtype).itemsize
  kv_slot = 2 * cfg.kv_heads * cfg.head_dim * item  # one slot's key and value, one layer
  weights = plan.num_forwards * (cfg.n_layer * layer_slot_flops(cfg) // 2 + cfg.dim * cfg.vocab_size) * item / batch
  reads = sum(seg.window * len(seg.start) for seg in plan.segments) * kv_slot * cfg.n_layer * branches
  writes = plan.slots_fed * kv_slot * cfg.n_layer * branches
  return {"weights": weights, "kv_read": float(reads), "kv_write": float(writes), "total": weights + reads + writes}


def rar_flops_per_image(cfg: RARConfig, plan, branches: int) -> float:
  """Matmul FLOPs of one RAR image (all branches): qkv, proj, MLP and the per-slot adaLN (6D x D) per slot and
  layer, attention against each forward's window, the head's adaLN and lm_head per sampled token."""
  d = cfg.dim
  per_slot_layer = 2 * (10 * d * d + 2 * d * cfg.mlp_dim)
  body = sum(
    len(seg.start) * seg.width * cfg.n_layer * (per_slot_layer + 2 * 2 * seg.window * d) for seg in plan.segments
  )
  head = plan.num_forwards * 2 * (2 * d * d + d * cfg.vocab_size)
  return float(branches * (body + head))


def measure(configs: dict[str, tuple], model, labels, repeats: int, profile: str | None = None) -> dict[str, dict]:
  """Times each named config ``(generate_fn, plan, kwargs)``: one compiled call each, then ``repeats`` rounds
  that run the configs in turn (interleaved, so load from other jobs hits them alike). With ``profile``, one
  more call of the last config runs under a ``jax.profiler`` trace."""
  results, caches = {}, {}
  for name, (generate_fn, _, kwargs) in configs.items():
    with compile_events() as compiles:
      out = generate_fn(model, labels, jax.random.key(0), **kwargs)
      jax.block_until_ready(out.tokens)
    caches[name] = out.cache
    results[name] = {"compile_s": round(compiles.seconds, 2), "compile_count": compiles.count, "times": []}
  with compile_events() as recompiles:
    for i in range(repeats):
      for name, (generate_fn, _, kwargs) in configs.items():
        start = time.perf_counter()
        out = generate_fn(model, labels, jax.random.key(i + 1), cache=caches[name], **kwargs)
        jax.block_until_ready(out.tokens)
        results[name]["times"].append(time.perf_counter() - start)
        caches[name] = out.cache
  if profile:
    name, (generate_fn, _, kwargs) = list(configs.items())[-1]
    with maybe_profile(profile):
      jax.block_until_ready(generate_fn(model, labels, jax.random.key(99), cache=caches[name], **kwargs).tokens)
  for name, (_, plan, _) in configs.items():
    run = statistics.median(results[name].pop("times"))
    results[name].update(
      forwards=plan.num_forwards,
      segments=len(plan.segments),
      slots_fed=plan.slots_fed,
      slots_min=plan.slots_min,
      run_s=round(run, 4),
      images_per_s=round(len(labels) / run, 3),
      recompiles=recompiles.count,
      kv_cache_bytes=int(caches[name].k.nbytes + caches[name].v.nbytes),
    )
  return results


def efficiency(run: dict, flops: float, moved: dict | None, batch: int, peak: float, bandwidth: float) -> dict:
  """Adds FLOPs and bytes per image and the achieved fractions of the measured matmul rate and bandwidth."""
  out = {
    **run,
    "gflop_per_image": round(flops / 1e9, 2),
    "achieved_tflop_s": round(flops * batch / run["run_s"] / 1e12, 4),
    "fraction_of_matmul_peak": round(flops * batch / run["run_s"] / peak, 3),
  }
  if moved is not None:
    out["mb_per_image"] = {k: round(v / 1e6, 1) for k, v in moved.items()}
    out["fraction_of_bandwidth"] = round(moved["total"] * batch / run["run_s"] / bandwidth, 3)
  return out


def bench_rar(args, labels) -> dict:
  cfg = RARConfig(
    vocab_size=args.vocab or 1024,
    dim=args.dim,
    n_layer=args.layers,
    n_head=args.heads,
    mlp_dim=4 * args.dim,
    grid_size=args.grid,
    num_classes=args.classes,
    dtype=args.dtype,
    remat=False,
  )
  model = families.build(cfg)
  # adaLN-Zero init makes every block the identity: give the modulations random values so the run is realistic
  for layer, scale in ((model.blocks.adaLN_modulation, 0.02), (model.adaln_before_head.adaLN_modulation, 0.02)):
    layer.kernel[...] = jax.random.normal(jax.random.key(2), layer.kernel.shape) * scale
  guidance = Guidance.parse(args.cfg or "powcos:16,2.75")
  plan = rar_decode.make_plan(cfg.num_tokens)
  kwargs = dict(guidance=guidance, sampling=Sampling.make(temperature=1.0))
  run = measure({"full": (rar_decode.generate, plan, kwargs)}, model, labels, args.repeats, args.profile)["full"]
  peak, bandwidth = matmul_peak(jnp.dtype(args.dtype)), memory_bandwidth()
  run = efficiency(run, rar_flops_per_image(cfg, plan, 1 if guidance is None else 2), None, args.batch, peak, bandwidth)
  return {
    "model": "rar",
    f"images_per_s_{cfg.num_tokens}": run["images_per_s"],
    "compile_s": run["compile_s"],
    "compile_count": run["compile_count"],
    "kv_cache_bytes": run["kv_cache_bytes"],
    "batch": args.batch,
    "load_average": load_average(),
    "cfg": args.cfg or "powcos:16,2.75",
    "params": checkpoint.param_count(checkpoint.abstract_params(cfg)),
    "matmul_peak_tflop_s": round(peak / 1e12, 4),
    "config": {k: v for k, v in dataclasses.asdict(cfg).items() if "dropout" not in k},
    "runs": {"full": run},
  }


SLOT_STEPS = (32, 64, 88, 256)  # schedules whose padding the report lists (for a 16x16 grid)
PLANS = {"fit": "default", "buckets": "buckets", "padded": None}  # --plans name -> generate(buckets=...)


def original_numbers(path: str | None, batch: int, steps: int) -> float | None:
  """The original's images/s at this batch and step count from a JSON file
  ``{"randar": {"batch_1": {"images_per_s_88": 0.22}, ...}}`` (see benchmarks/original_randar_cpu.json)."""
  if path is None:
    return None
  with open(path) as f:
    table = json.load(f)["randar"]
  return table.get(f"batch_{batch}", {}).get(f"images_per_s_{steps}")


def time_original(checkout: str, args: argparse.Namespace, cfg: tuple[float, float]) -> float:
  """The original PyTorch RandAR's images/s at this shape, timed now by benchmarks/compare_original.py in a
  subprocess (its own torch threads; ``args.repeats`` timed calls after one warm-up)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "original.json")
    shape = ["--layers", args.layers, "--dim", args.dim, "--heads", args.heads, "--vocab", args.vocab or 16384]
    shape += ["--grid", args.grid, "--classes", args.classes, "--batch", args.batch, "--steps", args.repeats]
    shape += ["--num-steps", args.steps, "--cfg", f"{cfg[0]},{cfg[1]}"]
    command = [sys.executable, "-m", "benchmarks.compare_original", "--randar-checkout", checkout, "--out", out]
    subprocess.run(command + [str(v) for v in shape], check=True, stdout=subprocess.DEVNULL)
    rate = original_numbers(out, args.batch, args.steps)
  assert rate is not None, "compare_original writes the batch's entry"
  return rate


def original_cfg(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[float, float]:
  """Checks that ``--original-checkout`` can run (torch, the checkout, a guidance the original has) and returns
  the original's cfg_scales, before anything is compiled."""
  if args.model != "randar":
    parser.error("--original-checkout times the original RandAR; use it with --model randar")
  compare_original.check_original(parser, args.original_checkout)
  try:
    return compare_original.cfg_scales(args.cfg or "1,4")
  except argparse.ArgumentTypeError:
    parser.error(f"the original has only linear guidance 'start,end'; --cfg {args.cfg!r} has no counterpart there")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="randar", choices=["randar", "rar"])
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--grid", type=int, default=16)
  parser.add_argument("--vocab", type=int, help="codebook size (default: RandAR 16384, RAR 1024)")
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument(
    "--cfg", help="'none' or a guidance spec (see randar-jax sample --cfg); default RandAR '1,4', RAR 'powcos:16,2.75'"
  )
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=88, help="RandAR: the parallel schedule to compare with N steps")
  parser.add_argument(
    "--plans",
    default="fit",
    help="comma-separated RandAR plans to time at --steps, interleaved: fit (exact-fit segments, the default), "
    "buckets (the older monotone bucket widths), padded (one width)",
  )
  parser.add_argument("--no-full", action="store_true", help="RandAR: skip the N-step (one token per step) run")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of one more decode call to DIR")
  parser.add_argument(
    "--original", metavar="JSON", help="the original PyTorch RandAR's images/s (benchmarks/original_randar_cpu.json)"
  )
  parser.add_argument(
    "--original-checkout",
    metavar="DIR",
    help="a RandAR checkout: time the original PyTorch generate before and after ours (needs torch)",
  )
  args = parser.parse_args()
  if args.original and args.original_checkout:
    parser.error("give --original (numbers from a file) or --original-checkout (timed now), not both")
  cfg_scales = original_cfg(parser, args) if args.original_checkout else None
  plans = args.plans.split(",")
  if not set(plans) <= set(PLANS):
    parser.error(f"--plans takes a comma-separated subset of {sorted(PLANS)}, got {args.plans!r}")

  with sharding.model_context() as mesh:
    # data-sharded over the mesh's batch axes where they divide the batch (batch 1 on 2 devices: replicated)
    spec = sharding.fitted_spec((args.batch,), ("batch",), mesh)
    labels = jax.device_put(np.arange(args.batch) % args.classes, jax.sharding.NamedSharding(mesh, spec))
    if args.model == "rar":
      report(bench_rar(args, labels))
      return
    cfg = RandARConfig(
      vocab_size=args.vocab or 16384,
      dim=args.dim,
      n_layer=args.layers,
      n_head=args.heads,
      grid_size=args.grid,
      num_classes=args.classes,
      dtype=args.dtype,
      remat=False,
    )
    model = families.build(cfg)
    # random (non-zero) head so sampling is not degenerate
    model.output[...] = jax.random.normal(jax.random.key(1), model.output.shape) * 0.02
    guidance = Guidance.parse(args.cfg or "1,4")
    sampling = Sampling.make(temperature=1.0)
    configs = {}
    if not args.no_full:
      plan = make_plan(cfg.num_tokens, cfg.num_tokens, 0, "default")
      configs["full"] = (generate, plan, dict(num_steps=cfg.num_tokens, guidance=guidance, sampling=sampling))
    for name in plans:
      plan = make_plan(cfg.num_tokens, args.steps, 0, PLANS[name])
      kwargs = dict(num_steps=args.steps, guidance=guidance, sampling=sampling, buckets=PLANS[name])
      configs[name] = (generate, plan, kwargs)
    originals = [time_original(args.original_checkout, args, cfg_scales)] if cfg_scales else []
    runs = measure(configs, model, labels, args.repeats, args.profile)
    if cfg_scales:
      originals.append(time_original(args.original_checkout, args, cfg_scales))
  branches = 1 if guidance is None else 2
  peak, bandwidth = matmul_peak(jnp.dtype(args.dtype)), memory_bandwidth()
  runs = {
    name: efficiency(
      r,
      flops_per_image(cfg, configs[name][1], branches),
      bytes_per_image(cfg, configs[name][1], branches, args.batch),
      args.batch,
      peak,
      bandwidth,
    )
    for name, r in runs.items()
  }
  fast = runs[plans[0]]
  slots = {
    steps: make_plan(cfg.num_tokens, steps, 0, PLANS[plans[0]]) for steps in SLOT_STEPS if steps <= cfg.num_tokens
  }
  original = statistics.mean(originals) if originals else original_numbers(args.original, args.batch, args.steps)
  results = {
    "model": "randar",
    "plan": plans[0],
    f"images_per_s_{args.steps}": fast["images_per_s"],
    "images_per_s_256": runs["full"]["images_per_s"] if "full" in runs else None,
    "speedup_vs_256": round(fast["images_per_s"] / runs["full"]["images_per_s"], 3) if "full" in runs else None,
    f"slots_fed_{args.steps}": fast["slots_fed"],
    f"slots_min_{args.steps}": fast["slots_min"],
    "slots_fed_min": {steps: [p.slots_fed, p.slots_min] for steps, p in slots.items()},
    f"gflop_per_image_{args.steps}": fast["gflop_per_image"],
    f"mb_per_image_{args.steps}": fast["mb_per_image"],
    "fraction_of_matmul_peak": fast["fraction_of_matmul_peak"],
    "fraction_of_bandwidth": fast["fraction_of_bandwidth"],
    "compile_s": fast["compile_s"],
    "compile_count": fast["compile_count"],
    "recompiles": fast["recompiles"],
    "kv_cache_bytes": fast["kv_cache_bytes"],
    "batch": args.batch,
    "cfg": args.cfg or "1,4",
    "load_average": load_average(),
    "params": checkpoint.param_count(checkpoint.abstract_params(cfg)),
    "matmul_peak_tflop_s": round(peak / 1e12, 4),
    "bandwidth_gb_s": round(bandwidth / 1e9, 2),
    "config": {k: v for k, v in dataclasses.asdict(cfg).items() if "dropout" not in k},
    "runs": runs,
  }
  if original is not None:
    results[f"original_images_per_s_{args.steps}"] = original
    results[f"vs_original_{args.steps}"] = round(fast["images_per_s"] / original, 3)
    results["original_source"] = "timed before and after ours" if originals else args.original
    if originals:
      results[f"original_images_per_s_{args.steps}_runs"] = originals
  report(results)


if __name__ == "__main__":
  main()
