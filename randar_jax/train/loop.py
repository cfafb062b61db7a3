"""The training loop: config + workdir -> a trained, checkpointed, logged model. A run pointed at a workdir
that holds checkpoints resumes from the newest readable one and continues exactly as if never stopped.

    config = config_io.load_config('randar:variant=L')
    train(config, 'runs/randar_l')          # or: randar-jax train --config randar --workdir ...

Each iteration dispatches one compiled step (parameters and optimizer state donated); metrics stay on the
device until a log step fetches the interval in one transfer, so the host never waits on a step in between.
Process 0 writes logs and sample grids; every process takes part in checkpoints (Orbax, collective).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from randar_jax import checkpoint, sharding
from randar_jax.data.orders import OrderPolicy
from randar_jax.data.pipeline import Loader, PipelineConfig, open_source
from randar_jax.data.synthetic import SyntheticCodes
from randar_jax.train import metrics as metrics_lib
from randar_jax.train import preflight
from randar_jax.train.checkpointing import CONFIG, RUN_CONFIG, Checkpointer, NonFiniteError
from randar_jax.train.optim import describe
from randar_jax.train.samples import sample_grid
from randar_jax.train.train import Trainer
from randar_jax.utils import profiling

# Run-config keys that must not change when a workdir resumes (they change the data stream or the math), and
# model-config keys that may (compute settings, not architecture).
FROZEN_KEYS = ("seed", "batch_size", "data.source", "data.seed", "data.order", "data.split")
COMPUTE_KEYS = ("dtype", "remat", "remat_policy", "scan_layers", "attention_impl")


def make_source(data: Mapping[str, Any], model_config, split: str | None = None):
  """The codes source a data config names: 'synthetic' (planted-structure codes sized to the model; every split
  reads the same i.i.d. stream), 'digits' (scikit-learn's digits, grey levels as tokens; splits 'train' and
  'test') or a path / 'tfds:NAME' (see data.pipeline.open_source). Checks the grid."""
  spec = data["source"]
  if spec == "digits":
    from randar_jax.data.digits import digits_source

    source = digits_source(split or data.get("split", "train"))
  elif spec == "synthetic":
    syn = data["synthetic"]
    return SyntheticCodes(
      grid=model_config.grid_size,
      vocab_size=model_config.vocab_size,
      num_classes=model_config.num_classes,
      **(syn.to_dict() if hasattr(syn, "to_dict") else syn),
    )
  else:
    source = open_source(
      spec,
      split=split or data.get("split", "train"),
      data_dir=data.get("data_dir") or None,
      vocab_size=model_config.vocab_size,
    )
  grid = (model_config.grid_size, model_config.grid_size)
  if tuple(source.grid) != grid:
    raise ValueError(f"{spec} holds {tuple(source.grid)} token grids but the model expects {grid}")
  return source


def pipeline_config(config: ml_collections.ConfigDict, shuffle: bool = True) -> PipelineConfig:
  data = config.data
  order = OrderPolicy(
    order=data.order.order, fallback=data.order.fallback, anneal=tuple(data.order.anneal) if data.order.anneal else None
  )
  return PipelineConfig(
    batch_size=config.batch_size,
    seed=data.get("seed", config.seed),
    order=order,
    shuffle=shuffle,
    num_threads=data.num_threads,
    prefetch=data.prefetch,
    workers=data.workers,
  )


def _flat(d: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def check_resumable(ckpt: Checkpointer, model_config: Mapping, run_config: Mapping) -> None:
  """A workdir resumes only a run of the same model and data stream; anything else is a clear error."""
  for step in reversed(ckpt.steps()):
    try:
      stored_model, stored_run = ckpt.read_json(step, CONFIG), _flat(ckpt.read_json(step, RUN_CONFIG))
      break
    except Exception:  # noqa: BLE001 - a damaged step: restore_latest reports it and falls back
      continue
  else:
    return
  current = _flat(run_config)
  diffs = [
    f"model.{k}: {stored_model.get(k)!r} -> {v!r}"
    for k, v in model_config.items()
    if k not in COMPUTE_KEYS and stored_model.get(k) != (list(v) if isinstance(v, tuple) else v)
  ]
  diffs += [
    f"{k}: {stored_run.get(k)!r} -> {current.get(k)!r}"
    for k in set(stored_run) | set(current)
    if k.startswith(FROZEN_KEYS) and stored_run.get(k) != current.get(k)
  ]
  if diffs:
    raise preflight.SetupError(
      f"{ckpt.directory} holds a run with a different setup ({'; '.join(sorted(diffs))}); "
      f"use a new --workdir, or the original config to resume"
    )


def setup(config: ml_collections.ConfigDict, workdir: str) -> tuple[Trainer, Loader, Checkpointer, Any, bool]:
  """(trainer, loader, checkpointer, state, resumed): the newest verified checkpoint of ``workdir`` or a fresh
  state, after the preflight checks (:mod:`randar_jax.train.preflight`: SetupError, nothing written) and checking
  that the workdir holds this run."""
  model_config, optim_config, mesh = preflight.check_config(config)
  trainer = Trainer.create(model_config, optim_config, config.total_steps, mesh, config.seed)
  source = _source(config.data, model_config)
  preflight.check_source(source, model_config, config.data.source)
  if config.eval.every:
    preflight.check_source(
      _source(config.data, model_config, config.eval.split), model_config, f"{config.data.source}:{config.eval.split}"
    )
  preflight.check_workdir(workdir, trainer.abstract)
  loader = Loader(source, pipeline_config(config), mesh)
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, keep_every=config.get("keep_every"))
  check_resumable(ckpt, model_config.to_dict(), config.to_dict())
  state = ckpt.restore_latest(trainer, loader)
  return trainer, loader, ckpt, (trainer.init() if state is None else state), state is not None


def _source(data, model_config, split: str | None = None):
  """make_source with its failures (missing, unreadable, wrong grid) as one-line SetupErrors."""
  try:
    return make_source(data, model_config, split)
  except (OSError, ValueError, KeyError) as e:
    raise preflight.SetupError(f"data source {data.source!r}: {preflight.one_line(e)}") from None


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  stop_at: int | None = None,
  preempt_at: int | None = None,
  preempt_mid_save: bool = False,
  progress: bool = True,
  profile_steps: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
  """Trains to ``config.total_steps`` in ``workdir`` (resuming if possible). Returns the rows logged this call.

  ``stop_at``: stop (with a checkpoint) after that step although the schedule spans total_steps; a later call
  continues (e.g. one cluster job per time slot). ``preempt_at``: after that step, once pending checkpoints are
  committed, the process SIGKILLs itself (a preemption drill for resume tests); with ``preempt_mid_save`` it does
  so right after that step's checkpoint starts writing, before it commits. ``profile_steps``: (first, last) steps
  traced into ``workdir/profile`` (utils/profiling.py). Raises preflight.SetupError (bad setup, before anything is
  written), CheckpointError (no good checkpoint) or NonFiniteError (optim.max_nonfinite consecutive non-finite steps).
  """
  workdir = os.path.abspath(workdir)
  trainer, loader, ckpt, state, resumed = setup(config, workdir)
  model_config, start, lead = trainer.model_config, int(state.step), jax.process_index() == 0
  params = checkpoint.param_count(state.params)
  flops_step = metrics_lib.train_flops_per_example(model_config, params)[0] * config.batch_size
  peak = config.get("peak_flops") or metrics_lib.peak_flops(jax.devices()[0].device_kind)
  if lead:
    print(
      f"{'resuming from step ' + str(start) if resumed else 'starting'} in {workdir}: {model_config} "
      f"({params:,} parameters) on mesh {dict(trainer.mesh.shape)}, {jax.process_count()} process(es); "
      f"{describe(trainer.optim, config.total_steps)}",
      flush=True,
    )
  writer = metrics_lib.MetricWriter(
    workdir,
    config.total_steps,
    start,
    enabled=lead,
    progress=progress,
    tokens_per_step=config.batch_size * model_config.num_tokens,
  )
  tokenizer = None
  if config.get("tokenizer"):  # on this process's devices: only process 0 decodes sample grids
    from randar_jax import tokenizers

    tokenizer = tokenizers.load(config.tokenizer, mesh=sharding.build_mesh(devices=jax.local_devices()))
  rows, pending, fetched, timer, timed, streak = [], [], [], None, 0, 0
  end = config.total_steps if stop_at is None else min(stop_at, config.total_steps)
  profiler = profiling.StepProfiler(profile_steps, os.path.join(workdir, "profile"))
  check_every = min(config.log_every, trainer.optim.max_nonfinite)  # the non-finite streak is seen in time
  try:
    for step in range(start, end):
      profiler(step, state)
      state, step_metrics = trainer.train_step(state, next(loader))
      pending.append(step_metrics)
      done = step + 1
      if timer is None:  # the first step of a (re)start compiles: time from its end
        jax.block_until_ready(step_metrics)
        timer, timed = time.perf_counter(), -1
      timed += 1
      log = done % config.log_every == 0 or done == end
      if log or len(pending) >= check_every:
        new = jax.device_get(pending)  # these steps' metrics in one transfer
        fetched, pending, streak = fetched + new, [], _nonfinite_streak(streak, new)
        if streak >= trainer.optim.max_nonfinite:
          writer.write(done, fetched)
          ckpt.wait()
          raise NonFiniteError(_nonfinite_message(done, streak, fetched[-1], ckpt))
      if log:
        seconds = (time.perf_counter() - timer) * len(fetched) / timed if timed > 0 else None
        rows.append(writer.write(done, fetched, seconds, flops_step, peak * jax.device_count() if peak else None))
        fetched, timer, timed = [], time.perf_counter(), 0
      if done % config.ckpt_every == 0 or done == end:
        ckpt.save(done, state, loader, model_config.to_dict(), config.to_dict())
      if config.eval.every and done % config.eval.every == 0:
        writer.write_scalars(done, "eval", evaluate(trainer, state, config))
      if config.sample.every and (done % config.sample.every == 0 or done == config.total_steps):
        _samples(trainer, state, done, workdir, config, tokenizer, writer)
      if preempt_at is not None and done == preempt_at:
        if not preempt_mid_save:
          ckpt.wait()
        os.kill(os.getpid(), signal.SIGKILL)
  finally:
    profiler.close(state)
    ckpt.close()
    writer.plot()
    writer.close()
    loader.close()
  return rows


def _nonfinite_streak(streak: int, records) -> int:
  """Consecutive non-finite steps at the end of ``records``, continuing a streak of ``streak``."""
  for r in records:
    streak = streak + 1 if bool(r["nonfinite"]) else 0
  return streak


def _nonfinite_message(step: int, streak: int, last: Mapping[str, Any], ckpt: Checkpointer) -> str:
  steps = [s for s in ckpt.steps() if s <= step]
  return (
    f"{streak} consecutive non-finite steps ({step - streak + 1} to {step}: loss {float(last['loss'])}, grad norm "
    f"{float(last['grad_norm'])}); updates were skipped, the last checkpoint is "
    f"{f'step {steps[-1]}' if steps else 'none'}. Likely causes: token ids outside the model's vocabulary or "
    f"damaged data, a learning rate too high (optim.lr, optim.warmup_steps), float16 overflow (model.dtype)"
  )


def _samples(trainer, state, step, workdir, config, tokenizer, writer) -> None:
  path = sample_grid(
    trainer,
    state.params,
    step,
    workdir,
    num_images=config.sample.num_images,
    seed=config.seed,
    tokenizer=tokenizer,
    **config.sample.kwargs,
  )
  if path:
    from PIL import Image

    writer.add_image("samples", np.asarray(Image.open(path).convert("RGB")), step)


def evaluate(trainer: Trainer, state, config) -> dict[str, float]:
  """Mean loss / accuracy (no dropout) over ``config.eval.batches`` held-out batches (the same each time)."""
  source = make_source(config.data, trainer.model_config, split=config.eval.split)
  loader = Loader(source, pipeline_config(config, shuffle=False), trainer.mesh)
  try:
    results = jax.device_get([trainer.eval_step(state, next(loader)) for _ in range(config.eval.batches)])
  finally:
    loader.close()
  return {k: float(np.mean([r[k] for r in results])) for k in results[0]}
