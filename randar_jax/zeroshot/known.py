"""Generation around known tokens: the mechanism behind inpainting, outpainting and editing.

Known cells go first in the generation order and are teacher-forced; the unknown cells follow in random order
and are decoded with the normal parallel schedule (``docs/randar.md`` section 11). Known sets may differ in size
per sample: the smallest set is prefilled in one forward for everyone, and each sample's extra known tokens
are *forced* (fed as if sampled) in the first decode steps, so one compiled program serves the whole batch.

    out = generate_with_known(model, tokens, generate_mask, labels, key, num_steps=32,
                              guidance=Guidance.linear(1.0, 4.0))
    out.tokens            # (B, N) raster; cells where generate_mask is False are exactly the input's
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.decode import engine
from randar_jax.decode import randar as randar_decode
from randar_jax.decode.engine import Forced


def priority_order(base_order: jax.Array, priority: jax.Array) -> jax.Array:
  """Reorders each row of ``base_order`` (B, N) so cells with lower ``priority`` (B, N) (indexed by cell) come
  first, keeping the base (random) order within each priority class."""
  cell_priority = jnp.take_along_axis(priority, base_order, axis=1)
  return jnp.take_along_axis(base_order, jnp.argsort(cell_priority, axis=1, stable=True), axis=1)


def token_mask_from_pixels(mask: np.ndarray, downsample: int) -> np.ndarray:
  """A pixel mask (..., H, W) -> token mask (..., H / f, W / f): a token is masked if *any* of its f x f pixels
  is (so generated cells cover every masked pixel). Non-zero pixels count as masked."""
  mask = np.asarray(mask) != 0
  h, w = mask.shape[-2:]
  if h % downsample or w % downsample:
    raise ValueError(f"mask of {h}x{w} pixels is not a multiple of the tokenizer's {downsample}-pixel cells")
  blocks = mask.reshape(mask.shape[:-2] + (h // downsample, downsample, w // downsample, downsample))
  return blocks.any(axis=(-3, -1))


def generate_with_known(
  model,
  tokens,
  generate_mask,
  labels,
  key: jax.Array,
  *,
  num_steps: int = 32,
  table: np.ndarray | None = None,
  order=None,
  **kwargs,
) -> randar_decode.DecodeOutput:
  """Generates the cells where ``generate_mask`` (B, N) is True; the others keep ``tokens`` (B, N) (raster).

  Rows with nothing to generate come back unchanged; a batch where nothing is known is plain sampling
  (same key, same order). ``num_steps`` forwards decode everything after the shared prefix (clipped to its
  length). Extra keyword arguments go to :func:`randar_jax.decode.randar.generate`.
  """
  tokens = np.asarray(tokens)
  generate_mask = np.asarray(generate_mask)
  n = model.config.num_tokens if table is None else int(np.shape(table)[0])
  if tokens.ndim != 2 or tokens.shape[1] != n:
    raise ValueError(f"tokens must have shape (batch, {n}), got {tokens.shape}")
  if generate_mask.shape != tokens.shape or generate_mask.dtype != bool:
    raise ValueError(
      f"the mask must be boolean with the tokens' shape {tokens.shape}, got {generate_mask.dtype} {generate_mask.shape}"
    )
  if tokens.min() < 0 or tokens.max() >= model.config.vocab_size:
    raise ValueError(f"tokens must be codes in [0, {model.config.vocab_size})")
  if not generate_mask.any():
    return randar_decode.DecodeOutput(
      jnp.asarray(tokens), jnp.tile(jnp.arange(n), (len(tokens), 1)), jnp.asarray(tokens)
    )
  known = (~generate_mask).sum(axis=1)
  lo, hi = int(known.min()), int(known.max())
  order_key, _ = jax.random.split(key)
  if order is None:  # the same base order plain sampling would draw from this key
    order = engine.random_orders(order_key, len(tokens), n)
  order = priority_order(jnp.asarray(order, jnp.int32), jnp.asarray(generate_mask, jnp.int32))
  in_order = jnp.take_along_axis(jnp.asarray(tokens, jnp.int32), order, axis=1)
  steps = num_steps if num_steps == -1 else min(num_steps, n - lo)
  forced = None
  if hi > lo:  # ragged known sets: force each row's extra known tokens during the first decode steps
    mask = jnp.arange(n)[None, :] < jnp.asarray(known)[:, None]
    forced = Forced(in_order, mask)
  return randar_decode.generate(
    model,
    labels,
    key,
    num_steps=steps,
    order=order,
    table=table,
    prefix=in_order[:, :lo] if lo else None,
    forced=forced,
    **kwargs,
  )
