"""Counting and timing XLA compilations with ``jax.monitoring`` (the backend-compile event), for tests that
check a program is reused and for benchmarks that report compile time.

    with compile_events() as compiles:
      generate(model, labels, key)
    compiles.count, compiles.seconds        # backend compilations inside the block, and their seconds
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import jax

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass
class CompileEvents:
  count: int = 0
  seconds: float = 0.0


@contextlib.contextmanager
def compile_events() -> Iterator[CompileEvents]:
  """Collects every XLA backend compilation (any program, on any thread) while the block runs."""
  events = CompileEvents()

  def listener(event: str, duration: float, **_) -> None:
    if event == BACKEND_COMPILE:
      events.count += 1
      events.seconds += duration

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
