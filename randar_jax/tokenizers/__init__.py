"""Image tokenizers behind one interface (VQ models, and the pixel tokenizer of the digits demo).

Image convention at this API: uint8 images (B, H, W, 3) in, integer codes (B, H / f, W / f) out, where f is
the tokenizer's downsampling factor; ``decode`` maps codes back to uint8 images. Value ranges internal to a
model ([-1, 1] for LlamaGen VQ, [0, 1] for MaskGIT VQGAN) never leak out of it.
"""

from __future__ import annotations

from typing import Protocol

import jax


class Tokenizer(Protocol):
  """What the data pipeline, the samplers and the CLI rely on."""
  vocab_size: int      # number of codes
  downsample: int      # pixels per token side (16 for the VQ models)
  channels: int        # image channels (3 for RGB)

  def encode(self, images: jax.Array) -> jax.Array:
    """uint8 (B, H, W, C) -> int32 codes (B, H // downsample, W // downsample)."""
    ...

  def decode(self, codes: jax.Array) -> jax.Array:
    """int32 codes (B, h, w) -> uint8 images (B, h * downsample, w * downsample, C)."""
    ...
