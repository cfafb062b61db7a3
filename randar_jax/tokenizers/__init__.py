"""Image tokenizers behind one interface (VQ models, and the pixel tokenizer of the digits demo).

Image convention at this API: uint8 images (B, H, W, 3) in, integer codes (B, H / f, W / f) out, where f is
the tokenizer's downsampling factor; ``decode`` maps codes back to uint8 images. The VQ models also take float
images in [0, 1] (torchvision ``ToTensor`` range). Value ranges internal to a model ([-1, 1] for LlamaGen VQ,
[0, 1] for MaskGIT VQGAN) never leak out of it. Codes index the grid row-major (16 * row + col at 16x16).

    tok = tokenizers.load('ckpt/vq_llamagen')          # a converted checkpoint (randar-jax convert vq_ds16_c2i.pt)
    codes = tok.encode(images)                          # uint8 (8, 256, 256, 3) -> int32 (8, 16, 16)
    images = tok.decode(codes)                          # -> uint8 (8, 256, 256, 3)

Models: :mod:`.vq_llamagen` (LlamaGen VQ-16), :mod:`.vq_maskgit` (MaskGIT VQGAN); preprocessing (ADM center
crop, ten-crop) in :mod:`.preprocess`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import jax
import numpy as np
from tqdm.auto import tqdm

from randar_jax import checkpoint, families


class Tokenizer(Protocol):
  """What the data pipeline, the samplers and the CLI rely on."""

  vocab_size: int  # number of codes
  downsample: int  # pixels per token side (16 for the VQ models)
  channels: int  # image channels (3 for RGB)

  def encode(self, images: jax.Array) -> jax.Array:
    """uint8 (B, H, W, C) -> int32 codes (B, H // downsample, W // downsample)."""
    ...

  def decode(self, codes: jax.Array) -> jax.Array:
    """int32 codes (B, h, w) -> uint8 images (B, h * downsample, w * downsample, C)."""
    ...


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
  """What a tokenizer checkpoint promises, read from its config without loading weights (for checks up front)."""

  name: str  # the flag value: a directory or 'pixels:N'
  vocab_size: int
  downsample: int
  channels: int
  image_size: int | None  # native (training) image side; None: any (the pixel tokenizer)
  hidden: int = 0  # channels of the network's full-resolution activations (0: no network), for memory estimates


def _pixel_levels(spec: str) -> int:
  try:
    return int(spec.split(":", 1)[1])
  except ValueError:
    raise ValueError(f"malformed tokenizer {spec!r}: use pixels:LEVELS with an integer, e.g. pixels:17") from None


def info(directory: str | os.PathLike) -> TokenizerInfo:
  """The :class:`TokenizerInfo` of a tokenizer checkpoint (or ``'pixels:LEVELS'``); a clear error if the directory
  holds another kind of model. Reads only the config."""
  name = os.fspath(directory)
  if name.startswith("pixels:"):
    from randar_jax.tokenizers.pixels import PixelTokenizer

    tok = PixelTokenizer(levels=_pixel_levels(name))
    return TokenizerInfo(name, tok.vocab_size, tok.downsample, tok.channels, None)
  config = families.config_from_dict(checkpoint.read_config(directory))
  spec = families.of(config)
  if spec.kind != "tokenizer":
    raise ValueError(
      f"{directory} holds a {spec.name!r} checkpoint, not an image tokenizer "
      f"({', '.join(families.names('tokenizer'))}); "
      f"convert one with `randar-jax convert vq_ds16_c2i.pt DIR` (or the MaskGIT .bin)"
    )
  hidden = getattr(config, "ch", None) or getattr(config, "hidden_channels", 0)
  return TokenizerInfo(name, config.vocab_size, config.downsample, config.image_channels, config.image_size, hidden)


def check_fits_model(tok: TokenizerInfo, config, flag: str = "--tokenizer") -> None:
  """A generator ``config`` and a tokenizer agree on the vocabulary (otherwise decoded images are meaningless)."""
  if tok.vocab_size != config.vocab_size:
    raise ValueError(
      f"{flag} {tok.name} has {tok.vocab_size} codes but the model was trained on {config.vocab_size}: "
      f"use the tokenizer the model was trained with"
    )


def load(directory: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None) -> Tokenizer:
  """The tokenizer stored in a checkpoint directory (or ``'pixels:LEVELS'`` for the grey-level tokenizer);
  a clear error if the directory holds another kind of model."""
  if os.fspath(directory).startswith("pixels:"):
    from randar_jax.tokenizers.pixels import PixelTokenizer

    return PixelTokenizer(levels=_pixel_levels(os.fspath(directory)))
  info(directory)  # refuses another kind of model with a clear message
  return checkpoint.load_model(directory, family=checkpoint.read_config(directory)["family"], mesh=mesh)


def batches(
  fn: Callable[[np.ndarray], jax.Array],
  items: Sequence,
  batch_size: int,
  *,
  load: Callable[[Sequence], np.ndarray] = np.asarray,
  desc: str = "",
) -> Iterator[np.ndarray]:
  """Yields ``fn`` over consecutive batches of ``items`` (``load`` turns a slice into an array), with a progress
  bar. The last batch is padded to ``batch_size`` and trimmed, so ``fn`` compiles for one shape only."""
  if batch_size < 1:
    raise ValueError(f"batch size must be positive, got {batch_size}")
  for start in tqdm(range(0, len(items), batch_size), desc=desc, unit="batch", disable=not desc):
    chunk = load(items[start : start + batch_size])
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
    yield np.asarray(fn(chunk))[: batch_size - pad]
