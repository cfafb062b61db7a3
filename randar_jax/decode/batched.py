"""Sampling many images with any generator: fixed-size batches (one compilation), a progress bar, host outputs.

    tokens, orders = sample_labels(model, labels, batch_size=32, seed=0)     # the family's default settings
    tokens, orders = sample_labels(randar, labels, batch_size=32, num_steps=32, guidance=Guidance.linear(1, 3))

The sampler is the model family's ``generate`` (:mod:`randar_jax.families`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from randar_jax import families


def parse_labels(
  classes: str | None, num_per_class: int | None, num_classes: int, count: int | None = None, seed: int = 0
) -> np.ndarray:
  """'1,2,3' (or '0-9') -> those ids (each ``num_per_class`` times); or ``count`` uniformly random ids."""
  for flag, value in (("--num-per-class", num_per_class), ("--num-samples", count)):
    if value is not None and value < 1:
      raise ValueError(f"{flag} must be a positive number of samples, got {value}")
  if classes is not None:
    ids = []
    for part in classes.split(","):
      lo, dash, hi = part.strip().partition("-")
      try:
        first, last = int(lo), int(hi) if dash else int(lo)
      except ValueError:
        raise ValueError(f"malformed --classes {classes!r} at {part!r}: use e.g. '1,5,9' or '0-9'") from None
      if last < first:
        raise ValueError(f"--classes range {part!r} is empty: write it low-high, e.g. '{last}-{first}'")
      if first < 0 or last >= num_classes:  # before a huge range is built
        raise ValueError(f"class ids must be in [0, {num_classes}) for this model (--classes), got {part!r}")
      ids += list(range(first, last + 1))
    labels = np.repeat(np.asarray(ids), num_per_class or 1)
  elif num_per_class:
    labels = np.repeat(np.arange(num_classes), num_per_class)
  elif count:
    labels = np.random.default_rng(seed).integers(0, num_classes, count)
  else:
    raise ValueError("give class ids (--classes), --num-per-class or a number of samples")
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise ValueError(
      f"class ids must be in [0, {num_classes}) for this model (--classes), got {sorted(set(bad.tolist()))[:5]}"
    )
  return labels.astype(np.int32)


def sample_labels(
  model,
  labels: np.ndarray,
  *,
  batch_size: int,
  seed: int = 0,
  generate: Callable | None = None,
  progress: bool = True,
  **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
  """Samples one image per label in batches of ``batch_size`` (the last batch is padded, so every batch has
  the same shape and reuses one compiled program; the cache buffer is donated from batch to batch).
  ``generate`` defaults to the model family's; ``kwargs`` go to it (num_steps, sampling, guidance, ...).

  Returns raster token grids (N, g, g) and generation orders (N, g*g) as NumPy.
  """
  generate = generate or families.of(model.config).generate
  grid = model.config.grid_size
  tokens, orders, cache = [], [], None
  starts = range(0, len(labels), batch_size)
  for i, start in enumerate(tqdm(starts, desc="sampling", unit="batch", disable=not progress)):
    batch = labels[start : start + batch_size]
    padded = np.concatenate([batch, np.full(batch_size - len(batch), batch[0], batch.dtype)])
    out = generate(model, padded, jax.random.fold_in(jax.random.key(seed), i), cache=cache, **kwargs)
    cache = out.cache
    tokens.append(np.asarray(out.tokens)[: len(batch)])
    orders.append(np.asarray(out.order)[: len(batch)])
  tokens = np.concatenate(tokens).reshape(-1, grid, grid)
  return tokens, np.concatenate(orders)
