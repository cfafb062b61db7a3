"""Shared helpers for the benchmarks: timing, environment description and the one-line JSON report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def environment() -> dict[str, Any]:
  device = jax.devices()[0]
  return {
    "date": datetime.date.today().isoformat(),
    "backend": jax.default_backend(),
    "device": getattr(device, "device_kind", str(device)),
    "devices": jax.device_count(),
    "jax": jax.__version__,
  }


def matmul_peak(dtype) -> float:
  """FLOP/s of a large square matmul on this device (a realistic ceiling), best of 3."""
  n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: a @ a)
  _, times = timed(lambda: f(a), 3)
  return 2 * n**3 / min(times)


def memory_bandwidth() -> float:
  """Bytes/s of a large elementwise update (read + write; 256 MB on CPU, 4 GB elsewhere), best of 3."""
  n = 2**25 if jax.default_backend() == "cpu" else 2**30
  a = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda a: a * 1.5)
  _, times = timed(lambda: f(a), 3)
  return 2 * a.nbytes / min(times)


def load_average() -> float | None:
  """The 1-minute load average (other jobs sharing the machine make timings noisy), None where unknown."""
  try:
    return round(os.getloadavg()[0], 2)
  except OSError:
    return None


@contextlib.contextmanager
def maybe_profile(directory: str | None):
  """A ``jax.profiler`` trace of the block into ``directory`` (TensorBoard's xplane and a Perfetto JSON), or
  nothing."""
  if directory is None:
    yield
    return
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    yield


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
  """Runs fn once (compile + first run), then ``repeats`` times; returns (first-call seconds, per-run seconds)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, times


def report(results: dict[str, Any]) -> None:
  """Prints the benchmark's single JSON line."""
  print(json.dumps({**results, "env": environment()}), flush=True)


def add_model_args(parser: argparse.ArgumentParser, batch: int = 8) -> None:
  """The RandAR size flags shared by the training benchmarks (CPU-sized defaults: 12x512, vocab 16384)."""
  parser.add_argument("--layers", type=int, default=12)
  parser.add_argument("--dim", type=int, default=512)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--vocab", type=int, default=16384)
  parser.add_argument("--grid", type=int, default=16)
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--batch", type=int, default=batch)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up step)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--remat", default="both", choices=["on", "off", "both"])
  parser.add_argument("--attention", default="xla", choices=["xla", "cudnn"])


def randar_config(args: argparse.Namespace):
  """The RandARConfig those flags describe, and the remat settings to measure."""
  from randar_jax.models.randar import RandARConfig

  config = RandARConfig(
    vocab_size=args.vocab,
    dim=args.dim,
    n_layer=args.layers,
    n_head=args.heads,
    grid_size=args.grid,
    num_classes=args.classes,
    dtype=args.dtype,
    attention_impl=args.attention,
  )
  return config, {"on": [True], "off": [False], "both": [True, False]}[args.remat]


def each_setting(measure: Callable[[Any], dict], base, settings) -> tuple[list[dict], dict]:
  """measure(config with remat=r) for each setting; a failure (e.g. out of memory without remat) is reported in
  the results, not fatal. Returns (results, the first successful result or {})."""
  results = []
  for remat in settings:
    try:
      results.append(measure(dataclasses.replace(base, remat=remat)))
    except Exception as e:  # noqa: BLE001 - keep the other setting's numbers
      results.append({"remat": remat, "error": f"{type(e).__name__}: {str(e)[:300]}"})
  return results, next((r for r in results if "error" not in r), {})
