"""Sample grids during training: images with a tokenizer, false-colour token maps without one.

    path = sample_grid(trainer, state.params, step, workdir, num_images=16, seed=0, tokenizer=None)

Every process must call it (multi-process runs gather the parameters, a collective); process 0 then samples on
its local devices and writes ``WORKDIR/samples/step_<step>.png``; the others return None. The sampler is the model
family's ``generate`` with its default settings (:mod:`randar_jax.families`), overridden by ``kwargs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from randar_jax import sharding
from randar_jax.decode import batched
from randar_jax.utils import images


def _sampling_model(trainer, params: Mapping):
  """The model to sample from on this process (None on processes other than 0)."""
  if jax.process_count() == 1:
    return trainer.model(params)
  host = multihost_utils.process_allgather(params, tiled=True)  # collective: all processes take part
  if jax.process_index() != 0:
    return None
  local = NamedSharding(sharding.build_mesh(devices=jax.local_devices()), PartitionSpec())
  return trainer.model(jax.device_put(host, local))


def sample_grid(
  trainer,
  params: Mapping,
  step: int,
  workdir: str,
  *,
  num_images: int = 16,
  seed: int = 0,
  tokenizer: Any = None,
  **kwargs,
) -> str | None:
  """Samples ``num_images`` class-conditional grids (classes spread over the label range) and saves a PNG."""
  cfg = trainer.model_config
  model = _sampling_model(trainer, params)
  if model is None:
    return None
  labels = np.linspace(0, cfg.num_classes - 1, num_images).astype(np.int32)
  tokens, _ = batched.sample_labels(model, labels, batch_size=num_images, seed=seed + step, progress=False, **kwargs)
  pictures = (
    np.asarray(tokenizer.decode(tokens))
    if tokenizer is not None
    else images.token_map(tokens, cfg.vocab_size, cell=max(1, 64 // cfg.grid_size))
  )
  path = os.path.join(workdir, "samples", f"step_{step:08d}.png")
  images.save_grid(pictures, path, scale=max(1, 64 // pictures.shape[1]))  # tiny images (pixel tokenizer) upscaled
  return path
