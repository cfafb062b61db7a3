"""A tokenizer without a network: each pixel's grey level is a token (the digits demo's 17 levels on 8x8).

    tok = PixelTokenizer(levels=17)          # uint8 (B, 8, 8, 1) <-> codes (B, 8, 8) in [0, 17)
    codes = tok.encode(images)               # round(x * (levels - 1) / 255)
    images = tok.decode(codes)               # round(code * 255 / (levels - 1)); encode(decode(c)) == c

It implements :class:`randar_jax.tokenizers.Tokenizer` with ``downsample = 1``, so every sampler, editor and
pipeline treats it exactly like a VQ model. ``tokenizers.load('pixels:17')`` returns one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.tokenizers.base import check_codes, check_images


@dataclasses.dataclass(frozen=True)
class PixelTokenizer:
  levels: int = 17
  channels: int = 1
  downsample: int = 1

  def __post_init__(self):
    if not 2 <= self.levels <= 256:
      raise ValueError(f"levels must be in [2, 256], got {self.levels}")

  @property
  def vocab_size(self) -> int:
    return self.levels

  def encode(self, images) -> jax.Array:
    """uint8 (B, H, W, C) (or float in [0, 1]) -> int32 (B, H, W) grey levels (channels averaged)."""
    images = check_images(images, self.channels, 1)
    x = jnp.asarray(images, jnp.float32)
    x = x / 255.0 if np.dtype(images.dtype) == np.uint8 else x
    return jnp.round(x.mean(axis=-1) * (self.levels - 1)).astype(jnp.int32)

  def decode(self, codes) -> jax.Array:
    """Codes (B, h, w) or square raster (B, h * w) -> uint8 (B, h, w, C)."""
    codes = jnp.asarray(check_codes(codes, self.levels))
    grey = jnp.round(codes.astype(jnp.float32) * 255.0 / (self.levels - 1)).astype(jnp.uint8)
    return jnp.repeat(grey[..., None], self.channels, axis=-1)
