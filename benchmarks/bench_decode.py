"""Decode throughput (random weights). RandAR: 256 one-token steps vs the 88-step parallel schedule. RAR: its
256 raster steps (2-slot prefill + 255 single-slot steps, pow-cosine CFG), the paper's table 5 setting.

    python -m benchmarks.bench_decode                                # CPU default: 12x512, batch 16, CFG 1->4
    python -m benchmarks.bench_decode --batch 1
    python -m benchmarks.bench_decode --layers 24 --dim 1024 --heads 16 --batch 64 --dtype bfloat16   # RandAR-L
    python -m benchmarks.bench_decode --model rar                    # CPU default: 12x512, V 1024, powcos:16,2.75
    python -m benchmarks.bench_decode --model rar --layers 24 --dim 1024 --heads 16 --batch 128   # RAR-L (T5: f32)

Prints one JSON line: images/s (RandAR: at 256 and 88 steps and the speed-up; RAR: at 256 steps), compile
time, KV-cache bytes, and the FLOPs each image costs under the plan actually run (padding included; attention
counted over each segment's cache window, as the masked kernel computes it) with the achieved FLOP/s against
a measured matmul peak. Images/s exclude the VQ decoder.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import report
from randar_jax import checkpoint, families, sharding
from randar_jax.decode import rar as rar_decode
from randar_jax.decode.randar import generate, make_plan
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models.randar import RandARConfig
from randar_jax.models.rar import RARConfig
from randar_jax.utils.compiles import compile_events


def flops_per_image(cfg: RandARConfig, plan, branches: int) -> float:
  """Matmul FLOPs of one image (all branches) under ``plan``."""
  d, hd = cfg.dim, cfg.head_dim
  per_slot_layer = 2 * (d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d + 3 * d * cfg.ffn_hidden)
  attention = 2 * 2 * cfg.n_head * hd  # per slot read: QK^T and PV against the segment's cache window
  body = sum(seg.width * len(seg.start) * (per_slot_layer + attention * seg.window) for seg in plan.segments)
  body *= cfg.n_layer
  head = plan.num_forwards * plan.max_queries * 2 * d * cfg.vocab_size
  return float(branches * (body + head))


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


def matmul_peak(dtype) -> float:
  """FLOP/s of a large square matmul on this device (a realistic ceiling)."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(3):
    start = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - start)
  return 2 * n**3 / min(times)


def measure(generate_fn, model, labels, repeats: int, plan, **kwargs) -> dict:
  with compile_events() as compiles:
    out = generate_fn(model, labels, jax.random.key(0), **kwargs)
    jax.block_until_ready(out.tokens)
  cache, times = out.cache, []
  for i in range(repeats):
    start = time.perf_counter()
    out = generate_fn(model, labels, jax.random.key(i + 1), cache=cache, **kwargs)
    jax.block_until_ready(out.tokens)
    times.append(time.perf_counter() - start)
    cache = out.cache
  run = statistics.median(times)
  return {
    "steps": plan.num_forwards,
    "forwards": plan.num_forwards,
    "slots_fed": plan.slots_fed,
    "run_s": round(run, 4),
    "images_per_s": round(len(labels) / run, 3),
    "compile_s": round(compiles.seconds, 2),
    "kv_cache_bytes": int(cache.k.nbytes + cache.v.nbytes),
    "plan": plan,
  }


def efficiency(run: dict, flops: float, batch: int, peak: float) -> dict:
  return {
    **run,
    "gflop_per_image": round(flops / 1e9, 2),
    "achieved_tflop_s": round(flops * batch / run["run_s"] / 1e12, 4),
    "fraction_of_matmul_peak": round(flops * batch / run["run_s"] / peak, 3),
  }


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
  run = measure(
    rar_decode.generate, model, labels, args.repeats, plan, guidance=guidance, sampling=Sampling.make(temperature=1.0)
  )
  peak = matmul_peak(jnp.dtype(args.dtype))
  run = efficiency(run, rar_flops_per_image(cfg, run.pop("plan"), 1 if guidance is None else 2), args.batch, peak)
  return {
    "model": "rar",
    f"images_per_s_{cfg.num_tokens}": run["images_per_s"],
    "compile_s": run["compile_s"],
    "kv_cache_bytes": run["kv_cache_bytes"],
    "batch": args.batch,
    "cfg": args.cfg or "powcos:16,2.75",
    "params": checkpoint.param_count(checkpoint.abstract_params(cfg)),
    "matmul_peak_tflop_s": round(peak / 1e12, 4),
    "config": {k: v for k, v in dataclasses.asdict(cfg).items() if "dropout" not in k},
    "runs": {"full": run},
  }


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
  parser.add_argument("--buckets", default="default", choices=["default", "padded"])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  with sharding.model_context() as mesh:
    labels = jax.device_put(np.arange(args.batch) % args.classes, sharding.named_sharding(mesh, ("batch",)))
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
    buckets = None if args.buckets == "padded" else "default"
    runs = {}
    for name, steps in (("full", cfg.num_tokens), ("parallel", args.steps)):
      runs[name] = measure(
        generate,
        model,
        labels,
        args.repeats,
        make_plan(cfg.num_tokens, steps, 0, buckets),
        num_steps=steps,
        guidance=guidance,
        sampling=Sampling.make(temperature=1.0),
        buckets=buckets,
      )
  branches = 1 if guidance is None else 2
  peak = matmul_peak(jnp.dtype(args.dtype))
  runs = {
    name: efficiency(r, flops_per_image(cfg, r.pop("plan"), branches), args.batch, peak) for name, r in runs.items()
  }
  full, fast = runs["full"], runs["parallel"]
  report(
    {
      "model": "randar",
      "images_per_s_256": full["images_per_s"],
      f"images_per_s_{args.steps}": fast["images_per_s"],
      "images_per_s_88": fast["images_per_s"] if args.steps == 88 else None,
      "speedup_88_vs_256": round(fast["images_per_s"] / full["images_per_s"], 3),
      "compile_s": max(full["compile_s"], fast["compile_s"]),
      "kv_cache_bytes": fast["kv_cache_bytes"],
      "batch": args.batch,
      "cfg": args.cfg or "1,4",
      "buckets": args.buckets,
      "params": checkpoint.param_count(checkpoint.abstract_params(cfg)),
      "matmul_peak_tflop_s": round(peak / 1e12, 4),
      "config": {k: v for k, v in dataclasses.asdict(cfg).items() if "dropout" not in k},
      "runs": runs,
    }
  )


if __name__ == "__main__":
  main()
