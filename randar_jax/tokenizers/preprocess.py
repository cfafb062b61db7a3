"""Image preprocessing of the originals before tokenisation: ADM centre crop and torchvision-style ten-crop.

    img = load_image('cat.jpg')                      # PIL RGB
    crop = center_crop_arr(img, 256)                 # uint8 (256, 256, 3): what RandAR/RAR/LlamaGen encode
    crops = ten_crop(Image.fromarray(center_crop_arr(img, 281)), 256)   # LlamaGen ten-crop (10 arrays)
    arr = crop_image(img, 256, 'resize')             # what `randar-jax tokenize --crop` selects
    images = read_images(['a.jpg', 'b.png'], 256, channels=3)   # uint8 (2, 256, 256, 3) for a tokenizer

``center_crop_arr`` is guided-diffusion's (ADM) algorithm, used by RandAR's and LlamaGen's extraction scripts:
halve with a BOX filter while the short side is at least twice the target, resize with BICUBIC so that the
short side equals the target (rounding the long side), then take the centre square (floor offsets).
``ten_crop`` follows torchvision ``TenCrop``: corners top-left, top-right, bottom-left, bottom-right, centre,
then the same five of the horizontally flipped image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image


def load_image(path: str | os.PathLike | io.BytesIO) -> Image.Image:
  """Reads an image file (path or binary file object) fully, so a truncated file fails here, as PIL RGB (any mode:
  see :func:`randar_jax.utils.images.to_rgb`)."""
  from randar_jax.utils.images import open_image, to_rgb

  if not isinstance(path, (str, os.PathLike)):
    with Image.open(path) as image:
      image.load()
      return to_rgb(image)
  return open_image(path)


def center_crop_arr(pil_image: Image.Image, image_size: int) -> np.ndarray:
  """ADM centre crop: PIL image -> uint8 (image_size, image_size, C)."""
  while min(pil_image.size) >= 2 * image_size:  # cheap anti-aliased halving first, as ADM does
    pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
  scale = image_size / min(pil_image.size)
  pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size), resample=Image.BICUBIC)
  arr = np.asarray(pil_image)
  top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
  return np.ascontiguousarray(arr[top : top + image_size, left : left + image_size])


def _five_crop(arr: np.ndarray, size: int) -> list[np.ndarray]:
  """torchvision ``five_crop`` on an HWC array: tl, tr, bl, br, centre (centre offsets rounded like torchvision)."""
  h, w = arr.shape[:2]
  if size > h or size > w:
    raise ValueError(f"crop size {size} is larger than the image ({h}x{w})")
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
  return [np.ascontiguousarray(arr[y : y + size, x : x + size]) for y, x in corners]


def ten_crop(pil_image: Image.Image, crop_size: int) -> list[np.ndarray]:
  """torchvision ``TenCrop(crop_size)``: 5 crops of the image, then 5 of its horizontal flip; uint8 HWC arrays."""
  arr = np.asarray(pil_image)
  return _five_crop(arr, crop_size) + _five_crop(arr[:, ::-1], crop_size)


CROPS = ("adm", "resize", "none")


def crop_image(pil_image: Image.Image, image_size: int, mode: str = "adm") -> np.ndarray:
  """PIL image -> uint8 (H, W, C) by ``mode``: 'adm' = :func:`center_crop_arr`; 'resize' = BICUBIC to
  image_size x image_size (aspect ratio not kept); 'none' = as stored."""
  if mode == "adm":
    return center_crop_arr(pil_image, image_size)
  if mode == "resize":
    return np.asarray(pil_image.resize((image_size, image_size), resample=Image.BICUBIC))
  if mode == "none":
    return np.asarray(pil_image)
  raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROPS}")


def read_images(paths: Sequence[str | os.PathLike], size: int, crop: str = "adm", channels: int = 3) -> np.ndarray:
  """Image files -> uint8 (N, size, size, channels) as a tokenizer takes them: cropped by ``crop`` (see
  :func:`crop_image`); one channel is the mean of R, G and B (the grey-level tokenizer)."""
  images = []
  for path in paths:
    images.append(to_channels(crop_image(load_image(path), size, crop), channels))
  return np.stack(images)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """uint8 RGB (H, W, 3) -> (H, W, channels): one channel is the mean of R, G and B (the grey-level tokenizer)."""
  return image if channels == 3 else image.mean(axis=-1, keepdims=True).astype(np.uint8)
