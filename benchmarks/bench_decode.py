"""RandAR decode throughput: 256 one-token steps vs the 88-step parallel schedule (random weights).

    python -m benchmarks.bench_decode                                # CPU default: 12x512, batch 16, CFG 1->4
    python -m benchmarks.bench_decode --batch 1
    python -m benchmarks.bench_decode --layers 24 --dim 1024 --heads 16 --batch 64 --dtype bfloat16   # RandAR-L

Prints one JSON line: images/s at 256 and 88 steps, the speed-up, compile time, KV-cache bytes, and the
FLOPs each image costs under the plan actually run (padding included; attention counted over each
segment's cache window, as the masked kernel computes it) with the achieved FLOP/s against a measured matmul peak.
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
from randar_jax import checkpoint, models, sharding
from randar_jax.decode.randar import generate, make_plan
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models.randar import RandARConfig


def flops_per_image(cfg: RandARConfig, plan, branches: int) -> float:
  """Matmul FLOPs of one image (all branches) under ``plan``."""
  d, hd = cfg.dim, cfg.head_dim
  per_slot_layer = 2 * (d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d + 3 * d * cfg.ffn_hidden)
  attention = 2 * 2 * cfg.n_head * hd          # per slot read: QK^T and PV against the segment's cache window
  body = sum(seg.width * len(seg.start) * (per_slot_layer + attention * seg.window) for seg in plan.segments)
  body *= cfg.n_layer
  head = plan.num_forwards * plan.max_queries * 2 * d * cfg.vocab_size
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
  return 2 * n ** 3 / min(times)


def measure(model, labels, steps: int, guidance, repeats: int, buckets) -> dict:
  sampling = Sampling.make(temperature=1.0)
  kwargs = dict(num_steps=steps, guidance=guidance, sampling=sampling, buckets=buckets)
  start = time.perf_counter()
  out = generate(model, labels, jax.random.key(0), **kwargs)
  jax.block_until_ready(out.tokens)
  first = time.perf_counter() - start
  cache, times = out.cache, []
  for i in range(repeats):
    start = time.perf_counter()
    out = generate(model, labels, jax.random.key(i + 1), cache=cache, **kwargs)
    jax.block_until_ready(out.tokens)
    times.append(time.perf_counter() - start)
    cache = out.cache
  run = statistics.median(times)
  plan = make_plan(model.config.num_tokens, steps, 0, buckets)
  return {"steps": steps, "forwards": plan.num_forwards, "slots_fed": plan.slots_fed, "run_s": round(run, 4),
          "images_per_s": round(len(labels) / run, 3), "compile_s": round(first - run, 2),
          "kv_cache_bytes": int(cache.k.nbytes + cache.v.nbytes), "plan": plan}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--grid", type=int, default=16)
  parser.add_argument("--vocab", type=int, default=16384)
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--cfg", default="1,4", help="'none' or a guidance spec (see randar-jax sample --cfg)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=88, help="the parallel schedule to compare with N steps")
  parser.add_argument("--buckets", default="default", choices=["default", "padded"])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  cfg = RandARConfig(vocab_size=args.vocab, dim=args.dim, n_layer=args.layers, n_head=args.heads,
                     grid_size=args.grid, num_classes=args.classes, dtype=args.dtype, remat=False)
  with sharding.model_context() as mesh:
    model = models.build(cfg)
    # random (non-zero) head so sampling is not degenerate
    model.output[...] = jax.random.normal(jax.random.key(1), model.output.shape) * 0.02
    labels = jax.device_put(np.arange(args.batch) % args.classes, sharding.named_sharding(mesh, ("batch",)))
    guidance = Guidance.parse(args.cfg)
    buckets = None if args.buckets == "padded" else "default"
    full = measure(model, labels, cfg.num_tokens, guidance, args.repeats, buckets)
    fast = measure(model, labels, args.steps, guidance, args.repeats, buckets)
  branches = 1 if guidance is None else 2
  peak = matmul_peak(jnp.dtype(args.dtype))
  per_run = {}
  for name, r in (("full", full), ("parallel", fast)):
    flops = flops_per_image(cfg, r.pop("plan"), branches)
    r["gflop_per_image"] = round(flops / 1e9, 2)
    r["achieved_tflop_s"] = round(flops * args.batch / r["run_s"] / 1e12, 4)
    r["fraction_of_matmul_peak"] = round(flops * args.batch / r["run_s"] / peak, 3)
    per_run[name] = r
  report({"images_per_s_256": full["images_per_s"], f"images_per_s_{args.steps}": fast["images_per_s"],
          "images_per_s_88": fast["images_per_s"] if args.steps == 88 else None,
          "speedup_88_vs_256": round(fast["images_per_s"] / full["images_per_s"], 3),
          "compile_s": max(full["compile_s"], fast["compile_s"]), "kv_cache_bytes": fast["kv_cache_bytes"],
          "batch": args.batch, "cfg": args.cfg, "buckets": args.buckets,
          "params": checkpoint.param_count(checkpoint.abstract_params(cfg)),
          "matmul_peak_tflop_s": round(peak / 1e12, 4),
          "config": {k: v for k, v in dataclasses.asdict(cfg).items() if "dropout" not in k},
          "runs": per_run})


if __name__ == "__main__":
  main()
