"""Pictures for people: image grids as PNG, token maps, ADM-style sample archives.

save_grid(images, 'samples.png')                 # uint8 (N, H, W, C) -> one PNG, rows of sqrt(N)
save_grid(token_map(tokens, vocab), 'tokens.png')   # token grids (N, h, w) as false-colour pictures
save_adm_npz(images, 'samples.npz')              # arr_0 uint8 (N, H, W, 3), the ADM evaluator's format
image = open_image('photo.png')                  # any PIL mode -> RGB; unreadable / bomb -> one-line ValueError
"""

from __future__ import annotations

import math
import os
import struct
import warnings

import numpy as np
from PIL import Image


def grid(images: np.ndarray, columns: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
  """Tiles uint8 images (N, H, W[, C]) into one (rows*(H+pad)-pad, cols*(W+pad)-pad, C) image."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  out = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, c), fill, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    out[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = image
  return out


def save_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None, scale: int = 1) -> str:
  """Saves a tiled grid as PNG, atomically (nearest-neighbour upscaled by ``scale``, for tiny images)."""
  tiled = grid(images, columns)
  picture = Image.fromarray(tiled[..., 0] if tiled.shape[-1] == 1 else tiled)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  return _save_png(picture, path)


def _save_png(picture: Image.Image, path: str | os.PathLike) -> str:
  """Saves a PNG whole or not at all (written under a temporary name, renamed when complete)."""
  from randar_jax.utils.files import atomic_path

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_path(path) as tmp:
    picture.save(tmp, format="PNG")
  return os.fspath(path)


def token_map(tokens: np.ndarray, vocab_size: int, cell: int = 8) -> np.ndarray:
  """Token grids (N, h, w) -> uint8 RGB pictures (N, h*cell, w*cell, 3): each code gets a fixed colour."""
  palette = np.random.default_rng(0).integers(0, 256, (vocab_size, 3), dtype=np.uint8)
  pictures = palette[np.asarray(tokens)]
  return pictures.repeat(cell, axis=1).repeat(cell, axis=2)


def as_rgb(images: np.ndarray) -> np.ndarray:
  """uint8 (..., 1) grey images -> (..., 3) (the ADM format and the Inception are RGB); RGB passes through."""
  images = np.asarray(images)
  return np.repeat(images, 3, axis=-1) if images.ndim >= 3 and images.shape[-1] == 1 else images


def save_adm_npz(images: np.ndarray, path: str | os.PathLike, **extra: np.ndarray) -> str:
  """Writes ``arr_0`` = uint8 (N, H, W, 3) as the ADM / guided-diffusion evaluator expects (grey -> RGB)."""
  images = as_rgb(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"ADM sample files hold uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
  from randar_jax.utils.files import atomic_path

  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, arr_0=images, **extra)
  return os.fspath(path)


def save_panel(pictures: list[np.ndarray], path: str | os.PathLike, pad: int = 4, scale: int = 1) -> str:
  """Saves pictures (H, W, C) of one height side by side (grey ones as RGB), e.g. input | mask | result."""
  rgb = [np.repeat(p, 3, axis=-1) if p.shape[-1] == 1 else p for p in (np.asarray(p, np.uint8) for p in pictures)]
  height = max(p.shape[0] for p in rgb)
  gap = np.full((height, pad, 3), 255, np.uint8)
  row = []
  for p in rgb:
    row += [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255), gap]
  picture = Image.fromarray(np.concatenate(row[:-1], axis=1))
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  return _save_png(picture, path)


_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def open_image(path: str | os.PathLike, what: str = "image") -> Image.Image:
  """Reads an image file fully (so a truncated one fails here) as an RGB PIL image, whatever its mode: 16- and
  32-bit grey are scaled to 8 bits (not clipped to white), transparency is composited over white, palette, CMYK
  and the rest go through PIL's conversion. Unreadable, truncated or decompression-bomb files raise a one-line
  ValueError naming the file (``what``: 'image', 'mask', ... for the message)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such {what} file: {os.fspath(path)}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)  # a bomb fails before it is decoded
      with Image.open(path) as image:
        image.load()
        return to_rgb(image)
  except (*_READ_ERRORS, Image.DecompressionBombWarning) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"cannot read {what} {os.fspath(path)}: {reason}") from None


def open_image_header(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
  """(height, width) of an image file from its header, nothing decoded; one-line errors as :func:`open_image`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such {what} file: {os.fspath(path)}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as image:
        return image.height, image.width
  except (*_READ_ERRORS, Image.DecompressionBombWarning) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f"cannot read {what} {os.fspath(path)}: {reason}") from None


def to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL mode -> 'RGB' (see :func:`open_image`)."""
  if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
    values = np.asarray(image, np.float64)
    if image.mode == "F":
      scale = 255.0 if values.size and values.max() <= 1.0 else 1.0  # float images in [0, 1] or [0, 255]
    else:
      scale = 255.0 / 65535.0  # 16-bit grey (PIL reads 16-bit PNG as 'I' or 'I;16')
    grey = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
  if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")
