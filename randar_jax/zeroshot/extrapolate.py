"""Zero-shot resolution extrapolation (RandAR section 10): a 16x16-token model draws 32x32 tokens (512 px).

Two stages. (1) The anchor cells (row and column multiples of the factor) come first in a hierarchical order;
mapped onto the trained grid they are an ordinary low-resolution image, sampled with the base RoPE. (2) With
an NTK-mixed RoPE table for the large grid, the anchors are teacher-forced in one prefill and every other cell
is decoded after them. Optional spatial guidance adds a third branch that sees only part of the anchors.

    out = extrapolate(model, labels, key, factor=2, guidance=Guidance.constant(3.0),
                      spatial=(2.5, 2.5))
    out.tokens        # (B, 1024) raster codes of the 32x32 grid; out.low_res: the stage-1 DecodeOutput

Unlike the original, every high-resolution token is sampled (its loop stops one chunk early and leaves the
last tokens at code 0), random orders work, and spatial guidance without class guidance is an error instead
of being silently ignored.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.decode import engine
from randar_jax.decode import randar as randar_decode
from randar_jax.decode.sampling import Guidance, Sampling, SpatialGuidance
from randar_jax.models import rope
from randar_jax.zeroshot.known import priority_order


@dataclasses.dataclass(frozen=True)
class ExtrapolationOutput:
  tokens: jax.Array  # (B, (G*f)**2) raster codes of the large grid
  order: jax.Array  # (B, (G*f)**2) the hierarchical generation order used
  low_res: randar_decode.DecodeOutput  # stage 1 on the trained grid
  high_res: randar_decode.DecodeOutput  # stage 2 (its trace covers the non-anchor tokens)


def anchor_cells(grid: int, factor: int) -> np.ndarray:
  """(grid * grid,) bool: True at cells whose row and column are multiples of ``factor``."""
  rows, cols = np.divmod(np.arange(grid * grid), grid)
  return (rows % factor == 0) & (cols % factor == 0)


def extrapolate(
  model,
  labels,
  key: jax.Array,
  *,
  factor: int = 2,
  num_steps: int | None = None,
  guidance: Guidance | None = None,
  spatial: tuple[float, float] | None = None,
  masking_ratio: float = 0.5,
  ntk_boundary: int = 2,
  sampling: Sampling | None = None,
  order=None,
  lagging: bool = True,
  trace: bool = False,
) -> ExtrapolationOutput:
  """Samples (B, (G*factor)**2) tokens for class ``labels`` from a model trained on a G x G grid.

  num_steps: forwards of each stage (the original uses the same count for both; default RandAR's default).
  guidance: class guidance for both stages (linear in the decoded fraction, as the original).
  spatial: (start, end) spatial-guidance scales for stage 2 (needs ``guidance``); ``masking_ratio`` of the
    anchor embeddings are zeroed in its third branch, a fixed random subset per sample.
  order: (B, N) an anchor-first order (default: hierarchical, random within anchors and within the rest).
  lagging: stage 2 follows the original's schedule over all N tokens with the anchors counted as decoded;
    False runs the cosine schedule over the non-anchor tokens only.
  """
  cfg = model.config
  sampling = Sampling() if sampling is None else sampling
  num_steps = randar_decode.DEFAULT_STEPS if num_steps is None else num_steps
  if not isinstance(factor, int) or factor < 2:
    raise ValueError(f"the extrapolation factor must be an integer >= 2, got {factor!r}")
  if spatial is not None and guidance is None:
    raise ValueError("spatial guidance needs class guidance too (the original silently ignored it)")
  if not 0.0 <= masking_ratio <= 1.0:
    raise ValueError(f"masking_ratio must be in [0, 1], got {masking_ratio}")
  grid, n_low = cfg.grid_size * factor, cfg.num_tokens
  n = grid * grid
  anchors = anchor_cells(grid, factor)
  labels = np.asarray(labels)
  order_key, low_key, high_key, mask_key = jax.random.split(key, 4)
  if order is None:
    base = engine.random_orders(order_key, len(labels), n)
    order = priority_order(base, jnp.asarray(np.tile(~anchors, (len(labels), 1)), jnp.int32))
  order = jnp.asarray(order, jnp.int32)
  if order.shape != (len(labels), n) or not anchors[np.asarray(order)[:, :n_low]].all():
    raise ValueError(f"order must have shape {(len(labels), n)} and list the {n_low} anchor cells first")

  # Stage 1: the anchors as an ordinary image on the trained grid.
  rows, cols = np.divmod(np.asarray(order)[:, :n_low], grid)
  low_order = (rows // factor) * cfg.grid_size + cols // factor
  low = randar_decode.generate(
    model,
    labels,
    low_key,
    num_steps=min(num_steps, n_low),
    order=low_order,
    sampling=sampling,
    guidance=guidance,
    trace=trace,
  )

  # Stage 2: the anchors teacher-forced with the NTK-mixed table, then everything else.
  table = rope.extrapolated_rope_table(grid, cfg.head_dim, float(cfg.rope_base), factor, ntk_boundary)
  token_scale, stage2 = None, guidance
  if spatial is not None:
    stage2 = SpatialGuidance(guidance.start, guidance.end, float(spatial[0]), float(spatial[1]))
    dropped = jax.random.bernoulli(mask_key, masking_ratio, (len(labels), n_low))
    scale = jnp.ones((len(labels), 3, n), jnp.float32)
    token_scale = scale.at[:, 2, :n_low].set(jnp.where(dropped, 0.0, 1.0))
  high = randar_decode.generate(
    model,
    labels,
    high_key,
    num_steps=num_steps,
    order=order,
    prefix=low.tokens_in_order,
    table=table,
    lagging=lagging,
    sampling=sampling,
    guidance=stage2,
    token_scale=token_scale,
    trace=trace,
  )
  return ExtrapolationOutput(high.tokens, order, low, high)
