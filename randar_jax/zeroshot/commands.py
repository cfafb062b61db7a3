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
from randar_jax.decode.sampling import Guidance, Sampling

EDIT_STEPS = 32  # forwards for the regenerated tokens of an edit (a region, not a whole image)


def _load(args):
  from randar_jax import checkpoint, tokenizers

  tok = tokenizers.load(args.tokenizer)
  model = checkpoint.load_model(args.model, family="randar")
  return model, tok


def _region(spec: str | None, path: str | None, shape: tuple[int, int], what: str) -> np.ndarray:
  """A boolean (H, W) region from ``--box t,l,b,r`` or a mask image."""
  if (spec is None) == (path is None):
    raise ValueError(f"give exactly one of --{what}-box / --{what} (a mask image)".replace("--mask-box", "--box"))
  if spec is not None:
    try:
      top, left, bottom, right = (int(v) for v in spec.split(","))
    except ValueError:
      raise ValueError(f"malformed box {spec!r}: use top,left,bottom,right in pixels") from None
    region = np.zeros(shape, bool)
    region[max(top, 0) : bottom, max(left, 0) : right] = True
    return region
  from PIL import Image

  mask = Image.open(path).convert("L").resize(shape[::-1], Image.NEAREST)
  return np.asarray(mask) > 0


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


def _guidance_kwargs(args, model) -> dict:
  """num_steps, guidance and sampling from the flags; unset ones take the family's defaults (its guidance and
  sampling; the steps default is the command's own, for the tokens it generates)."""
  settings = families.of(model.config).default_settings(model.config)
  guidance = settings.guidance if args.cfg is None else Guidance.parse(args.cfg)
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
  from randar_jax.zeroshot import editing

  model, tok = _load(args)
  size = model.config.grid_size * tok.downsample
  images = read_images(args.images, size, args.crop, tok.channels)
  kwargs = _guidance_kwargs(args, model)
  labels = np.full(len(images), args.class_id)
  key = jax.random.key(args.seed)
  if args.command == "outpaint" and args.extend:
    sides = dict(part.split("=") for part in args.extend.split(","))
    result = editing.extend(model, tok, images, labels, key, **{k: int(v) for k, v in sides.items()}, **kwargs)
    masks = result.pixel_mask
  elif args.command == "outpaint":
    keep = _region(args.keep_box, args.keep, (size, size), "keep")
    result = editing.outpaint(model, tok, images, keep, labels, key, **kwargs)
    masks = ~np.broadcast_to(keep, images.shape[:3])
  else:
    mask = _region(args.box, args.mask, (size, size), "mask")
    result = editing.inpaint(model, tok, images, mask, labels, key, paste=not args.no_paste, **kwargs)
    masks = np.broadcast_to(mask, images.shape[:3])
  _panels(args.out, args.images, images, masks, result.images, args.command)


def _extrapolate(args: argparse.Namespace) -> None:
  import jax

  from randar_jax.decode import batched
  from randar_jax.utils import images as image_utils
  from randar_jax.zeroshot.extrapolate import extrapolate

  model, tok = _load(args)
  labels = batched.parse_labels(args.classes, None, model.config.num_classes)
  spatial = tuple(float(v) for v in args.spatial.split(",")) if args.spatial else None
  out = extrapolate(
    model,
    labels,
    jax.random.key(args.seed),
    factor=args.factor,
    spatial=(spatial * 2)[:2] if spatial else None,
    **_guidance_kwargs(args, model),
  )
  grid = model.config.grid_size * args.factor
  pictures = np.asarray(tok.decode(np.asarray(out.tokens).reshape(-1, grid, grid)))
  os.makedirs(args.out, exist_ok=True)
  for i, picture in enumerate(pictures):
    image_utils.save_grid(picture[None], os.path.join(args.out, f"{i:05d}.png"))
  print(f"wrote {len(pictures)} images of {pictures.shape[1]}x{pictures.shape[2]} to {args.out}")


def _features(args: argparse.Namespace) -> None:
  from randar_jax.tokenizers.preprocess import read_images
  from randar_jax.utils import images as image_utils
  from randar_jax.zeroshot.features import bidirectional_features, pca_rgb

  model, tok = _load(args)
  size = model.config.grid_size * tok.downsample
  images = read_images(args.images, size, args.crop, tok.channels)
  tokens = np.asarray(tok.encode(images)).reshape(len(images), -1)
  feats = np.asarray(bidirectional_features(model, tokens, layers=args.layer))
  os.makedirs(args.out, exist_ok=True)
  np.save(os.path.join(args.out, "features.npy"), feats)
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
