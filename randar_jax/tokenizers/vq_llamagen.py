"""LlamaGen's VQ-16 image tokenizer (``LlamaGen: tokenizer/tokenizer_image/vq_model.py``, RandAR's
``RandAR/model/tokenizer.py``; ``docs/randar.md`` section 12.1): 16384 L2-normalised codes of dim 8, inputs in
[-1, 1], a 16x16 grid for 256x256 images.

    tok = VQLlamaGen(LlamaGenVQConfig.released(), rngs=nnx.Rngs(0))    # or checkpoint.load_model(dir)
    codes = tok.encode(images)          # uint8 (B, 256, 256, 3) -> int32 (B, 16, 16); index 16 * row + col
    images = tok.decode(codes)          # -> uint8 (B, 256, 256, 3) = uint8(clamp(x * 127.5 + 128, 0, 255))

Module names equal the PyTorch ones (``encoder.conv_blocks.{i}.res.{j}.conv1`` is ``encoder/conv_blocks/i/
res/j/conv1``), so ``convert/vq_llamagen.py`` maps keys by name. Quirks kept: the downsampling conv pads
right / bottom only; the 1x1 shortcut sees the block input; the decoder lists levels lowest resolution first
with one more residual block per level than the encoder; images are converted to uint8 with ``+ 128`` and
truncation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.config_io import original_args
from randar_jax.models.attention import attend
from randar_jax.tokenizers.base import TokenizerConfig, VQTokenizer
from randar_jax.tokenizers.layers import Codebook, Conv, GroupNorm, ResnetBlock, sequential, upsample_nearest


@dataclasses.dataclass(frozen=True)
class LlamaGenVQConfig(TokenizerConfig):
  """Architecture of a LlamaGen VQ model. Defaults: the released ``vq_ds16_c2i.pt`` (71,883,403 parameters;
  RandAR ``configs/tokenization/llamagen.yaml``)."""

  FAMILY: ClassVar[str] = "vq_llamagen"
  TORCH_UNUSED: ClassVar[frozenset[str]] = frozenset(  # losses, usage statistics, training-time dropout
    {"codebook_show_usage", "commit_loss_beta", "entropy_loss_ratio", "dropout_p"}
  )
  codebook_size: int = 16384
  codebook_embed_dim: int = 8
  codebook_l2_norm: bool = True
  ch: int = 128  # the original VQModel always builds ch=128
  encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  z_channels: int = 256
  num_res_blocks: int = 2
  image_channels: int = 3
  image_size: int = 256  # native (training) image side: `randar-jax tokenize` resizes to it by default

  def __post_init__(self):
    if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
      raise ValueError(
        f"encoder_ch_mult {self.encoder_ch_mult} and decoder_ch_mult {self.decoder_ch_mult} "
        f"need the same number of levels (down- and upsampling must match)"
      )

  @property
  def vocab_size(self) -> int:
    return self.codebook_size

  @property
  def downsample(self) -> int:
    return 2 ** (len(self.encoder_ch_mult) - 1)

  @classmethod
  def from_torch_args(cls, args: Mapping[str, Any], ch: int = 128) -> LlamaGenVQConfig:
    """From ``VQModel(**args)`` keyword arguments plus the Encoder/Decoder width ``ch`` (a fixture's
    ``encoder_decoder_ch``; the original VQModel always uses 128)."""
    return super().from_torch_args(args, ch=ch)

  @classmethod
  def from_original(cls, doc: Mapping[str, Any]) -> LlamaGenVQConfig:
    """From ``VQModel`` arguments; a fixture's or manifest's ``encoder_decoder_ch`` sets ``ch``."""
    return cls.from_torch_args(original_args(doc), ch=doc.get("encoder_decoder_ch", 128))


def _resnet(cin: int, cout: int, rngs: nnx.Rngs) -> ResnetBlock:
  return ResnetBlock(cin, cout, bias=True, shortcut_on_output=False, rngs=rngs)


class AttnBlock(nnx.Module):
  """Single-head self-attention over the h * w positions (1x1 q, k, v, proj_out; scale C^-0.5), residual."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.norm = GroupNorm(channels, rngs=rngs)
    self.q, self.k, self.v, self.proj_out = (Conv(channels, channels, 1, rngs=rngs) for _ in range(4))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    y = self.norm(x)
    q, k, v = (f(y).reshape(b, h * w, 1, c) for f in (self.q, self.k, self.v))
    return x + self.proj_out(attend(q, k, v).reshape(b, h, w, c))


class Resample(nnx.Module):
  """``downsample.conv``: zero-pad right / bottom by 1, 3x3 stride 2 (torch pads (0, 1, 0, 1)).
  ``upsample.conv``: nearest x2, then 3x3."""

  def __init__(self, channels: int, down: bool, *, rngs: nnx.Rngs):
    self.down = down
    self.conv = (
      Conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs)
      if down
      else Conv(channels, channels, 3, rngs=rngs)
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x if self.down else upsample_nearest(x))


class Level(nnx.Module):
  """One resolution: ``res.{j}`` blocks (each followed by ``attn.{j}`` at the lowest resolution), then an
  optional ``downsample`` (encoder) or ``upsample`` (decoder)."""

  def __init__(self, cin: int, cout: int, blocks: int, *, attn: bool, resample: str | None, rngs: nnx.Rngs):
    self.res = nnx.List([_resnet(cin if j == 0 else cout, cout, rngs) for j in range(blocks)])
    self.attn = nnx.List([AttnBlock(cout, rngs=rngs) for _ in range(blocks)] if attn else [])
    self.downsample = Resample(cout, True, rngs=rngs) if resample == "down" else None
    self.upsample = Resample(cout, False, rngs=rngs) if resample == "up" else None

  def __call__(self, x: jax.Array) -> jax.Array:
    for j, block in enumerate(self.res):
      x = block(x)
      if len(self.attn):
        x = self.attn[j](x)
    return sequential([r for r in (self.downsample, self.upsample) if r is not None], x)


def _mid(channels: int, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List(
    [_resnet(channels, channels, rngs), AttnBlock(channels, rngs=rngs), _resnet(channels, channels, rngs)]
  )


class Encoder(nnx.Module):
  def __init__(self, cfg: LlamaGenVQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.ch * m for m in cfg.encoder_ch_mult]
    last = len(widths) - 1
    self.conv_in = Conv(cfg.image_channels, cfg.ch, 3, rngs=rngs)
    self.conv_blocks = nnx.List(
      [
        Level(
          ([cfg.ch] + widths)[i],
          widths[i],
          cfg.num_res_blocks,
          attn=i == last,
          resample=None if i == last else "down",
          rngs=rngs,
        )
        for i in range(len(widths))
      ]
    )
    self.mid = _mid(widths[-1], rngs)
    self.norm_out = GroupNorm(widths[-1], rngs=rngs)
    self.conv_out = Conv(widths[-1], cfg.z_channels, 3, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) in [-1, 1] -> (B, H / f, W / f, z_channels)."""
    h = sequential((*self.conv_blocks, *self.mid), self.conv_in(x))
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


class Decoder(nnx.Module):
  def __init__(self, cfg: LlamaGenVQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.ch * m for m in cfg.decoder_ch_mult][::-1]  # conv_blocks.0 is the lowest resolution
    last = len(widths) - 1
    self.conv_in = Conv(cfg.z_channels, widths[0], 3, rngs=rngs)
    self.mid = _mid(widths[0], rngs)
    self.conv_blocks = nnx.List(
      [
        Level(
          widths[max(i - 1, 0)],
          widths[i],
          cfg.num_res_blocks + 1,
          attn=i == 0,
          resample=None if i == last else "up",
          rngs=rngs,
        )
        for i in range(len(widths))
      ]
    )
    self.norm_out = GroupNorm(widths[-1], rngs=rngs)
    self.conv_out = Conv(widths[-1], cfg.image_channels, 3, rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    """(B, h, w, z_channels) -> (B, f h, f w, C), roughly in [-1, 1]."""
    h = sequential((*self.mid, *self.conv_blocks), self.conv_in(z))
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


class VQLlamaGen(VQTokenizer):
  """encoder -> quant_conv (1x1) -> L2-normalised nearest code; code vectors -> post_quant_conv -> decoder."""

  def __init__(self, cfg: LlamaGenVQConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.quant_conv = Conv(cfg.z_channels, cfg.codebook_embed_dim, 1, rngs=rngs)
    self.quantize = Codebook(cfg.codebook_size, cfg.codebook_embed_dim, l2_norm=cfg.codebook_l2_norm, rngs=rngs)
    self.post_quant_conv = Conv(cfg.codebook_embed_dim, cfg.z_channels, 1, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def normalize(self, x: jax.Array) -> jax.Array:
    return (x - 0.5) / 0.5  # torchvision Normalize(0.5, 0.5), as in RandAR's code extraction

  def to_uint8(self, x: jax.Array) -> jax.Array:
    return jnp.clip(x * 127.5 + 128.0, 0, 255).astype(jnp.uint8)  # 128, not 127.5: as released

  def latents(self, x: jax.Array) -> jax.Array:
    return self.quant_conv(self.encoder(x))

  def decode_latents(self, z: jax.Array) -> jax.Array:
    return self.decoder(self.post_quant_conv(z))
