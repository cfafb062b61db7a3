"""jax.profiler traces of chosen training steps or of a whole command, for TensorBoard's profile plugin.

    randar-jax train --config randar:runlocal --workdir runs/x --profile_steps=20,25   # -> runs/x/profile
    randar-jax sample randar-l --out samples --classes 1 --profile traces/sample
    tensorboard --logdir runs/x/profile        # with tensorboard-plugin-profile installed: the "Profile" tab

A trace shows each compiled program's device time (Trace viewer), the ops by time (HLO op stats) and the input
pipeline's share; jax.profiler writes ``plugins/profile/<run>/*.xplane.pb`` under the directory given.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import jax


def parse_steps(spec: str | None) -> tuple[int, int] | None:
  """``'a,b'`` -> (a, b): trace steps a..b (1-based, as checkpoints count them); ``'a'`` is ``'a,a'``."""
  if not spec:
    return None
  try:
    first, _, last = spec.partition(",")
    steps = int(first), int(last or first)
  except ValueError:
    raise ValueError(f"--profile_steps takes FIRST,LAST (step numbers), got {spec!r}") from None
  if not 1 <= steps[0] <= steps[1]:
    raise ValueError(f"--profile_steps needs 1 <= FIRST <= LAST, got {spec!r}")
  return steps


@contextlib.contextmanager
def trace(logdir: str | os.PathLike | None) -> Iterator[None]:
  """Traces everything inside the block into ``logdir`` (nothing when None)."""
  if not logdir:
    yield
    return
  from randar_jax.utils.files import check_output_dir

  check_output_dir(logdir, "--profile")  # before any work: a file in the way would fail only at the end
  jax.profiler.start_trace(os.fspath(logdir))
  try:
    yield
  finally:
    jax.profiler.stop_trace()
    print(f"profile written to {logdir} (view: tensorboard --logdir {logdir}, Profile tab)", flush=True)


class StepProfiler:
  """Traces training steps ``first..last`` of a loop: call it at the top of every iteration with the number of
  steps done and the latest step's outputs (waited on, so the trace holds exactly those steps), and ``close`` at
  the end. Inactive when ``steps`` is None."""

  def __init__(self, steps: tuple[int, int] | None, logdir: str | os.PathLike):
    self.steps, self.logdir, self.active = steps, os.fspath(logdir), False

  def __call__(self, done: int, outputs: Any) -> None:
    if self.steps is None:
      return
    first, last = self.steps
    if not self.active and first - 1 <= done < last:  # a resumed run inside the range starts at once
      jax.block_until_ready(outputs)
      jax.profiler.start_trace(self.logdir)
      self.active = True
    elif self.active and done >= last:
      self.close(outputs)

  def close(self, outputs: Any = None) -> None:
    if self.active:
      with contextlib.suppress(RuntimeError):  # outputs donated by a step that failed: stop the trace anyway
        jax.block_until_ready(outputs)
      jax.profiler.stop_trace()
      self.active = False
      print(f"profile of steps {self.steps[0]}-{self.steps[1]} written to {self.logdir}", flush=True)
