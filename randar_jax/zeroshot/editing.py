"""Image-level zero-shot editing: inpainting, outpainting, class-conditional editing, canvas extension.

Images go through a tokenizer (any :class:`randar_jax.tokenizers.Tokenizer`); the masked token cells are
regenerated around the known ones (:mod:`randar_jax.zeroshot.known`); the result is decoded and, by default,
pasted back only inside the mask so unmasked pixels stay exactly as they were.

Masks: boolean or 0/255 arrays, True/non-zero = *regenerate*. At pixel resolution (H, W) a token cell is
regenerated if any of its pixels is masked; at token resolution (H / f, W / f) they select cells directly.
A single mask (H, W) applies to every image.

    result = inpaint(model, tokenizer, images, mask, labels, key, num_steps=32, guidance=Guidance.linear(1, 4))
    result = edit(model, tokenizer, images, mask, new_labels, key)          # inpainting with another class
    result = outpaint(model, tokenizer, images, keep, labels, key)          # regenerate everything but `keep`
    result = extend(model, tokenizer, images, labels, key, right=16)        # 256x256 -> 256x512 (16 tokens more)
    result.images                                                           # uint8 (B, H', W', C)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.models import rope
from randar_jax.zeroshot.known import generate_with_known, token_mask_from_pixels


@dataclasses.dataclass(frozen=True)
class EditResult:
  images: np.ndarray  # uint8 (B, H, W, C) results
  generated: np.ndarray  # uint8 (B, H, W, C) the decoded tokens before pasting
  tokens: np.ndarray  # (B, h, w) result codes
  token_mask: np.ndarray  # (B, h, w) bool, the regenerated cells
  pixel_mask: np.ndarray  # (B, H, W) bool, the pixels taken from ``generated``


def _images(images, tokenizer, grid: tuple[int, int] | None) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != tokenizer.channels:
    raise ValueError(f"images must be (B, H, W, {tokenizer.channels}) uint8, got shape {images.shape}")
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
  f = tokenizer.downsample
  if grid is not None and images.shape[1:3] != (grid[0] * f, grid[1] * f):
    raise ValueError(
      f"images must be {grid[0] * f}x{grid[1] * f} pixels for this model "
      f"({grid[0]}x{grid[1]} tokens of {f} px), got {images.shape[1]}x{images.shape[2]}"
    )
  return images


def _token_mask(mask, batch: int, pixels: tuple[int, int], downsample: int) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.ndim == 2:
    mask = np.broadcast_to(mask, (batch,) + mask.shape)
  cells = (pixels[0] // downsample, pixels[1] // downsample)
  if mask.ndim != 3 or mask.shape[0] != batch or mask.shape[1:] not in (pixels, cells):
    raise ValueError(f"the mask must be ({batch},) {pixels} pixels or {cells} tokens, got shape {mask.shape}")
  return token_mask_from_pixels(mask, downsample) if mask.shape[1:] == pixels else mask != 0


def _finish(
  tokenizer, tokens: np.ndarray, token_mask: np.ndarray, originals: np.ndarray | None, paste: bool
) -> EditResult:
  generated = np.asarray(tokenizer.decode(jnp.asarray(tokens)))
  f = tokenizer.downsample
  pixel_mask = token_mask.repeat(f, axis=1).repeat(f, axis=2)
  images = generated
  if paste and originals is not None:
    images = np.where(pixel_mask[..., None], generated, originals)
  return EditResult(images, generated, tokens, token_mask, pixel_mask)


def inpaint(
  model, tokenizer, images, mask, labels, key: jax.Array, *, num_steps: int = 32, paste: bool = True, **kwargs
) -> EditResult:
  """Regenerates the masked cells of ``images`` for class ``labels`` (B,). ``kwargs`` go to the decoder
  (guidance, sampling, ...). Unmasked pixels are kept exactly when ``paste``."""
  cfg = model.config
  images = _images(images, tokenizer, (cfg.grid_size, cfg.grid_size))
  token_mask = _token_mask(mask, len(images), images.shape[1:3], tokenizer.downsample)
  if not token_mask.any(axis=(1, 2)).all():
    raise ValueError("the mask selects nothing to regenerate in at least one image")
  tokens = np.asarray(tokenizer.encode(jnp.asarray(images)))
  out = generate_with_known(
    model,
    tokens.reshape(len(images), -1),
    token_mask.reshape(len(images), -1),
    labels,
    key,
    num_steps=num_steps,
    **kwargs,
  )
  return _finish(tokenizer, np.asarray(out.tokens).reshape(tokens.shape), token_mask, images, paste)


def edit(model, tokenizer, images, mask, new_labels, key: jax.Array, **kwargs) -> EditResult:
  """Class-conditional editing: the masked region is redrawn as class ``new_labels``."""
  return inpaint(model, tokenizer, images, mask, new_labels, key, **kwargs)


def outpaint(model, tokenizer, images, keep, labels, key: jax.Array, **kwargs) -> EditResult:
  """Keeps the region ``keep`` (True/non-zero = keep) and regenerates everything else."""
  keep = np.asarray(keep)
  if not keep.any():
    raise ValueError("outpainting needs a region to keep; the keep mask is empty (that is plain sampling)")
  if keep.all():
    raise ValueError("the keep mask covers the whole image: there is nothing to outpaint")
  return inpaint(model, tokenizer, images, keep == 0, labels, key, **kwargs)


def extend(
  model,
  tokenizer,
  images,
  labels,
  key: jax.Array,
  *,
  left: int = 0,
  right: int = 0,
  top: int = 0,
  bottom: int = 0,
  num_steps: int = 32,
  ntk_boundary: int = 2,
  **kwargs,
) -> EditResult:
  """Grows the canvas by whole tokens on each side and fills the new cells around the original image.

  Canvas cells beyond the trained grid get NTK-mixed RoPE positions (the resolution-extrapolation rule), so
  e.g. a 16x16-token model extends 256x256 to 256x512 with ``right=16``.
  """
  cfg = model.config
  images = _images(images, tokenizer, (cfg.grid_size, cfg.grid_size))
  if min(left, right, top, bottom) < 0 or left + right + top + bottom == 0:
    raise ValueError("extend by a non-negative number of tokens on at least one side")
  batch, g = len(images), cfg.grid_size
  rows, cols = g + top + bottom, g + left + right
  tokens = np.zeros((batch, rows, cols), np.int64)
  tokens[:, top : top + g, left : left + g] = np.asarray(tokenizer.encode(jnp.asarray(images)))
  token_mask = np.ones((batch, rows, cols), bool)
  token_mask[:, top : top + g, left : left + g] = False
  table = rope.canvas_rope_table(rows, cols, cfg.head_dim, float(cfg.rope_base), g, ntk_boundary)
  out = generate_with_known(
    model,
    tokens.reshape(batch, -1),
    token_mask.reshape(batch, -1),
    labels,
    key,
    num_steps=num_steps,
    table=table,
    **kwargs,
  )
  f = tokenizer.downsample
  canvas = np.zeros((batch, rows * f, cols * f, images.shape[-1]), np.uint8)
  canvas[:, top * f : (top + g) * f, left * f : (left + g) * f] = images
  return _finish(tokenizer, np.asarray(out.tokens).reshape(batch, rows, cols), token_mask, canvas, True)
