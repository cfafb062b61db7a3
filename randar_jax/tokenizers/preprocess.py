"""Image preprocessing before tokenisation: ADM's ``center_crop_arr`` and LlamaGen's ten-crop, exactly.

    image = load_image('cat.jpg', 256)                        # uint8 (256, 256, 3), ADM center crop
    views = augmentations(Image.open('cat.jpg'), 256, 'adm')  # (2, 256, 256, 3): [image, horizontal flip]
    views = augmentations(Image.open('cat.jpg'), 256, 'ten-crop')   # (10, 256, 256, 3)

RandAR's code extraction (spec ``randar.md`` section 8) uses ``adm`` (released checkpoints: 2 views) or
``ten-crop`` (``center_crop_arr(int(256 * 1.1))``, then torchvision ``TenCrop(256)``: the 5 crops, then the 5
crops of the mirrored image).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

CROPS = ("adm", "resize", "none")        # load_image modes
AUGMENTATIONS = {"adm": 2, "ten-crop": 10}   # augmentations mode -> views per image


def center_crop_arr(image: Image.Image, image_size: int) -> Image.Image:
  """ADM (guided-diffusion) preprocessing: BOX-halve while the short side is >= 2 * size, BICUBIC-resize the
  short side to ``image_size`` (rounding the long side), then take the central square."""
  while min(*image.size) >= 2 * image_size:
    image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
  scale = image_size / min(*image.size)
  image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
  arr = np.array(image)
  top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
  return Image.fromarray(arr[top: top + image_size, left: left + image_size])


def five_crop(arr: np.ndarray, size: int) -> list[np.ndarray]:
  """torchvision ``five_crop`` on (H, W, C): top-left, top-right, bottom-left, bottom-right, center."""
  h, w = arr.shape[:2]
  if size > min(h, w):
    raise ValueError(f"crop size {size} is larger than the image ({h}x{w})")
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return [arr[:size, :size], arr[:size, w - size:], arr[h - size:, :size], arr[h - size:, w - size:],
          arr[top: top + size, left: left + size]]


def ten_crop(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
  """torchvision ``TenCrop(size)``: the five crops, then the five crops of the horizontally flipped image."""
  arr = np.asarray(image)
  return np.stack(five_crop(arr, size) + five_crop(arr[:, ::-1], size))


def augmentations(image: Image.Image, image_size: int, mode: str = "adm") -> np.ndarray:
  """The views RandAR's code extraction tokenises per image: uint8 (num_views, size, size, 3)."""
  image = image.convert("RGB")
  if mode == "adm":
    arr = np.asarray(center_crop_arr(image, image_size))
    return np.stack([arr, arr[:, ::-1]])
  if mode == "ten-crop":
    return ten_crop(center_crop_arr(image, int(image_size * 1.1)), image_size)
  raise ValueError(f"unknown augmentation mode {mode!r}; choose from {sorted(AUGMENTATIONS)}")


def load_image(path: str | os.PathLike, image_size: int | None, crop: str = "adm") -> np.ndarray:
  """Reads an image file as uint8 RGB (H, W, 3).

  ``crop``: 'adm' = :func:`center_crop_arr` to ``image_size``; 'resize' = BICUBIC to image_size x image_size
  (aspect ratio not kept); 'none' = as stored.
  """
  try:
    image = Image.open(path).convert("RGB")
  except (OSError, ValueError) as e:   # missing, truncated or not an image
    raise ValueError(f"cannot read image {os.fspath(path)}: {e}") from None
  if crop == "none":
    return np.asarray(image)
  if image_size is None:
    raise ValueError(f"crop {crop!r} needs an image size")
  if crop == "adm":
    return np.asarray(center_crop_arr(image, image_size))
  if crop == "resize":
    return np.asarray(image.resize((image_size, image_size), resample=Image.BICUBIC))
  raise ValueError(f"unknown crop mode {crop!r}; choose from {CROPS}")
