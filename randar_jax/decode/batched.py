"""Sampling many images with any generator: fixed-size batches (one compilation), a progress bar, host outputs.

    tokens, orders = sample_labels(model, labels, batch_size=32, seed=0)     # the family's default settings
    tokens, orders = sample_labels(randar, labels, batch_size=32, num_steps=32, guidance=Guidance.linear(1, 3))

The sampler is the model family's ``generate`` (:mod:`randar_jax.families`). Sample i is drawn with its own
key ``fold_in(key(seed), i)`` (order and tokens), so results do not depend on the batch size, on how samples are
spread over processes or on where a run resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
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
    labels = np.repeat(np.asarray(ids), num_per_class or 1)  # class-major, as the originals
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


def sample_keys(seed: int, indices) -> jax.Array:
  """The key of each sample index (n,) -> (n,): ``fold_in(key(seed), i)``. A sample's generation order and tokens
  depend on this key only, so any batch size, process count or resume point gives the same images."""
  return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed), jnp.asarray(indices, jnp.uint32))


class Batch(NamedTuple):
  """One decoded batch: host ``indices`` and ``labels`` (n,) of its real rows; device ``tokens`` (B, g, g) and
  ``orders`` (B, N) for all B >= n rows (the last batch is padded; trim with ``[:n]`` on the host)."""

  indices: np.ndarray
  labels: np.ndarray
  tokens: jax.Array
  orders: jax.Array


def decode_batches(
  model,
  labels: np.ndarray,
  *,
  batch_size: int,
  seed: int = 0,
  indices: np.ndarray | None = None,
  generate: Callable | None = None,
  **kwargs,
) -> Iterator[Batch]:
  """Decodes one sample per label, sample ``indices[j]`` (default: 0, 1, ...) keyed by :func:`sample_keys`, in
  batches of ``batch_size``. Every batch has the same shape (the last is padded), so one compiled program serves
  them all; the KV cache is donated from batch to batch. Batches are only dispatched: the arrays come back as
  device futures, so the caller's host work on batch i overlaps the device's work on batch i + 1.
  ``generate`` defaults to the model family's; ``kwargs`` go to it (num_steps, sampling, guidance, ...)."""
  if batch_size < 1:
    raise ValueError(f"batch size must be >= 1, got {batch_size}")
  generate = generate or families.of(model.config).generate
  indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
  grid, cache = model.config.grid_size, None
  for start in range(0, len(labels), batch_size):
    rows = slice(start, start + batch_size)
    batch, index = labels[rows], indices[rows]
    pad = batch_size - len(batch)
    padded, keys = np.pad(batch, (0, pad), mode="edge"), sample_keys(seed, np.pad(index, (0, pad), mode="edge"))
    out = generate(model, padded, keys, cache=cache, **kwargs)
    cache = out.cache
    yield Batch(index, batch, out.tokens.reshape(-1, grid, grid), out.order)


def sample_labels(
  model,
  labels: np.ndarray,
  *,
  batch_size: int,
  seed: int = 0,
  indices: np.ndarray | None = None,
  generate: Callable | None = None,
  progress: bool = True,
  **kwargs,
) -> tuple[np.ndarray, np.ndarray]:
  """Samples one image per label (see :func:`decode_batches`). Returns raster token grids (N, g, g) and
  generation orders (N, g*g) as NumPy."""
  tokens, orders = [], []
  batches = decode_batches(
    model, labels, batch_size=batch_size, seed=seed, indices=indices, generate=generate, **kwargs
  )
  for b in tqdm(batches, desc="sampling", unit="batch", total=-(-len(labels) // batch_size), disable=not progress):
    tokens.append(np.asarray(b.tokens)[: len(b.labels)])
    orders.append(np.asarray(b.orders)[: len(b.labels)])
  return np.concatenate(tokens), np.concatenate(orders)
