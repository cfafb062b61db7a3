"""What the notebooks (``notebooks/*.ipynb``, Colab or local Jupyter) share: weights or a fallback model, the
Colab file picker, a bundled example image, and pictures shown inline.

    gen = load_generator('randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors', 'vq_ds16_c2i.pt',
                         digits_run='runs/digits')
    gen.model, gen.tokenizer, gen.source              # source: 'weights' | 'digits' | 'random'
    show_grid(gen.tokenizer.decode(tokens), 'out/samples.png')   # writes the PNG and displays it inline
    image, label = example_image(256, channels=3)      # a photo that ships with scikit-learn, no download

Fallback order, so a notebook always runs to the end on a CPU without downloads: the given weights when the files
(PyTorch, converted once) or converted checkpoint directories exist; else a trained digits run
(``train_digits.ipynb`` or ``randar-jax demo``); else a tiny random RandAR of the digits model's shape with the
17-level pixel tokenizer (its pictures are noise, but every step runs the real code).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from randar_jax import checkpoint, families, sharding, tokenizers
from randar_jax.utils import images as image_utils


@dataclasses.dataclass(frozen=True)
class Generator:
  model: Any  # a RandAR (nnx.Module), parameters sharded over all devices
  tokenizer: Any  # a tokenizers.Tokenizer whose vocabulary is the model's
  source: str  # 'weights' | 'digits' | 'random' (which fallback was taken)


def upload(what: str, directory: str = "uploads") -> str:
  """Colab's file picker for one file (``what`` says which), saved into ``directory``; returns its path."""
  try:
    from google.colab import files
  except ImportError:
    raise RuntimeError("upload() needs Google Colab; elsewhere set the file paths in the parameters cell") from None
  print(f"choose {what}")
  chosen = files.upload()
  if len(chosen) != 1:
    raise ValueError(f"choose exactly one file for {what}, got {len(chosen)}")
  ((name, data),) = chosen.items()
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, os.path.basename(name))
  with open(path, "wb") as f:
    f.write(data)
  return path


def checkpoint_dir(path: str, ckpt_dir: str = "ckpt") -> str | None:
  """A checkpoint for ``path``: a converted directory (or ``'pixels:N'``) as it is; a PyTorch file (.safetensors /
  .pt / .bin) converted once into ``ckpt_dir/<file name>`` (a later call reuses it); None if ``path`` is empty or
  does not exist."""
  if not path:
    return None
  if path.startswith("pixels:") or os.path.isdir(path):
    return path
  if not os.path.isfile(path):
    print(f"not found: {path}")
    return None
  out = os.path.join(ckpt_dir, os.path.splitext(os.path.basename(path))[0])
  try:
    checkpoint.read_config(out)
    print(f"{path}: converted before, using {out}")
    return out
  except FileNotFoundError:
    from randar_jax.convert import convert_checkpoint

    return convert_checkpoint(path, out)


def load_generator(
  weights: str = "",
  tokenizer: str = "",
  *,
  digits_run: str = "",
  ckpt_dir: str = "ckpt",
  dtype: str = "float32",
  seed: int = 0,
) -> Generator:
  """RandAR + its tokenizer from ``weights`` and ``tokenizer`` (PyTorch files, converted directories, or
  'pixels:N'), else from the digits run ``digits_run``, else a tiny random model (see the module docstring).

  Weights without a usable tokenizer, or a tokenizer of another vocabulary, are an error (not a silent fallback).
  """
  model_dir = checkpoint_dir(weights, ckpt_dir)
  if model_dir is not None:
    tok_dir = checkpoint_dir(tokenizer, ckpt_dir)
    if tok_dir is None:
      raise FileNotFoundError(
        f"RandAR weights {weights!r} need their image tokenizer, but {tokenizer!r} is not there: "
        f"give the LlamaGen VQ-16 vq_ds16_c2i.pt (or the MaskGIT VQGAN .bin for *_maskgit_* "
        f"models), or a converted directory"
      )
    gen = Generator(checkpoint.load_model(model_dir, family="randar", dtype=dtype), tokenizers.load(tok_dir), "weights")
  elif digits_run and os.path.isdir(digits_run):
    model = checkpoint.load_model(digits_run, family="randar", dtype=dtype)
    gen = Generator(model, tokenizers.load(f"pixels:{model.config.vocab_size}"), "digits")
  else:
    if digits_run:
      print(f"not found: {digits_run}")
    from randar_jax.demo import digits_config

    config = families.config_from_dict({**digits_config().model.to_dict(), "dtype": dtype})
    with sharding.model_context():
      model = families.build(config, seed)
    gen = Generator(model, tokenizers.load(f"pixels:{config.vocab_size}"), "random")
  cfg = gen.model.config
  if gen.tokenizer.vocab_size != cfg.vocab_size:
    raise ValueError(
      f"the tokenizer has {gen.tokenizer.vocab_size} codes but the model {cfg.vocab_size}: use the "
      f"tokenizer the model was trained with"
    )
  params = checkpoint.param_count(checkpoint.model_params(gen.model))
  note = (
    " (untrained fallback: its pictures are noise, the code path is the real one)" if gen.source == "random" else ""
  )
  print(
    f"{gen.source}: RandAR with {params:,} parameters, {cfg.grid_size}x{cfg.grid_size} tokens of "
    f"{cfg.vocab_size} codes, {cfg.num_classes} classes; tokenizer {type(gen.tokenizer).__name__} "
    f"({gen.tokenizer.downsample} px per token){note}"
  )
  return gen


def example_image(size: int, channels: int = 3, index: int = 0) -> tuple[np.ndarray, int | None]:
  """A picture that ships with the installed packages, uint8 (size, size, channels), and its class if known:
  grey (1 channel): test-split digit ``index`` and its label; RGB: scikit-learn's sample photo 'china.jpg'
  (ADM centre crop), class None."""
  from PIL import Image

  if channels == 1:
    from randar_jax.data import digits

    levels, labels = digits.load_split()["test"]
    grey = np.asarray(tokenizers.load(f"pixels:{digits.LEVELS}").decode(levels[index][None]))[0, ..., 0]
    image = np.asarray(Image.fromarray(grey).resize((size, size), Image.NEAREST)) if size != grey.shape[0] else grey
    return image[..., None], int(labels[index])
  from sklearn.datasets import load_sample_image

  from randar_jax.tokenizers.preprocess import crop_image

  return crop_image(Image.fromarray(load_sample_image("china.jpg")), size, "adm"), None


def _scale(height: int) -> int:
  return max(1, 128 // height)  # tiny pictures (8-pixel digits) are enlarged with nearest neighbours


def show(path: str) -> None:
  """Displays a PNG inline (in IPython; elsewhere prints its path). Returns nothing, so a cell ending with it
  echoes no value."""
  try:
    from IPython.display import Image, display
  except ImportError:
    print(path)
    return
  display(Image(filename=path))


def show_grid(images, path: str, columns: int | None = None) -> None:
  """Saves uint8 images (N, H, W, C) as one PNG grid at ``path`` (small ones enlarged) and displays it."""
  images = np.asarray(images)
  show(image_utils.save_grid(images, path, columns, scale=_scale(images.shape[1])))


def show_panel(pictures, path: str) -> None:
  """Saves pictures (H, W, C) side by side (e.g. input | mask | results) as one PNG at ``path`` and displays it."""
  pictures = [np.asarray(p) for p in pictures]
  scale = _scale(max(p.shape[0] for p in pictures))
  show(image_utils.save_panel(pictures, path, pad=max(1, 4 // scale), scale=scale))


def mask_picture(mask: np.ndarray) -> np.ndarray:
  """A boolean (H, W) mask as a uint8 (H, W, 1) picture: white = regenerated."""
  return (np.asarray(mask, bool) * 255).astype(np.uint8)[..., None]
