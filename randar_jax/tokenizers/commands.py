"""``randar-jax tokenize | detokenize``: images <-> VQ codes with a converted tokenizer.

randar-jax tokenize IMAGE... --tokenizer ckpt/vq_llamagen --out codes.npy [--image-size 256 --crop adm]
randar-jax detokenize codes.npy --tokenizer ckpt/vq_llamagen --out images/
"""

from __future__ import annotations

import argparse
import os


def _tokenize(args: argparse.Namespace) -> None:
  import numpy as np

  from randar_jax import tokenizers
  from randar_jax.tokenizers.preprocess import crop_image, load_image

  def read(path):
    try:
      return crop_image(load_image(path), args.image_size, args.crop)
    except OSError as e:  # unreadable, truncated or not an image
      raise ValueError(f"cannot read image {path}: {e}") from None

  def load(paths):
    images = [read(p) for p in paths]
    if len({i.shape for i in images}) > 1:
      raise ValueError(f"images differ in size ({sorted({i.shape for i in images})}); use --crop adm or resize")
    return np.stack(images)

  missing = [p for p in args.images if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{len(missing)} image file(s) not found: {', '.join(missing[:5])}")
  tok = tokenizers.load(args.tokenizer)
  codes = list(tokenizers.batches(tok.encode, args.images, args.batch_size, load=load, desc="tokenizing"))
  if len({c.shape[1:] for c in codes}) > 1:
    raise ValueError("images differ in size across batches; use --crop adm or resize")
  codes = np.concatenate(codes)
  np.save(args.out, codes)
  print(f"wrote {args.out}: codes {codes.shape} {codes.dtype} in [0, {tok.vocab_size}) for {len(args.images)} image(s)")


def _detokenize(args: argparse.Namespace) -> None:
  import numpy as np
  from PIL import Image

  from randar_jax import tokenizers
  from randar_jax.tokenizers.base import check_codes

  try:
    codes = np.load(args.codes)
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read codes from {args.codes} (a .npy of integer codes?): {e}") from None
  codes = codes[None] if codes.ndim == 1 else codes.reshape(-1, *codes.shape[-2:]) if codes.ndim == 4 else codes
  tok = tokenizers.load(args.tokenizer)
  codes = check_codes(codes, tok.vocab_size)
  os.makedirs(args.out, exist_ok=True)
  index = 0
  for images in tokenizers.batches(tok.decode, codes, args.batch_size, desc="decoding"):
    for image in images:
      Image.fromarray(image).save(os.path.join(args.out, f"{index:05d}.png"))
      index += 1
  print(f"wrote {index} PNG image(s) of {images.shape[1]}x{images.shape[2]} to {args.out}")


def register(commands) -> None:
  """Adds these subcommands to the ``randar-jax`` parser."""
  p = commands.add_parser("tokenize", help="images -> VQ codes (.npy, int32 (N, h, w))")
  p.add_argument("images", nargs="+", help="image files (any format PIL reads)")
  p.add_argument("--tokenizer", required=True, help="converted tokenizer checkpoint directory")
  p.add_argument("--out", required=True, help="output .npy file")
  p.add_argument("--image-size", type=int, default=256, help="side after cropping / resizing (default 256)")
  p.add_argument(
    "--crop",
    default="adm",
    choices=["adm", "resize", "none"],  # tokenizers.preprocess.CROPS
    help="adm: ADM center crop (RandAR's preprocessing, default); resize: squash to a square; "
    "none: as stored (sides must be multiples of 16)",
  )
  p.add_argument("--batch-size", type=int, default=8)
  p.set_defaults(run=_tokenize)

  p = commands.add_parser("detokenize", help="VQ codes (.npy) -> PNG images")
  p.add_argument("codes", help=".npy of integer codes (N, h, w), (N, h * w) raster, or (N, views, h, w)")
  p.add_argument("--tokenizer", required=True, help="converted tokenizer checkpoint directory")
  p.add_argument("--out", required=True, help="output directory for 00000.png, 00001.png, ...")
  p.add_argument("--batch-size", type=int, default=8)
  p.set_defaults(run=_detokenize)
