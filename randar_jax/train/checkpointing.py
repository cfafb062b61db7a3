"""Training checkpoints: one Orbax CheckpointManager per workdir, saving everything a resume needs, verified.

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
    WORKDIR/<step>/digest/        a checksum of every array of params / opt_state / ema (JSON)
    WORKDIR/damaged/<step>/       steps that failed to restore or verify, moved aside (never deleted)

Saves are asynchronous (the next train steps overlap the write) and atomic: Orbax writes into a temporary
directory and renames it when complete, so a run killed mid-save leaves only complete steps. The last ``keep``
steps survive, plus every multiple of ``keep_every`` (RandAR keeps 50k, 100k, ...). Restoring onto another mesh
reshards (the target shardings come from the trainer); the data iterator needs the same process count.

Integrity. Orbax / TensorStore keep no checksums of array data, so a flipped byte in a chunk restores silently.
Each save therefore records :func:`digest` of its arrays (computed on the devices from the state being saved, in
the same atomic commit), and a restore recomputes it from the restored arrays and compares, leaf by leaf; it also
requires finite parameters. A save of non-finite parameters is refused (:class:`NonFiniteError`): every step on
disk holds finite values, so rotation (which drops only the oldest) never removes the newest good one. Restoring
takes the newest step; one that cannot be read or verified is moved to ``WORKDIR/damaged/<step>`` with a warning
naming the step and the reason, and the previous step is used; the run then writes that step again.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from randar_jax import checkpoint
from randar_jax.train.train import Trainer, TrainState

PARAMS, CONFIG = checkpoint.PARAMS, checkpoint.CONFIG
OPT, EMA, DATA, RUN_CONFIG, DIGEST = "opt_state", "ema", "data", "run_config", "digest"
DAMAGED = "damaged"
DIGEST_FORMAT = "randar_jax.digest/1"


class CheckpointError(RuntimeError):
  """A checkpoint cannot be restored or verified (or none in a workdir can)."""


class NonFiniteError(RuntimeError):
  """Training produced non-finite values (the run stops rather than train on or save them)."""


def _leaf_sums(x: jax.Array | np.ndarray, check_finite: bool = False) -> np.ndarray:
  """(sum of w, sum over rows of (sum of the row's w) * (2 r + 1)) mod 2**32 over the words w of ``x`` (rows along
  the last axis, r: the global flat index of the row's first element) -> uint32 (2,), from this process's shards.

  Integer sums wrap and associate, so the result does not depend on the sharding (a shard holding part of a row
  adds its part with the same weight), the process count or the summation order; any single changed word changes
  the second sum (an odd weight times a nonzero difference below 2**32). One pass over each shard on the host with
  NumPy (~4 GB/s per CPU core; XLA:CPU's integer reductions manage ~0.5). A third entry counts the shards with
  NaN / inf values (with ``check_finite``, for floating arrays)."""
  shards = (
    [(s.index, s.data) for s in x.addressable_shards if s.replica_id == 0] if isinstance(x, jax.Array) else [((), x)]
  )
  shape = tuple(x.shape) or (1,)
  strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
  total = weighted = bad = np.uint64(0)
  for index, data in shards:
    a = np.asarray(data)
    a = a.reshape(1) if a.ndim == 0 else a
    if check_finite and np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
      bad += np.uint64(1)
    starts = [(sl.start or 0) if isinstance(sl, slice) else 0 for sl in index] + [0] * (a.ndim - len(index))
    rows = a.view(f"u{a.dtype.itemsize}").sum(axis=-1, dtype=np.uint32).astype(np.uint64)  # a.shape[:-1]
    first = np.zeros(a.shape[:-1], np.uint64)  # flat index of each row's first element (in the global array)
    for d, n in enumerate(a.shape[:-1]):
      axis = (np.arange(n, dtype=np.uint64) + np.uint64(starts[d])) * np.uint64(strides[d])
      first = first + axis.reshape((-1,) + (1,) * (a.ndim - 2 - d))
    with np.errstate(over="ignore"):  # uint64 wraps modulo 2**64, a multiple of 2**32
      total = total + np.sum(rows, dtype=np.uint64)
      weighted = weighted + np.sum(rows * (2 * first + 1), dtype=np.uint64)
  with np.errstate(over="ignore"):
    return (np.array([total, weighted, bad], np.uint64) % np.uint64(2**32)).astype(np.uint32)


def digest(tree: Any, check_finite: bool = False) -> tuple[dict[str, str], bool]:
  """({'/'-joined leaf path: 16 hex digits}, all floating leaves finite (True unless ``check_finite``)) of a
  pytree of (sharded) arrays. Every process must call it (several processes combine their sums by allgather)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # NumPy's reductions release the GIL
    sums = [*pool.map(lambda item: _leaf_sums(item[1], check_finite), flat)]
  sums = np.stack(sums) if sums else np.zeros((0, 3), np.uint32)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    sums = np.asarray(multihost_utils.process_allgather(sums)).astype(np.uint64).sum(axis=0) % 2**32
  names = ["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in p) for p, _ in flat]
  return {n: f"{int(row[0]):08x}{int(row[1]):08x}" for n, row in zip(names, sums)}, not sums[:, 2].any()


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
    digests, finite = {}, True
    for name, tree in self._arrays(state).items():
      digests[name], ok = digest(tree, check_finite=name != OPT)  # the parameters (and EMA) decide
      finite &= ok
    if not finite:
      good = [s for s in self.steps() if s < step]
      raise NonFiniteError(
        f"the parameters after step {step} are not finite: no checkpoint written "
        f"(the last good one is {f'step {good[-1]}' if good else 'none'} in {self.directory})"
      )
    items = {
      PARAMS: ocp.args.StandardSave(state.params),
      OPT: ocp.args.StandardSave({"tx": state.opt_state, "step": state.step, "skipped": state.skipped}),
      DATA: loader.save_args(),
      CONFIG: ocp.args.JsonSave(dict(model_config)),
      RUN_CONFIG: ocp.args.JsonSave(dict(run_config)),
    }
    if state.ema is not None:
      items[EMA] = ocp.args.StandardSave(state.ema)
    items[DIGEST] = ocp.args.JsonSave({"format": DIGEST_FORMAT, "items": digests})
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  @staticmethod
  def _arrays(state: TrainState) -> dict[str, Any]:
    """The digested items: what ``save`` writes with StandardSave."""
    arrays = {PARAMS: state.params, OPT: {"tx": state.opt_state, "step": state.step, "skipped": state.skipped}}
    if state.ema is not None:
      arrays[EMA] = state.ema
    return arrays

  def restore(self, step: int, trainer: Trainer, loader) -> TrainState:
    """Restores and verifies ``step`` onto the trainer's mesh and shardings; rewinds ``loader`` to the saved
    position. CheckpointError when the arrays differ from the recorded digest or the parameters are not finite."""
    target = trainer.abstract
    items = {
      PARAMS: ocp.args.StandardRestore(target.params),
      OPT: ocp.args.StandardRestore({"tx": target.opt_state, "step": target.step, "skipped": target.skipped}),
      DATA: loader.restore_args(),
    }
    if target.ema is not None:
      items[EMA] = ocp.args.StandardRestore(target.ema)
    recorded = (epath.Path(self.directory) / str(step) / DIGEST).exists()
    if recorded:
      items[DIGEST] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    opt = restored[OPT]
    if int(opt["step"]) != step:
      raise CheckpointError(f"checkpoint {step} in {self.directory} holds the state of step {int(opt['step'])}")
    state = TrainState(
      opt["step"], restored[PARAMS], opt["tx"], opt["skipped"], restored[EMA] if target.ema is not None else None
    )
    if not recorded:
      warnings.warn(
        f"checkpoint {step} in {self.directory} has no digest (written by an older version): unverified", stacklevel=2
      )
    self._verify(step, state, restored[DIGEST]["items"] if recorded else None)
    return state

  def _verify(self, step: int, state: TrainState, recorded: Mapping[str, Mapping[str, str]] | None) -> None:
    """The recorded digests first (the precise reason), then finite parameters (also for unrecorded steps)."""
    finite = True
    for name, tree in self._arrays(state).items():
      got, ok = digest(tree, check_finite=name == PARAMS)
      finite &= ok
      expected = got if recorded is None else recorded.get(name, {})
      bad = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
      if bad:
        raise CheckpointError(f"{name}/{bad[0]} differs from its recorded digest ({len(bad)} array(s) differ)")
    if not finite:
      raise CheckpointError(f"non-finite parameters in checkpoint {step}")

  def restore_latest(self, trainer: Trainer, loader) -> TrainState | None:
    """The newest checkpoint that restores and verifies (None in a fresh workdir). Each newer one that fails is
    moved to WORKDIR/damaged/<step> with a warning; CheckpointError (one line) when none is left."""
    failures = []
    for step in reversed(self.steps()):
      try:
        return self.restore(step, trainer, loader)
      except Exception as e:  # noqa: BLE001 - any unreadable or unverified checkpoint falls back to the previous one
        reason = f"{type(e).__name__}: {_first_line(e)}"
        moved = self.set_aside(step)
        failures.append(f"step {step} ({reason})")
        warnings.warn(
          f"checkpoint {step} in {self.directory} is damaged ({reason}); moved to {moved}; "
          f"falling back to the previous checkpoint",
          RuntimeWarning,
          stacklevel=2,
        )
    damaged = self.damaged_steps()
    if failures or damaged:
      what = "; ".join(failures) if failures else f"steps {damaged} were set aside earlier"
      raise CheckpointError(
        f"no good checkpoint in {self.directory}: {what}; the damaged steps are in {self.damaged_dir} "
        f"(nothing deleted): start a new --workdir, or move a step back once repaired"
      )
    return None

  @property
  def damaged_dir(self) -> str:
    return os.path.join(self.directory, DAMAGED)

  def damaged_steps(self) -> list[str]:
    path = epath.Path(self.damaged_dir)
    return sorted((p.name for p in path.iterdir()), key=lambda n: (len(n), n)) if path.exists() else []

  def set_aside(self, step: int) -> str:
    """Moves step ``step`` to WORKDIR/damaged/<step> (<step>.1, ... if taken); returns the new path."""
    self.manager.wait_until_finished()
    root = epath.Path(self.damaged_dir)
    target = root / str(step)
    if jax.process_index() == 0:
      root.mkdir(parents=True, exist_ok=True)
      n = 0
      while target.exists():
        n += 1
        target = root / f"{step}.{n}"
      (epath.Path(self.directory) / str(step)).rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"randar_jax_set_aside_{step}")
    self.manager.reload()
    return os.fspath(target)

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
