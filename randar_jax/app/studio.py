"""The editing page's back end, without a browser: one model and tokenizer, and what each button asks of them.

Pictures arrive from the page at any size (an upload, or a shown sample upscaled to ~256 px); they are centre-
cropped and resized to the model's image size, and brushed masks with them (a cell counts as brushed if any of its
pixels is). Results go back upscaled by a whole factor (nearest neighbour), so every model pixel is an exact block.
Every setting passes the same checks as the CLI (``randar_jax.cli.decode_settings`` and the editing functions'
own), and bad ones raise ValueError with the CLI's message; the page shows it.

    studio = Studio(model, tokenizer)
    settings = studio.settings(steps=16, cfg="4", temperature=1.0, top_k=0, top_p=1.0)
    shown = studio.sample(label=3, count=4, seed=0, settings=settings)     # .images, .frame(k) (decoding order)
    result = studio.edit(picture, brushed, "inpaint", label=3, seed=0, settings=settings)
    pca = studio.features(picture, layer=None)
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np
from PIL import Image

from randar_jax import cli, families
from randar_jax.decode import batched
from randar_jax.decode.plan import query_counts
from randar_jax.decode.sampling import DecodeSettings
from randar_jax.utils import images as images_lib
from randar_jax.zeroshot import editing

DISPLAY = 256  # pixels per side shown on the page (smaller images are upscaled by a whole factor)
MAX_IMAGES = 16  # per sampling request
MODES = ("inpaint", "outpaint")  # brushed region: regenerate it / keep it and regenerate the rest
HIDDEN = 200  # grey level of cells not yet decoded in the decoding-order frames
FRAME_COLUMNS = 4  # samples per row in the decoding-order frames


def class_names(num_classes: int) -> list[str]:
  """Picker labels: ImageNet names for 1,000 classes, digits for 10, else 'class i'."""
  if num_classes == 1000:
    from randar_jax.data.imagenet_classes import IMAGENET_CLASSES

    return [f"{i}: {name}" for i, name in enumerate(IMAGENET_CLASSES)]
  if num_classes == 10:
    return [f"digit {i}" for i in range(10)]
  return [f"class {i}" for i in range(num_classes)]


@dataclasses.dataclass(frozen=True)
class Samples:
  """Sampled pictures and how they were decoded; ``frame(k)`` draws the canvases after forward k on demand (a
  state of a few arrays per page session instead of every frame)."""

  images: list[np.ndarray]  # uint8 (S, S, 3) per sample, upscaled for the page
  rank: np.ndarray  # (B, h, w) generation index of every token cell
  ends: np.ndarray  # (forwards,) tokens decoded after each forward
  cell: int  # page pixels per token cell

  @property
  def num_frames(self) -> int:
    return len(self.ends)

  def frame(self, k: int) -> np.ndarray:
    """Every sample side by side after forward ``k`` (0-based): cells decoded so far, the rest grey."""
    k = min(max(int(k), 0), self.num_frames - 1)
    done = (self.rank < self.ends[k]).repeat(self.cell, axis=1).repeat(self.cell, axis=2)
    canvases = np.where(done[..., None], np.stack(self.images), np.uint8(HIDDEN))
    return images_lib.grid(canvases, columns=min(len(self.images), FRAME_COLUMNS), fill=255)


class Studio:
  """A model and its tokenizer behind the page. ``model``: any generator family (editing and features need
  RandAR); ``tokenizer``: a :class:`randar_jax.tokenizers.Tokenizer` with the model's vocabulary."""

  def __init__(self, model, tokenizer, names: list[str] | None = None):
    cfg = model.config
    if tokenizer.vocab_size != cfg.vocab_size:
      raise ValueError(
        f"the tokenizer has {tokenizer.vocab_size} codes but the model {cfg.vocab_size}: "
        "use the tokenizer the model was trained with"
      )
    self.model, self.tokenizer = model, tokenizer
    self.family = families.of(cfg)
    self.size = cfg.grid_size * tokenizer.downsample  # model image side in pixels
    self.scale = max(1, DISPLAY // self.size)
    self.names = names or class_names(cfg.num_classes)

  # ---- settings, checked like the CLI's ------------------------------------------------------------------------

  def default_settings(self) -> DecodeSettings:
    return self.family.default_settings(self.model.config)

  def settings(
    self, *, steps: int | None, cfg: str | None, temperature: float | None, top_k: int | None, top_p: float | None
  ) -> DecodeSettings:
    """The family's defaults with the page's values; the CLI's ``decode_settings`` checks them (ValueError)."""
    flags = argparse.Namespace(
      steps=steps, cfg=cfg or None, cfg_interval=None, temperature=temperature, top_k=top_k, top_p=top_p, order=None
    )
    return cli.decode_settings(flags, self.model.config)

  def label(self, name: str | int) -> int:
    """A class id from a picker entry or an id."""
    if isinstance(name, str) and name in self.names:
      return self.names.index(name)
    return int(batched.parse_labels(str(name), 1, self.model.config.num_classes)[0])

  # ---- pictures in and out -------------------------------------------------------------------------------------

  def show(self, images: np.ndarray) -> list[np.ndarray]:
    """Model-size uint8 (B, H, W, C) -> page pictures (S, S, 3), upscaled by whole pixels."""
    images = np.asarray(images)
    rgb = np.broadcast_to(images, images.shape[:3] + (3,)) if images.shape[-1] == 1 else images[..., :3]
    return [np.ascontiguousarray(x.repeat(self.scale, axis=0).repeat(self.scale, axis=1)) for x in rgb]

  def to_model(self, picture: np.ndarray, brushed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A page picture (H, W, 3|4) and brush mask (H, W) -> the model's uint8 (S, S, C) image and (S, S) mask:
    centre square crop, then area-resized (a mask pixel is set if any brushed pixel falls in it)."""
    picture = np.asarray(picture)
    if picture.ndim == 2:
      picture = picture[..., None]
    if picture.ndim != 3 or picture.size == 0:
      raise ValueError(f"expected a picture, got an array of shape {picture.shape}")
    h, w = picture.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = picture[top : top + side, left : left + side, :3].astype(np.uint8)
    mode = Image.BOX if side >= self.size else Image.BICUBIC
    rgb = np.broadcast_to(crop, crop.shape[:2] + (3,)) if crop.shape[-1] == 1 else crop
    image = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((self.size, self.size), mode))
    if self.tokenizer.channels == 1:
      # Grey images (the digits) keep their exact levels: the mean of equal channels is the channel itself.
      image = np.round(image.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    if brushed is None:
      return image, None
    crop_mask = np.asarray(brushed)[top : top + side, left : left + side]
    mask = Image.fromarray((crop_mask != 0).astype(np.uint8) * 255).resize((self.size, self.size), Image.BOX)
    return image, np.asarray(mask) > 0

  def _need_randar(self, what: str) -> None:
    if self.family.name != "randar":
      raise ValueError(f"{what} needs a RandAR model (any order); this is a {self.family.name!r} model")

  # ---- requests --------------------------------------------------------------------------------------------------

  def sample(self, label: int, count: int, seed: int, settings: DecodeSettings) -> Samples:
    """``count`` samples of class ``label``, and the decoding-order frames (one per forward)."""
    if not 1 <= count <= MAX_IMAGES:
      raise ValueError(f"number of images must be in [1, {MAX_IMAGES}], got {count}")
    cfg = self.model.config
    labels = batched.parse_labels(str(label), count, cfg.num_classes)
    out = self.family.generate(self.model, labels, jax.random.key(seed), **settings.kwargs())
    grid = cfg.grid_size
    tokens = np.asarray(out.tokens).reshape(count, grid, grid)
    images = np.asarray(self.tokenizer.decode(tokens))
    counts = query_counts(grid * grid, settings.num_steps) if self.family.parallel else [1] * grid * grid
    rank = np.argsort(np.asarray(out.order), axis=1).reshape(count, grid, grid)
    return Samples(self.show(images), rank, np.cumsum(counts), self.tokenizer.downsample * self.scale)

  def edit(
    self, picture: np.ndarray, brushed: np.ndarray, mode: str, label: int, seed: int, settings: DecodeSettings
  ) -> np.ndarray:
    """Inpaints the brushed region (``mode`` 'inpaint'; with a new class: class-conditional editing) or keeps it
    and regenerates the rest ('outpaint'). Returns the page picture of the result (unbrushed pixels kept)."""
    self._need_randar("editing")
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    image, mask = self.to_model(picture, brushed)
    run = editing.inpaint if mode == "inpaint" else editing.outpaint
    result = run(
      self.model, self.tokenizer, image[None], mask, np.array([label]), jax.random.key(seed), **_edit_kwargs(settings)
    )
    return self.show(result.images)[0]

  def extend(
    self, picture: np.ndarray, sides: dict[str, int], label: int, seed: int, settings: DecodeSettings
  ) -> np.ndarray:
    """Grows the canvas by ``sides`` tokens ({'left': 0, 'right': 4, ...}) around the picture."""
    self._need_randar("canvas extension")
    image, _ = self.to_model(picture)
    result = editing.extend(
      self.model,
      self.tokenizer,
      image[None],
      np.array([label]),
      jax.random.key(seed),
      **{k: int(v) for k, v in sides.items()},
      **_edit_kwargs(settings),
    )
    return self.show(result.images)[0]

  def features(self, picture: np.ndarray, layer: int | None) -> np.ndarray:
    """The bidirectional features of the picture at block ``layer`` (None: the middle one) as a PCA colour map."""
    from randar_jax.zeroshot.features import bidirectional_features, pca_rgb

    self._need_randar("bidirectional features")
    image, _ = self.to_model(picture)
    tokens = np.asarray(self.tokenizer.encode(image[None])).reshape(1, -1)
    feats = bidirectional_features(self.model, tokens, layers=layer)
    rgb = pca_rgb(np.asarray(feats))  # (1, h, w, 3)
    f = self.tokenizer.downsample
    return self.show(rgb.repeat(f, axis=1).repeat(f, axis=2))[0]


def _edit_kwargs(settings: DecodeSettings) -> dict:
  """Editing takes the settings' steps (capped at the tokens to generate), guidance and sampling; the order of
  the generated cells is always random (known cells first)."""
  return dict(num_steps=settings.num_steps, guidance=settings.guidance, sampling=settings.sampling)
