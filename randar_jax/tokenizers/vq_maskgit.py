"""The MaskGIT VQGAN image tokenizer (``RandAR/model/maskgit_tokenizer.py`` = ``1d-tokenizer:
modeling/modules/maskgit_vqgan.py``, a port of google-research/maskgit's Flax model; ``docs/randar.md`` 12.2):
1024 codes of dim 256, inputs in [0, 1], a 16x16 grid for 256x256 images. Used by RandAR's MaskGIT variants
and by RAR.

    tok = VQMaskGIT(MaskGITVQConfig.released(), rngs=nnx.Rngs(0))      # or checkpoint.load_model(dir)
    codes = tok.encode(images)          # uint8 (B, 256, 256, 3) -> int32 (B, 16, 16); index 16 * row + col
    images = tok.decode(codes)          # -> uint8 (B, 256, 256, 3) = uint8(clamp(x, 0, 1) * 255)

Module names equal the PyTorch ones (``encoder.down.{i}.block.{j}``, ``decoder.up.{i}.upsample_conv``).
Quirks kept: TF 'SAME' convolutions; residual-block convs and ``encoder.conv_in`` without bias; the 1x1
shortcut applied to the block's *output* (``h + nin(h)``); 2x2 average-pool downsampling; no attention and no
quant / post-quant convs; ``decoder.up`` stored highest resolution first and run in reverse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.tokenizers.base import TokenizerConfig, VQTokenizer
from randar_jax.tokenizers.layers import Codebook, Conv, GroupNorm, ResnetBlock, sequential, upsample_nearest


@dataclasses.dataclass(frozen=True)
class MaskGITVQConfig(TokenizerConfig):
  """Architecture of the MaskGIT VQGAN. Defaults: the released ``maskgit-vqgan-imagenet-f16-256.bin`` (54,515,587
  parameters; RandAR ``configs/tokenization/maskgit.yaml``)."""

  FAMILY: ClassVar[str] = "vq_maskgit"
  TORCH_NAMES: ClassVar[Mapping[str, str]] = {"num_channels": "image_channels"}
  TORCH_UNUSED: ClassVar[frozenset[str]] = frozenset(  # loss weight, dropout, decoder z_shape; levels = mult
    {"dropout", "commitment_cost", "resolution", "num_resolutions"}
  )
  hidden_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  z_channels: int = 256
  num_embeddings: int = 1024
  embedding_dim: int = 256
  image_channels: int = 3
  image_size: int = 256  # native (training) image side: `randar-jax tokenize` resizes to it by default

  def __post_init__(self):
    if self.z_channels != self.embedding_dim:
      raise ValueError(
        f"MaskGIT quantises the encoder output directly: z_channels ({self.z_channels}) must equal "
        f"embedding_dim ({self.embedding_dim})"
      )

  @property
  def vocab_size(self) -> int:
    return self.num_embeddings

  @property
  def downsample(self) -> int:
    return 2 ** (len(self.channel_mult) - 1)

  @classmethod
  def from_torch_args(cls, args: Mapping[str, Any]) -> MaskGITVQConfig:
    """From ``MaskGITTokenizer(**args)`` keyword arguments."""
    config = super().from_torch_args(args)
    if args.get("num_resolutions", len(config.channel_mult)) != len(config.channel_mult):
      raise ValueError(f"num_resolutions {args['num_resolutions']} != len(channel_mult) {len(config.channel_mult)}")
    return config


def _resnet(cin: int, cout: int, rngs: nnx.Rngs) -> ResnetBlock:
  return ResnetBlock(cin, cout, bias=False, shortcut_on_output=True, rngs=rngs)


def _blocks(cin: int, cout: int, n: int, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([_resnet(cin if j == 0 else cout, cout, rngs) for j in range(n)])


class DownLevel(nnx.Module):
  """``down.{i}``: residual ``block`` s, then a 2x2 average pool (all levels but the last)."""

  def __init__(self, cin: int, cout: int, n: int, pool: bool, *, rngs: nnx.Rngs):
    self.block = _blocks(cin, cout, n, rngs)
    self.pool = pool

  def __call__(self, x: jax.Array) -> jax.Array:
    x = sequential(self.block, x)
    if not self.pool:
      return x
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class UpLevel(nnx.Module):
  """``up.{i}``: residual ``block`` s, then nearest x2 and ``upsample_conv`` (all levels but level 0)."""

  def __init__(self, cin: int, cout: int, n: int, upsample: bool, *, rngs: nnx.Rngs):
    self.block = _blocks(cin, cout, n, rngs)
    self.upsample_conv = Conv(cout, cout, 3, rngs=rngs) if upsample else None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = sequential(self.block, x)
    return x if self.upsample_conv is None else self.upsample_conv(upsample_nearest(x))


class Encoder(nnx.Module):
  def __init__(self, cfg: MaskGITVQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.hidden_channels * m for m in cfg.channel_mult]
    n = len(widths)
    self.conv_in = Conv(cfg.image_channels, cfg.hidden_channels, 3, bias=False, rngs=rngs)
    self.down = nnx.List(
      [
        DownLevel(([cfg.hidden_channels] + widths)[i], widths[i], cfg.num_res_blocks, pool=i != n - 1, rngs=rngs)
        for i in range(n)
      ]
    )
    self.mid = _blocks(widths[-1], widths[-1], cfg.num_res_blocks, rngs)
    self.norm_out = GroupNorm(widths[-1], rngs=rngs)
    self.conv_out = Conv(widths[-1], cfg.z_channels, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) in [0, 1] -> (B, H / f, W / f, z_channels)."""
    h = sequential((*self.down, *self.mid), self.conv_in(x))
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


class Decoder(nnx.Module):
  def __init__(self, cfg: MaskGITVQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.hidden_channels * m for m in cfg.channel_mult]
    n = len(widths)
    self.conv_in = Conv(cfg.z_channels, widths[-1], 3, rngs=rngs)
    self.mid = _blocks(widths[-1], widths[-1], cfg.num_res_blocks, rngs)
    self.up = nnx.List(
      [UpLevel(widths[min(i + 1, n - 1)], widths[i], cfg.num_res_blocks, upsample=i != 0, rngs=rngs) for i in range(n)]
    )
    self.norm_out = GroupNorm(widths[0], rngs=rngs)
    self.conv_out = Conv(widths[0], cfg.image_channels, 3, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """(B, h, w, z_channels) -> (B, f h, f w, C), unclamped (the model clamps to [0, 1] afterwards)."""
    h = sequential((*self.mid, *reversed(self.up)), self.conv_in(z))
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


class VQMaskGIT(VQTokenizer):
  """encoder -> nearest code (Euclidean, no normalisation); code vectors -> decoder."""

  def __init__(self, cfg: MaskGITVQConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.quantize = Codebook(cfg.num_embeddings, cfg.embedding_dim, l2_norm=False, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def normalize(self, x: jax.Array) -> jax.Array:
    return x  # the model takes [0, 1] directly

  def to_uint8(self, x: jax.Array) -> jax.Array:
    return jnp.clip(jnp.clip(x, 0.0, 1.0) * 255.0, 0, 255).astype(jnp.uint8)  # decode() clamps, then *255

  def latents(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)

  def decode_latents(self, z: jax.Array) -> jax.Array:
    return self.decoder(z)
