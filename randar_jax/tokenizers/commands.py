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
  from randar_jax.cli import check_positive
  from randar_jax.tokenizers.preprocess import crop_image, load_image, to_channels
  from randar_jax.utils import files, memory

  def load(paths):
    images = [to_channels(crop_image(load_image(p), size, args.crop), info.channels) for p in paths]
    if len({i.shape for i in images}) > 1:
      raise ValueError(f"images differ in size ({sorted({i.shape for i in images})}); use --crop adm or resize")
    return np.stack(images)

  # Checks up front: flags, the tokenizer's config (not its weights), every file's header, the memory a batch needs.
  check_positive(batch_size=args.batch_size)
  files.check_output_file(args.out, ".npy")
  info = tokenizers.info(args.tokenizer)
  size = args.image_size or info.image_size
  if size is None:
    raise ValueError(f"--tokenizer {args.tokenizer} has no native image size: give --image-size")
  if size < info.downsample or size % info.downsample:
    raise ValueError(
      f"--image-size {size} must be a positive multiple of the tokenizer's downsampling factor {info.downsample}"
    )
  sides = [np.asarray(load_image(p)).shape[:2] for p in args.images]  # decoded once: a truncated file fails here
  if args.crop == "none":
    height, width = max(s[0] for s in sides), max(s[1] for s in sides)
  else:
    height = width = size
  batch = min(args.batch_size, len(args.images))
  memory.check_fits(
    memory.tokenizer_bytes(info, batch=batch, height=height, width=width),
    f"tokenizing {batch} image(s) of {height}x{width}",
    batch=batch,
  )
  tok = tokenizers.load(args.tokenizer)
  codes = list(tokenizers.batches(tok.encode, args.images, args.batch_size, load=load, desc="tokenizing"))
  if len({c.shape[1:] for c in codes}) > 1:
    raise ValueError("images differ in size across batches; use --crop adm or resize")
  codes = np.concatenate(codes)
  with files.atomic_path(args.out) as tmp, open(tmp, "wb") as f:
    np.save(f, codes)
  print(f"wrote {args.out}: codes {codes.shape} {codes.dtype} in [0, {tok.vocab_size}) for {len(args.images)} image(s)")


def _detokenize(args: argparse.Namespace) -> None:
  import numpy as np
  from PIL import Image

  from randar_jax import tokenizers
  from randar_jax.cli import check_positive
  from randar_jax.tokenizers.base import check_codes
  from randar_jax.utils import files, memory

  check_positive(batch_size=args.batch_size)
  files.check_output_dir(args.out)
  if not os.path.isfile(args.codes):
    raise FileNotFoundError(f"no such codes file: {args.codes}")
  try:
    codes = np.load(args.codes, allow_pickle=False)
  except (OSError, EOFError, ValueError) as e:
    raise ValueError(f"cannot read codes from {args.codes} (a .npy of integer codes?): {e}") from None
  if not isinstance(codes, np.ndarray):
    raise ValueError(f"{args.codes} is an .npz archive; give a .npy of integer codes (N, h, w)")
  codes = codes[None] if codes.ndim == 1 else codes.reshape(-1, *codes.shape[-2:]) if codes.ndim == 4 else codes
  info = tokenizers.info(args.tokenizer)
  codes = check_codes(codes, info.vocab_size)
  side = codes.shape[-1] * info.downsample
  batch = min(args.batch_size, len(codes))
  memory.check_fits(
    memory.tokenizer_bytes(info, batch=batch, height=codes.shape[-2] * info.downsample, width=side),
    f"decoding {batch} grid(s) of {codes.shape[-2]}x{codes.shape[-1]} codes",
    batch=batch,
  )
  tok = tokenizers.load(args.tokenizer)
  tmp = files.partial_name(args.out)  # decoded into a temporary folder: a failure leaves no images behind
  files.remove(tmp)
  try:
    os.makedirs(tmp)
    index = 0
    for images in tokenizers.batches(tok.decode, codes, args.batch_size, desc="decoding"):
      for image in images:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(os.path.join(tmp, f"{index:05d}.png"))
        index += 1
    os.makedirs(args.out, exist_ok=True)  # an existing folder keeps its other files; the new images move in
    for name in sorted(os.listdir(tmp)):
      os.replace(os.path.join(tmp, name), os.path.join(args.out, name))
  finally:
    files.remove(tmp)
  print(f"wrote {index} PNG image(s) of {images.shape[1]}x{images.shape[2]} to {args.out}")


def register(commands) -> None:
  """Adds these subcommands to the ``randar-jax`` parser."""
  p = commands.add_parser("tokenize", help="images -> VQ codes (.npy, int32 (N, h, w))")
  p.add_argument("images", nargs="+", help="image files (any format PIL reads)")
  p.add_argument("--tokenizer", required=True, help="converted tokenizer checkpoint directory")
  p.add_argument("--out", required=True, help="output .npy file")
  p.add_argument("--image-size", type=int, help="side after cropping / resizing (default: the tokenizer's native size)")
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
