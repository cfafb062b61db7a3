"""Training throughput and MFU of the real train step (AdamW with the decay mask, clipping, skip rule, sharded
state), for a configurable RandAR size; remat on and off.

    python -m benchmarks.bench_train                                  # CPU-sized default: 12x512, batch 8
    python -m benchmarks.bench_train --layers 24 --dim 1024 --heads 16 --batch 64 --dtype bfloat16   # RandAR-L

Prints one JSON line: ``tokens_per_s`` (image tokens, grid**2 per example) and ``mfu`` for the first ``--remat``
setting, ``results`` for every setting, ``config``. MFU = model FLOPs per step / step time / (peak * devices):
model FLOPs = 3 x the analytic forward matmul FLOPs (randar_jax/train/metrics.py: projections, SwiGLU and the
head per slot, attention scores over the full S x S square; rematerialisation not counted). Peak: on CPU a
measured large-matmul rate in the run's dtype (as bench_decode); on GPU/TPU the dense bf16 datasheet value
for the device kind (H100: 989 TFLOP/s), whatever ``--dtype``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_decode import matmul_peak
from benchmarks.common import add_model_args, each_setting, randar_config, report
from randar_jax import checkpoint, sharding
from randar_jax.data.pipeline import to_global
from randar_jax.models.randar import RandARConfig
from randar_jax.train import metrics
from randar_jax.train.optim import OptimConfig
from randar_jax.train.train import Trainer


def random_batch(cfg: RandARConfig, batch: int, mesh) -> dict:
  rng = np.random.default_rng(0)
  n = cfg.num_tokens
  local = jax.process_count()
  host = {
    "tokens": rng.integers(0, cfg.vocab_size, (batch // local, n), dtype=np.int32),
    "order": np.stack([rng.permutation(n) for _ in range(batch // local)]).astype(np.int32),
    "labels": rng.integers(0, cfg.num_classes, (batch // local,), dtype=np.int32),
  }
  return to_global(host, mesh)


def measure(cfg: RandARConfig, batch: int, steps: int, mesh, grad_accum: int) -> dict:
  trainer = Trainer.create(cfg, OptimConfig(warmup_steps=0, grad_accum=grad_accum), 1000, mesh)
  state = trainer.init()
  data = random_batch(cfg, batch, mesh)
  start = time.perf_counter()
  with sharding.model_context(mesh):
    compiled = trainer.compiled_train_step.lower(state, data).compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(steps + 1):  # the first step warms up allocations and is not counted
    start = time.perf_counter()
    state, out = compiled(state, data)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times[1:])
  flops = metrics.train_flops_per_example(cfg)[0] * batch
  return {
    "remat": cfg.remat,
    "step_s": round(step_s, 4),
    "step_min_s": round(min(times[1:]), 4),
    "tokens_per_s": round(batch * cfg.num_tokens / step_s, 1),
    "tflops_per_step": round(flops / 1e12, 4),
    "achieved_tflops": round(flops / step_s / 1e12, 4),
    "compile_s": round(compile_s, 2),
    "loss": round(float(out["loss"]), 4),
    "skipped": int(out["skipped_total"]),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_args(parser)
  parser.add_argument("--grad-accum", type=int, default=1)
  parser.add_argument("--fsdp", type=int, default=1, help="mesh fsdp size (the rest of the devices on 'data')")
  args = parser.parse_args()

  base, settings = randar_config(args)
  mesh = sharding.build_mesh({"data": -1, "fsdp": args.fsdp})
  cpu = jax.default_backend() == "cpu"
  peaks = []  # CPU: the best matmul rate seen around the runs (other load on the machine lowers any one reading)

  def run(config):
    peaks.append(matmul_peak(jnp.dtype(args.dtype)) if cpu else 0.0)
    return measure(config, args.batch, args.steps, mesh, args.grad_accum)

  results, first = each_setting(run, base, settings)
  if cpu:
    peak, source = max(peaks + [matmul_peak(jnp.dtype(args.dtype))]) / jax.device_count(), "measured matmul (best)"
  else:
    peak, source = metrics.peak_flops(jax.devices()[0].device_kind), "datasheet dense bf16"
  for r in results:
    if "error" not in r:
      r["mfu"] = round(r["achieved_tflops"] * 1e12 / (peak * jax.device_count()), 4) if peak else None
  params = checkpoint.param_count(checkpoint.abstract_params(base))
  report(
    {
      "tokens_per_s": first.get("tokens_per_s"),
      "mfu": first.get("mfu"),
      "params": params,
      "batch": args.batch,
      "grad_accum": args.grad_accum,
      "mesh": dict(mesh.shape),
      "peak_tflops_per_device": round(peak / 1e12, 3) if peak else None,
      "peak_source": source,
      "load_avg": open("/proc/loadavg").read().split()[0] if cpu else None,
      "config": {k: v for k, v in dataclasses.asdict(base).items() if k != "remat"},
      "results": results,
    }
  )


if __name__ == "__main__":
  main()
