"""What the VQ tokenizers share: config (de)serialisation, input checks and the jitted encode / decode.

    tok = VQLlamaGen(LlamaGenVQConfig.released(), rngs=nnx.Rngs(0))     # or checkpoint.load_model(dir)
    codes = tok.encode(images)          # uint8 (B, H, W, 3) in [0, 255], or float in [0, 1] -> int32 (B, H/16, W/16)
    images = tok.decode(codes)          # int codes (B, h, w) or raster (B, h * w), square -> uint8 (B, 16h, 16w, 3)

A subclass supplies its value range (``normalize``, ``to_uint8``) and the two halves of the network
(``latents``: model-range images -> pre-quantisation latents; ``decode_latents``: code vectors -> model-range
images). Checks run on the host before the jitted computation, so bad input fails with a message, not a trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from randar_jax import sharding
from randar_jax.config_io import FamilyConfig
from randar_jax.tokenizers.layers import Codebook


class TokenizerConfig(FamilyConfig):
  """Mixin for the frozen config dataclasses (whose defaults are the released model): ``released()``,
  ``to_dict`` / strict ``from_dict`` (FamilyConfig), and ``from_torch_args`` for the original
  constructor's keyword arguments (``TORCH_NAMES`` renames them, ``TORCH_UNUSED`` only matter for training)."""

  TORCH_NAMES: ClassVar[Mapping[str, str]] = {}
  TORCH_UNUSED: ClassVar[frozenset[str]] = frozenset()

  @classmethod
  def released(cls):
    return cls()

  @classmethod
  def from_torch_args(cls, args: Mapping[str, Any], **extra: Any):
    """From the original model's constructor arguments (a fixture's or manifest's ``constructor_args``);
    absent arguments take the original's defaults, which are ours; an unknown argument is an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {
      cls.TORCH_NAMES.get(k, k): tuple(v) if isinstance(v, list) else v
      for k, v in args.items()
      if k not in cls.TORCH_UNUSED
    }
    unknown = sorted(k for k in kwargs if k not in names)
    if unknown:
      raise ValueError(f"unsupported {cls.FAMILY} constructor arguments {unknown}")
    return cls(**{**kwargs, **extra})


class VQTokenizer(nnx.Module):
  """Base class of the VQ models; implements :class:`randar_jax.tokenizers.Tokenizer`."""

  config: Any
  quantize: Codebook

  @property
  def vocab_size(self) -> int:
    return self.quantize.embedding.shape[0]

  @property
  def downsample(self) -> int:
    return self.config.downsample

  @property
  def channels(self) -> int:
    return self.config.image_channels

  # ---- supplied by each model ----------------------------------------------------------------------------

  def normalize(self, x: jax.Array) -> jax.Array:
    """float images in [0, 1] -> the model's input range."""
    raise NotImplementedError

  def to_uint8(self, x: jax.Array) -> jax.Array:
    """Model-range float images -> uint8, exactly as the original (clamp, then truncate)."""
    raise NotImplementedError

  def latents(self, x: jax.Array) -> jax.Array:
    """Model-range images (B, H, W, C) -> pre-quantisation latents (B, H/f, W/f, D)."""
    raise NotImplementedError

  def decode_latents(self, z: jax.Array) -> jax.Array:
    """Code vectors (B, h, w, D) -> model-range images (B, f h, f w, C), unclamped."""
    raise NotImplementedError

  # ---- the public API ---------------------------------------------------------------------------------------

  def encode(self, images: jax.Array | np.ndarray) -> jax.Array:
    """uint8 (B, H, W, C) in [0, 255] or float in [0, 1] -> int32 codes (B, H / f, W / f), f = downsample."""
    return _encode(self, check_images(images, self.channels, self.downsample))

  def decode(self, codes: jax.Array | np.ndarray) -> jax.Array:
    """Integer codes (B, h, w), or (B, h * w) for a square raster grid -> uint8 images (B, f h, f w, C)."""
    return _decode(self, check_codes(codes, self.vocab_size))


@nnx.jit
def _encode(model: VQTokenizer, images: jax.Array) -> jax.Array:
  x = images.astype(jnp.float32)
  x = x / 255.0 if images.dtype == jnp.uint8 else x  # torchvision ToTensor: float(x) / 255
  x = sharding.constrain(x, ("batch", None, None, None))
  return model.quantize.nearest(model.latents(model.normalize(x)))


@nnx.jit
def _decode(model: VQTokenizer, codes: jax.Array) -> jax.Array:
  codes = sharding.constrain(codes.astype(jnp.int32), ("batch", None, None))
  return model.to_uint8(model.decode_latents(model.quantize.lookup(codes)))


def check_images(images: Any, channels: int, factor: int) -> jax.Array | np.ndarray:
  """Validates a batch of NHWC images (uint8 or float) on the host; returns it as an array."""
  images = images if isinstance(images, jax.Array) else np.asarray(images)
  if images.ndim != 4:
    raise ValueError(
      f"expected a batch of images (batch, height, width, {channels}), got shape "
      f"{tuple(images.shape)}" + ("; add a batch axis with images[None]" if images.ndim == 3 else "")
    )
  if images.shape[-1] != channels:
    raise ValueError(
      f"expected {channels}-channel images in NHWC layout, got shape {tuple(images.shape)} "
      f"({images.shape[-1]} channels); convert to RGB / transpose NCHW to NHWC first"
    )
  height, width = images.shape[1:3]
  if height % factor or width % factor:
    raise ValueError(
      f"image size {height}x{width} is not divisible by the tokenizer's downsampling factor "
      f"{factor}; resize or center-crop first (e.g. tokenizers.preprocess.center_crop_arr)"
    )
  if images.dtype != np.uint8 and not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"expected uint8 images in [0, 255] or float images in [0, 1], got dtype {images.dtype}")
  return images


def check_codes(codes: Any, vocab_size: int) -> jax.Array | np.ndarray:
  """Validates integer codes (B, h, w) or square raster (B, h * w); returns them as (B, h, w). The value range
  is checked on concrete arrays (traced codes inside a caller's jit are only shape-checked)."""
  codes = codes if isinstance(codes, jax.Array) else np.asarray(codes)
  if not jnp.issubdtype(codes.dtype, jnp.integer):
    raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
  if codes.ndim == 2:
    side = int(np.sqrt(codes.shape[1]))
    if side * side != codes.shape[1]:
      raise ValueError(f"raster codes (batch, {codes.shape[1]}) do not form a square grid; pass (batch, h, w)")
    codes = codes.reshape(codes.shape[0], side, side)
  if codes.ndim != 3 or codes.size == 0:
    raise ValueError(f"expected codes of shape (batch, h, w) or (batch, h * w), got {tuple(codes.shape)}")
  if isinstance(codes, jax.core.Tracer):
    return codes  # under an outer jit the values are unknown; the eager API checks them
  low, high = int(codes.min()), int(codes.max())
  if low < 0 or high >= vocab_size:
    raise ValueError(
      f"codes must lie in [0, {vocab_size}) for this tokenizer, found values in [{low}, {high}]; "
      f"were they made with another tokenizer (LlamaGen: 16384 codes, MaskGIT: 1024)?"
    )
  return codes
