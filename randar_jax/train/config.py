"""The training-config schema every generator family shares (randar_jax/configs/ build on it).

    config = recipe(RandARConfig.variant('L').to_dict(), seed=0, total_steps=360_000, batch_size=1024,
                    optim=dict(lr=4e-4, b2=0.95, ...), data='codes/...', order=dict(order='random'))
    if arg.runlocal:
      shrink_for_cpu(config, RandARConfig.variant('tiny', grid_size=8, num_classes=10).to_dict())

Fields: seed, model (the family's config dict, with 'family'), mesh (data, fsdp, tensor; -1 = the remaining
devices), total_steps (the schedule's horizon), batch_size (global), optim (train.optim.OptimConfig: the whole
optimizer / schedule / skip-rule recipe), data (source: a codes directory | tfds:NAME | 'synthetic'; order: an
OrderPolicy (RAR: anneal = (start, end)); reader threads; synthetic-source sizes), tokenizer (for image sample
grids), log_every, ckpt_every, keep_checkpoints, keep_every (milestones), sample, eval, peak_flops (per device,
for MFU). Any field can be overridden on the command line: ``--config.optim.lr=1e-4``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from randar_jax.train.optim import OptimConfig


def recipe(
  model: Mapping[str, Any],
  *,
  seed: int,
  total_steps: int,
  batch_size: int,
  optim: Mapping[str, Any],
  data: str,
  order: Mapping[str, Any],
  mesh: Mapping[str, int] | None = None,
  sample_kwargs: Mapping[str, Any] | None = None,
  ckpt_every: int = 5_000,
  keep_every: int | None = 50_000,
) -> ml_collections.ConfigDict:
  """A full training config; ``optim`` overrides OptimConfig's defaults (all fields are written out)."""
  config = ml_collections.ConfigDict()
  config.seed = seed
  config.model = dict(model)
  config.mesh = dict(data=-1, fsdp=1, tensor=1, **(mesh or {}))
  config.total_steps, config.batch_size = total_steps, batch_size
  config.optim = dataclasses.asdict(OptimConfig(**optim))
  config.data = dict(
    source=data,
    split="train",
    data_dir="",
    order=dict(dict(order="random", anneal=None, fallback="raster"), **order),
    num_threads=8,
    prefetch=4,
    workers=0,
    synthetic=dict(num_records=100_000, num_aug=2, noise=0.1, seed=0),
  )
  config.tokenizer = ""  # tokenizer (checkpoint dir or pixels:N) for image grids; "" = token maps
  config.log_every = 100
  config.ckpt_every = ckpt_every
  config.keep_checkpoints = 2
  config.keep_every = keep_every  # always kept (None: only the last keep_checkpoints)
  config.sample = dict(every=5_000, num_images=16, kwargs=dict(sample_kwargs or {}))
  config.eval = dict(every=0, batches=4, split="validation")
  config.peak_flops = None  # per device, for MFU; None: looked up from the device kind
  return config


def shrink_for_cpu(
  config: ml_collections.ConfigDict, model: Mapping[str, Any], sample_kwargs: Mapping[str, Any] | None = None
) -> None:
  """``runlocal``: a tiny model on synthetic codes, 300 steps of 32, logs / checkpoints / samples along the way."""
  config.model = dict(model)
  config.mesh = dict(data=-1, fsdp=1, tensor=1)
  config.total_steps, config.batch_size = 300, 32
  config.optim.update(lr=2e-3, warmup_steps=30, skip_after=30)
  config.data.update(source="synthetic", num_threads=2)
  config.data.synthetic.num_records = 4096
  config.log_every, config.ckpt_every, config.keep_every = 10, 100, None
  config.sample.update(every=150, kwargs=dict(sample_kwargs or {}))
  config.eval.update(every=100, batches=2)
