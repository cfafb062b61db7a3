"""Bidirectional feature encoding with a causal RandAR (``docs/randar.md`` section 11).

Feed an image's (instruction, token) pairs, then the same pairs again: in the second copy every token attends
to the whole first copy, so its hidden state has seen the full image. Features are read at the second copy's
image-token slots, at any layer, and returned as a (H, W, D) map per image.

    feats = bidirectional_features(model, tokens, layers=12)          # (B, h, w, D) at block 12's output
    feats = bidirectional_features(model, tokens, layers=(6, 12, 18)) # (3, B, h, w, D)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.partial(jax.jit, static_argnames=("graphdef", "layers", "first_pass"))
def _features(graphdef, state, tokens, labels, order, layers: tuple[int, ...], first_pass: bool):
  model = nnx.merge(graphdef, state)
  x, cells = model.training_sequence(tokens, labels, order, include_last=True)  # [cls, (P, x) * N]
  n = order.shape[1]
  x = jnp.concatenate([x, x[:, 1:]], axis=1)  # ... then (P, x) * N again
  cells = jnp.concatenate([cells, cells[:, 1:]], axis=1)
  _, _, hidden = model.run_layers(x, cells, return_hidden=True)  # (L, B, 1 + 4N, D)
  first = 1 + 1 + 2 * jnp.arange(n)  # x_j of the first copy
  slots = first if first_pass else first + 2 * n
  picked = hidden[jnp.asarray(layers)][:, :, slots]  # (len(layers), B, N, D)
  raster = jnp.take_along_axis(picked, jnp.argsort(order, axis=1)[None, :, :, None], axis=2)
  return raster


def bidirectional_features(
  model, tokens, labels=None, *, layers: int | Sequence[int] | None = None, order=None, first_pass: bool = False
) -> jax.Array:
  """Per-token features of images given as raster codes ``tokens`` (B, N).

  labels: class ids (default: the null class, i.e. unconditional features).
  layers: block index(es) whose output is read (default: the middle block); an int gives (B, h, w, D),
    a sequence (len, B, h, w, D). Indices count from 0; negative ones from the end.
  order: (B, N) feeding order (default raster; the second copy sees all tokens whatever the order).
  first_pass: read the first copy instead (causal features: a token sees only those before it).
  """
  cfg = model.config
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[1] != cfg.num_tokens:
    raise ValueError(f"tokens must have shape (batch, {cfg.num_tokens}), got {tokens.shape}")
  if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
    raise ValueError(f"tokens must be codes in [0, {cfg.vocab_size})")
  single = layers is None or isinstance(layers, int)
  wanted = (cfg.n_layer // 2,) if layers is None else ((layers,) if single else tuple(layers))
  if any(not -cfg.n_layer <= i < cfg.n_layer for i in wanted):
    raise ValueError(f"layers must be in [-{cfg.n_layer}, {cfg.n_layer}), got {wanted}")
  wanted = tuple(i % cfg.n_layer for i in wanted)
  batch = len(tokens)
  labels = np.full(batch, cfg.null_class) if labels is None else np.asarray(labels)
  order = np.tile(np.arange(cfg.num_tokens), (batch, 1)) if order is None else np.asarray(order)
  graphdef, state = nnx.split(model)
  feats = _features(
    graphdef,
    state,
    jnp.asarray(tokens, jnp.int32),
    jnp.asarray(labels, jnp.int32),
    jnp.asarray(order, jnp.int32),
    wanted,
    first_pass,
  )
  feats = feats.reshape(feats.shape[:2] + (cfg.grid_size, cfg.grid_size, feats.shape[-1]))
  return feats[0] if single else feats


def pca_rgb(features) -> np.ndarray:
  """Feature maps (B, h, w, D) -> uint8 (B, h, w, 3): the first three principal components over all tokens of
  the batch, each scaled to 0..255 (similar features get similar colours across images)."""
  feats = np.asarray(features, np.float64)
  flat = feats.reshape(-1, feats.shape[-1])
  flat = flat - flat.mean(axis=0)
  _, _, components = np.linalg.svd(flat, full_matrices=False)
  projected = flat @ components[:3].T
  low, high = projected.min(axis=0), projected.max(axis=0)
  scaled = (projected - low) / np.maximum(high - low, 1e-12) * 255
  return scaled.reshape(feats.shape[:-1] + (3,)).astype(np.uint8)
