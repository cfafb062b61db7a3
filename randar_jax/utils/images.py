"""Pictures for people: image grids as PNG, token maps, ADM-style sample archives.

save_grid(images, 'samples.png')                 # uint8 (N, H, W, C) -> one PNG, rows of sqrt(N)
save_grid(token_map(tokens, vocab), 'tokens.png')   # token grids (N, h, w) as false-colour pictures
save_adm_npz(images, 'samples.npz')              # arr_0 uint8 (N, H, W, 3), the ADM evaluator's format
"""

from __future__ import annotations

import math
import os

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


def save_grid(
  images: np.ndarray, path: str | os.PathLike, columns: int | None = None, scale: int = 1, format: str | None = None
) -> str:
  """Saves a tiled grid as PNG (nearest-neighbour upscaled by ``scale``, for tiny images); ``format`` for a path
  without the .png extension (a temporary name)."""
  tiled = grid(images, columns)
  picture = Image.fromarray(tiled[..., 0] if tiled.shape[-1] == 1 else tiled)
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  picture.save(path, format=format)
  return os.fspath(path)


def token_map(tokens: np.ndarray, vocab_size: int, cell: int = 8) -> np.ndarray:
  """Token grids (N, h, w) -> uint8 RGB pictures (N, h*cell, w*cell, 3): each code gets a fixed colour."""
  palette = np.random.default_rng(0).integers(0, 256, (vocab_size, 3), dtype=np.uint8)
  pictures = palette[np.asarray(tokens)]
  return pictures.repeat(cell, axis=1).repeat(cell, axis=2)


def save_adm_npz(images: np.ndarray, path: str | os.PathLike, **extra: np.ndarray) -> str:
  """Writes ``arr_0`` = uint8 (N, H, W, 3) as the ADM / guided-diffusion evaluator expects."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"ADM sample files hold uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
  np.savez(path, arr_0=images, **extra)
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
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  picture.save(path)
  return os.fspath(path)
