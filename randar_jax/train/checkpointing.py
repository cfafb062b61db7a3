"""Training checkpoints: one Orbax CheckpointManager per workdir, saving everything a resume needs.

    ckpt = Checkpointer(workdir, keep=3, keep_every=50_000)
    ckpt.save(step, state, loader, model_config_dict, run_config_dict)    # async; returns at once
    state = ckpt.restore_latest(trainer, loader)      # None in a fresh workdir; loader rewound in place
    ckpt.close()                                      # waits for the last save

Layout (``checkpoint.load_model(workdir)`` loads a training workdir, since 'params' and 'config' match
:mod:`randar_jax.checkpoint`):

    WORKDIR/<step>/params/        nested dict of float32 arrays (the model)
    WORKDIR/<step>/opt_state/     {'tx': optax state, 'step', 'skipped'}
    WORKDIR/<step>/ema/           EMA parameters (only with optim.ema_decay > 0)
    WORKDIR/<step>/data/          Grain iterator state, one JSON per process
    WORKDIR/<step>/config/        the model config (JSON, with 'family')
    WORKDIR/<step>/run_config/    the whole run config (JSON)

Saves are asynchronous (the next train steps overlap the write) and atomic: Orbax writes into a temporary
directory and renames it when complete, so a run killed mid-save leaves only complete steps. The last ``keep``
steps survive, plus every multiple of ``keep_every`` (RandAR keeps 50k, 100k, ...). Restoring takes the newest
step; if it cannot be read (a truncated or damaged file), a warning names it and the previous step is used.
Restoring onto another mesh reshards (the target shardings come from the trainer); the data iterator needs
the same process count. Silent bit flips inside array data are not detected (TensorStore keeps no checksums).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import orbax.checkpoint as ocp

from randar_jax import checkpoint
from randar_jax.train.train import Trainer, TrainState

PARAMS, CONFIG = checkpoint.PARAMS, checkpoint.CONFIG
OPT, EMA, DATA, RUN_CONFIG = "opt_state", "ema", "data", "run_config"


class CheckpointError(RuntimeError):
  """No checkpoint in a workdir could be restored."""


class Checkpointer:
  """Async Orbax checkpoints of a TrainState + data iterator + configs in ``workdir`` (see module doc)."""

  def __init__(
    self, workdir: str | os.PathLike, *, keep: int = 3, keep_every: int | None = None, async_save: bool = True
  ):
    self.directory = os.path.abspath(os.fspath(workdir))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      keep_period=keep_every or None,
      create=True,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(
    self, step: int, state: TrainState, loader, model_config: Mapping[str, Any], run_config: Mapping[str, Any]
  ) -> None:
    """Starts an async save of ``state`` (after ``step`` iterations) and the loader position; returns at once."""
    if "family" not in model_config:
      raise ValueError("the model config must name its 'family'")
    items = {
      PARAMS: ocp.args.StandardSave(state.params),
      OPT: ocp.args.StandardSave({"tx": state.opt_state, "step": state.step, "skipped": state.skipped}),
      DATA: loader.save_args(),
      CONFIG: ocp.args.JsonSave(dict(model_config)),
      RUN_CONFIG: ocp.args.JsonSave(dict(run_config)),
    }
    if state.ema is not None:
      items[EMA] = ocp.args.StandardSave(state.ema)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, trainer: Trainer, loader) -> TrainState:
    """Restores ``step`` onto the trainer's mesh and shardings; rewinds ``loader`` to the saved position."""
    target = trainer.abstract
    items = {
      PARAMS: ocp.args.StandardRestore(target.params),
      OPT: ocp.args.StandardRestore({"tx": target.opt_state, "step": target.step, "skipped": target.skipped}),
      DATA: loader.restore_args(),
    }
    if target.ema is not None:
      items[EMA] = ocp.args.StandardRestore(target.ema)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    opt = restored[OPT]
    if int(opt["step"]) != step:
      raise CheckpointError(f"checkpoint {step} in {self.directory} holds the state of step {int(opt['step'])}")
    return TrainState(
      opt["step"], restored[PARAMS], opt["tx"], opt["skipped"], restored[EMA] if target.ema is not None else None
    )

  def restore_latest(self, trainer: Trainer, loader) -> TrainState | None:
    """The newest readable checkpoint (None if there is none); warns about each unreadable newer one."""
    steps = self.steps()
    failures = []
    for step in reversed(steps):
      try:
        return self.restore(step, trainer, loader)
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back to the previous one
        failures.append(f"step {step}: {type(e).__name__}: {_first_line(e)}")
        warnings.warn(
          f"checkpoint {step} in {self.directory} cannot be restored ({failures[-1]}); "
          f"falling back to the previous checkpoint",
          RuntimeWarning,
          stacklevel=2,
        )
    if failures:
      raise CheckpointError(
        f"no checkpoint in {self.directory} could be restored:\n  "
        + "\n  ".join(failures)
        + "\nmove the damaged step directories away (or start a new --workdir)"
      )
    return None

  def read_json(self, step: int, item: str) -> dict:
    return dict(self.manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0][:300] if text else ""
