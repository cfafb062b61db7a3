"""``randar-jax inpaint | edit | outpaint | extrapolate | features``: image files in, PNG panels out.

    randar-jax inpaint photo.jpg --mask mask.png --model ckpt/randar_l --tokenizer ckpt/vq --class 207 --out edits/
    randar-jax inpaint photo.jpg --box 64,64,192,192 ...                  # a rectangle instead of a mask file
    randar-jax edit photo.jpg --box 64,64,192,192 --class 281 ...        # redraw the box as another class
    randar-jax outpaint photo.jpg --keep-box 0,0,256,128 ...             # keep the left half, redraw the rest
    randar-jax outpaint photo.jpg --extend right=16 ...                  # 256x256 -> 256x512
    randar-jax extrapolate --model ckpt/randar_xl --tokenizer ckpt/vq --classes 1,2 --factor 2 --out big/
    randar-jax features photo.jpg --model ckpt/randar_l --tokenizer ckpt/vq --layer 12 --out feats/

Masks: a PNG (non-black = regenerate, resized to the image with nearest neighbours) or ``--box top,left,bottom,right``
in pixels. Panels show input | mask | result side by side.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from randar_jax import families
from randar_jax.decode.sampling import Sampling

EDIT_STEPS = 32  # forwards for the regenerated tokens of an edit (a region, not a whole image)


def _load(args):
  from randar_jax import checkpoint, tokenizers

  tok = tokenizers.load(args.tokenizer)
  model = checkpoint.load_model(args.model, family="randar")
  return model, tok


def _check(args, images: bool = True):
  """Everything checkable before loading weights or compiling: the model (a RandAR generator, read from its
  config), the tokenizer (its vocabulary), the image files (headers), the flags. Returns (config, tokenizer info,
  image side in pixels, sampling kwargs or None)."""
  from randar_jax.cli import check_positive, check_tokenizer, generator_config
  from randar_jax.utils import files
  from randar_jax.utils.images import open_image_header

  config = generator_config(args.model, "--model", family="randar")
  tok = check_tokenizer(args.tokenizer, config)
  files.check_output_dir(args.out)
  if images:
    for path in args.images:
      open_image_header(path)
  class_id = getattr(args, "class_id", None)
  if class_id is not None and not 0 <= class_id < config.num_classes:
    raise ValueError(f"--class must be in [0, {config.num_classes}) for this model, got {class_id}")
  check_positive(steps=getattr(args, "steps", None))
  layer = getattr(args, "layer", None)
  if layer is not None and not 0 <= layer < config.n_layer:
    raise ValueError(f"--layer must be a block index in [0, {config.n_layer}) for this model, got {layer}")
  kwargs = _guidance_kwargs(args, config) if hasattr(args, "cfg") else None
  return config, tok, config.grid_size * tok.downsample, kwargs


def _box(spec: str, size: int, flag: str) -> tuple[int, int, int, int]:
  """``top,left,bottom,right`` in pixels of the size x size image the command works on (after --crop)."""
  try:
    top, left, bottom, right = (int(v) for v in spec.split(","))
  except ValueError:
    raise ValueError(f"malformed box {flag} {spec!r}: use top,left,bottom,right in pixels") from None
  if not (0 <= top < bottom <= size and 0 <= left < right <= size):
    raise ValueError(
      f"{flag} {spec} must lie inside the {size}x{size} image the model works on (after --crop; "
      f"0 <= top < bottom <= {size}, 0 <= left < right <= {size})"
    )
  return top, left, bottom, right


def _region(spec: str | None, path: str | None, shape: tuple[int, int], what: str) -> np.ndarray:
  """A boolean (H, W) region from ``--box t,l,b,r`` or a mask image (non-black = selected, resized with nearest
  neighbours); it must select something and not everything."""
  box_flag, mask_flag = ("--box", "--mask") if what == "mask" else (f"--{what}-box", f"--{what}")
  if (spec is None) == (path is None):
    raise ValueError(f"give exactly one of {box_flag} / {mask_flag} (a mask image)")
  if spec is not None:
    top, left, bottom, right = _box(spec, shape[0], box_flag)
    region = np.zeros(shape, bool)
    region[top:bottom, left:right] = True
    if what == "keep" and region.all():
      raise ValueError(f"{box_flag} {spec} keeps the whole image: there is nothing to outpaint")
    return region
  from PIL import Image

  from randar_jax.utils.images import open_image

  mask = np.asarray(open_image(path, "mask").resize(shape[::-1], Image.NEAREST)).max(axis=-1) > 0
  if not mask.any():
    raise ValueError(f"{mask_flag} {path} is black everywhere: it selects nothing")
  if what == "keep" and mask.all():
    raise ValueError(f"{mask_flag} {path} keeps the whole image: there is nothing to outpaint")
  return mask


SIDES = ("left", "right", "top", "bottom")


def _extend(spec: str) -> dict[str, int]:
  """``right=16`` or ``left=4,top=4`` -> {side: tokens}."""
  sides = {}
  for part in spec.split(","):
    side, _, value = part.partition("=")
    side = side.strip()
    try:
      sides[side] = int(value)
    except ValueError:
      raise ValueError(f"malformed --extend {spec!r}: use SIDE=TOKENS, e.g. right=16 or left=4,top=4") from None
    if side not in SIDES:
      raise ValueError(f"--extend side {side!r} is not one of {', '.join(SIDES)}")
    if sides[side] < 0:
      raise ValueError(f"--extend {side}={sides[side]}: the number of tokens must be >= 0")
  if not any(sides.values()):
    raise ValueError(f"--extend {spec!r} grows no side: give at least one side a positive number of tokens")
  return sides


def _panels(out: str, paths, images, masks, results, suffix: str) -> None:
  from randar_jax.utils import images as image_utils

  os.makedirs(out, exist_ok=True)
  for path, image, mask, result in zip(paths, images, masks, results):
    mask_rgb = np.repeat((mask * 255).astype(np.uint8)[..., None], image.shape[-1], axis=-1)
    height = result.shape[0]
    pad = lambda a, height=height: np.pad(a, ((0, height - a.shape[0]), (0, 0), (0, 0)))
    name = os.path.splitext(os.path.basename(path))[0]
    image_utils.save_panel([pad(image), pad(mask_rgb), result], os.path.join(out, f"{name}_{suffix}.png"))
    image_utils.save_grid(result[None], os.path.join(out, f"{name}_{suffix}_result.png"))
  print(f"wrote {len(results)} panels to {out}")


def _guidance_kwargs(args, config) -> dict:
  """num_steps, guidance and sampling from the flags; unset ones take the family's defaults (its guidance and
  sampling; the steps default is the command's own, for the tokens it generates)."""
  from randar_jax.cli import parse_cfg

  settings = families.of(config).default_settings(config)
  guidance = settings.guidance if args.cfg is None else parse_cfg(args.cfg)
  base = settings.sampling
  sampling = Sampling.make(
    base.temperature if args.temperature is None else args.temperature,
    base.top_k if args.top_k is None else args.top_k,
    base.top_p if args.top_p is None else args.top_p,
  )
  return dict(num_steps=args.steps, guidance=guidance, sampling=sampling)


def _inpaint(args: argparse.Namespace) -> None:
  import jax

  from randar_jax.tokenizers.preprocess import read_images
  from randar_jax.utils import memory

  config, tok, size, kwargs = _check(args)
  batch, guided = len(args.images), kwargs["guidance"] is not None
  if args.command == "outpaint" and args.extend:
    if args.keep or args.keep_box:
      raise ValueError("give either --extend or a region to keep (--keep / --keep-box), not both")
    sides = _extend(args.extend)
    rows = config.grid_size + sides.get("top", 0) + sides.get("bottom", 0)
    cols = config.grid_size + sides.get("left", 0) + sides.get("right", 0)
    need = memory.generator_bytes(config, batch=batch, tokens=rows * cols, guided=guided)
    need += memory.tokenizer_bytes(tok, batch=batch, height=rows * tok.downsample, width=cols * tok.downsample)
    memory.check_fits(need, f"--extend {args.extend} ({rows}x{cols} tokens for {batch} image(s))")
  elif args.command == "outpaint":
    keep = _region(args.keep_box, args.keep, (size, size), "keep")
  else:
    mask = _region(args.box, args.mask, (size, size), "mask")
  memory.check_fits(
    memory.generator_bytes(config, batch=batch, tokens=config.num_tokens, guided=guided), f"editing {batch} image(s)"
  )

  images = read_images(args.images, size, args.crop, tok.channels)  # a truncated file fails before the weights load

  from randar_jax.zeroshot import editing

  model, tok = _load(args)
  labels = np.full(len(images), args.class_id)
  key = jax.random.key(args.seed)
  if args.command == "outpaint" and args.extend:
    result = editing.extend(model, tok, images, labels, key, **sides, **kwargs)
    masks = result.pixel_mask
  elif args.command == "outpaint":
    result = editing.outpaint(model, tok, images, keep, labels, key, **kwargs)
    masks = ~np.broadcast_to(keep, images.shape[:3])
  else:
    result = editing.inpaint(model, tok, images, mask, labels, key, paste=not args.no_paste, **kwargs)
    masks = np.broadcast_to(mask, images.shape[:3])
  _panels(args.out, args.images, images, masks, result.images, args.command)


def _extrapolate(args: argparse.Namespace) -> None:
  import math

  import jax

  from randar_jax.decode import batched
  from randar_jax.utils import images as image_utils
  from randar_jax.utils import memory
  from randar_jax.zeroshot.extrapolate import extrapolate

  config, tok, _, kwargs = _check(args, images=False)
  labels = batched.parse_labels(args.classes, None, config.num_classes)
  if args.factor < 2:
    raise ValueError(f"--factor must be an integer >= 2, got {args.factor}")
  spatial = None
  if args.spatial:
    try:
      spatial = tuple(float(v) for v in args.spatial.split(","))
    except ValueError:
      raise ValueError(f"malformed --spatial {args.spatial!r}: use 'S' or 'S0,S1'") from None
    if len(spatial) > 2 or not all(math.isfinite(v) for v in spatial):
      raise ValueError(f"--spatial must be one or two finite scales 'S' or 'S0,S1', got {args.spatial!r}")
  grid = config.grid_size * args.factor
  need = memory.generator_bytes(config, batch=len(labels), tokens=grid * grid, guided=True)
  need += memory.tokenizer_bytes(tok, batch=len(labels), height=grid * tok.downsample, width=grid * tok.downsample)
  memory.check_fits(need, f"--factor {args.factor} ({grid}x{grid} tokens for {len(labels)} image(s))")
  model, tok = _load(args)
  out = extrapolate(
    model,
    labels,
    jax.random.key(args.seed),
    factor=args.factor,
    spatial=(spatial * 2)[:2] if spatial else None,
    **kwargs,
  )
  pictures = np.asarray(tok.decode(np.asarray(out.tokens).reshape(-1, grid, grid)))
  os.makedirs(args.out, exist_ok=True)
  for i, picture in enumerate(pictures):
    image_utils.save_grid(picture[None], os.path.join(args.out, f"{i:05d}.png"))
  print(f"wrote {len(pictures)} images of {pictures.shape[1]}x{pictures.shape[2]} to {args.out}")


def _features(args: argparse.Namespace) -> None:
  from randar_jax.tokenizers.preprocess import read_images
  from randar_jax.utils import images as image_utils
  from randar_jax.utils.files import atomic_path
  from randar_jax.zeroshot.features import bidirectional_features, pca_rgb

  _, tok, size, _ = _check(args)
  images = read_images(args.images, size, args.crop, tok.channels)
  model, tok = _load(args)
  tokens = np.asarray(tok.encode(images)).reshape(len(images), -1)
  feats = np.asarray(bidirectional_features(model, tokens, layers=args.layer))
  os.makedirs(args.out, exist_ok=True)
  with atomic_path(os.path.join(args.out, "features.npy")) as tmp, open(tmp, "wb") as f:
    np.save(f, feats)
  maps = pca_rgb(feats)
  cell = size // model.config.grid_size
  for path, image, rgb in zip(args.images, images, maps):
    name = os.path.splitext(os.path.basename(path))[0]
    big = rgb.repeat(cell, axis=0).repeat(cell, axis=1)
    image_utils.save_panel(
      [np.broadcast_to(image, image.shape[:2] + (3,)), big], os.path.join(args.out, f"{name}_features.png")
    )
  print(f"wrote features {feats.shape} and PCA pictures to {args.out}")


def _add_common(p: argparse.ArgumentParser, images: bool = True) -> None:
  if images:
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--crop", default="adm", choices=["adm", "resize", "none"])
  p.add_argument("--model", required=True, help="RandAR checkpoint directory")
  p.add_argument("--tokenizer", required=True, help="tokenizer checkpoint directory (or pixels:N)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--seed", type=int, default=0)


def _add_sampling(p: argparse.ArgumentParser, steps: int | None = EDIT_STEPS) -> None:
  p.add_argument(
    "--steps",
    type=int,
    default=steps,
    help="forward passes for the generated tokens (default: %(default)s; none: the model's default)",
  )
  p.add_argument("--cfg", help="guidance: 'none', 'S' or 'S0,S1' (default: the model family's)")
  p.add_argument("--temperature", type=float, help="default: the model family's")
  p.add_argument("--top-k", type=int, help="default: the model family's")
  p.add_argument("--top-p", type=float, help="default: the model family's")


def register(commands) -> None:
  """Adds the zero-shot subcommands to the ``randar-jax`` parser."""
  for name, help_text in (("inpaint", "regenerate a masked region"), ("edit", "redraw a region as another class")):
    p = commands.add_parser(name, help=help_text)
    _add_common(p)
    _add_sampling(p)
    p.add_argument("--mask", help="mask image (non-black = regenerate)")
    p.add_argument("--box", help="top,left,bottom,right in pixels")
    p.add_argument("--class", dest="class_id", type=int, required=True, help="class id (the new one for edit)")
    p.add_argument("--no-paste", action="store_true", help="return the decoded image without pasting back")
    p.set_defaults(run=_inpaint)

  p = commands.add_parser("outpaint", help="keep a region and regenerate the rest, or extend the canvas")
  _add_common(p)
  _add_sampling(p)
  p.add_argument("--keep", help="mask image of the region to keep")
  p.add_argument("--keep-box", help="top,left,bottom,right in pixels")
  p.add_argument("--extend", help="grow the canvas by tokens, e.g. right=16 or left=4,top=4")
  p.add_argument("--class", dest="class_id", type=int, required=True)
  p.set_defaults(run=_inpaint)

  p = commands.add_parser("extrapolate", help="sample at a higher resolution (e.g. 512 px from a 256 px model)")
  _add_common(p, images=False)
  _add_sampling(p, steps=None)
  p.add_argument("--classes", required=True, help="class ids, e.g. '1,5,9'")
  p.add_argument("--factor", type=int, default=2)
  p.add_argument("--spatial", help="spatial guidance scale(s) 'S' or 'S0,S1' (needs --cfg)")
  p.set_defaults(run=_extrapolate, cfg="3")

  p = commands.add_parser("features", help="bidirectional features of images (.npy + PCA pictures)")
  _add_common(p)
  p.add_argument("--layer", type=int, default=None, help="block index (default: the middle one)")
  p.set_defaults(run=_features)
