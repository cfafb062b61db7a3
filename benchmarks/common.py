"""Shared helpers for the benchmarks: timing, environment description and the one-line JSON report."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, Callable

import jax


def environment() -> dict[str, Any]:
  device = jax.devices()[0]
  return {"date": datetime.date.today().isoformat(), "backend": jax.default_backend(),
          "device": getattr(device, "device_kind", str(device)), "devices": jax.device_count(),
          "jax": jax.__version__}


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
