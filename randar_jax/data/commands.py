"""``randar-jax extract | import-codes | folder-to-tfds | orders``: building the pre-tokenised training data.

randar-jax extract IMAGES OUT_DIR --tokenizer CKPT [--aug adm|ten-crop]   (IMAGES: folder, .tar, tfds:NAME)
randar-jax import-codes RANDAR_CODES_DIR OUT_DIR --vocab-size 16384
randar-jax folder-to-tfds IMAGE_FOLDER DATA_DIR
randar-jax orders [--out orders.png] [--grid 16]
"""

from __future__ import annotations

import argparse
import time


def _add_process_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--process-index", type=int, help="this process's slice (default: jax.process_index())")
  p.add_argument("--process-count", type=int, help="number of slices (default: jax.process_count())")


def _process_slice(args: argparse.Namespace) -> dict:
  import jax

  index = jax.process_index() if args.process_index is None else args.process_index
  count = jax.process_count() if args.process_count is None else args.process_count
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"--process-index must be in [0, --process-count) with --process-count >= 1, got {index}, {count}")
  return {"process_index": index, "process_count": count}


def _check_flags(args: argparse.Namespace, *names: str) -> None:
  """Each named integer flag (``batch_size`` -> --batch-size) must be >= 1; the output a folder that can be made."""
  from randar_jax.cli import check_positive
  from randar_jax.utils import files

  check_positive(**{name: getattr(args, name) for name in names})
  files.check_output_dir(args.out, "OUT_DIR")


def _extract(args: argparse.Namespace) -> None:
  import os

  import jax

  from randar_jax import sharding, tokenizers
  from randar_jax.data import extract

  # Checks up front: flags, the tokenizer's config (not its weights) and the image size it can take.
  _check_flags(args, "image_size", "batch_size", "shard_size", "workers")
  _process_slice(args)
  info = tokenizers.info(args.tokenizer)
  args.image_size = args.image_size or info.image_size
  if args.image_size is None:
    raise ValueError(f"--tokenizer {args.tokenizer} has no native image size: give --image-size")
  if args.image_size % info.downsample:
    raise ValueError(
      f"--image-size {args.image_size} is not a multiple of the tokenizer's downsampling factor {info.downsample}"
    )
  if not args.images.startswith("tfds:") and not os.path.exists(args.images):
    raise FileNotFoundError(
      f"no images at {args.images} (a class-folder tree, .tar, TFDS build directory or tfds:NAME)"
    )
  images = extract.open_images(args.images, split=args.split, data_dir=args.data_dir)
  # Local devices only: each process encodes its own images, independently of the others.
  tokenizer = tokenizers.load(args.tokenizer, mesh=sharding.build_mesh(devices=jax.local_devices()))
  start = time.time()
  written = extract.extract(
    images,
    tokenizer,
    args.out,
    aug=args.aug,
    image_size=args.image_size,
    batch_size=args.batch_size,
    shard_size=args.shard_size,
    on_error=args.on_error,
    workers=args.workers,
    **_process_slice(args),
    description={
      "source": args.images if args.images.startswith("tfds:") else os.path.abspath(args.images),
      "split": args.split,
      "tokenizer": os.path.abspath(args.tokenizer),
    },
  )
  print(f"wrote {len(written)} shards of {len(images)} inputs to {args.out} in {time.time() - start:.1f} s")


def _import_codes(args: argparse.Namespace) -> None:
  import os

  from randar_jax.data import extract

  _check_flags(args, "vocab_size", "shard_size")
  _process_slice(args)
  if not os.path.isdir(args.codes):
    raise FileNotFoundError(f"no codes folder at {args.codes} (RandAR's {{label}}/{{index}}.npy layout)")
  written = extract.import_randar_codes(
    args.codes,
    args.out,
    vocab_size=args.vocab_size,
    shard_size=args.shard_size,
    on_error=args.on_error,
    **_process_slice(args),
  )
  print(f"wrote {len(written)} shards to {args.out}")


def _folder_to_tfds(args: argparse.Namespace) -> None:
  from randar_jax.data import tfds_folder

  path = tfds_folder.build(args.folder, args.data_dir, split=args.split, on_error=args.on_error)
  print(f"TFDS dataset (array_record) in {path}; extract it with: randar-jax extract {path} OUT --tokenizer CKPT")


def _orders(args: argparse.Namespace) -> None:
  from randar_jax.data import orders

  names = orders.ORDERS if args.all else orders.RAR_ORDERS
  print(f"wrote {orders.plot_orders(names, args.grid, args.out)}")


def register(commands) -> None:
  """Adds these subcommands to the ``randar-jax`` parser."""
  p = commands.add_parser("extract", help="encode images into ArrayRecord shards of VQ codes (resumable)")
  p.add_argument("images", help="class-folder tree, uncompressed .tar, TFDS build directory or tfds:NAME")
  p.add_argument("out", help="output codes directory")
  p.add_argument("--tokenizer", required=True, help="tokenizer checkpoint directory")
  p.add_argument(
    "--aug",
    default="adm",
    choices=["adm", "ten-crop"],
    help="adm: centre crop + flip (RandAR's released models); ten-crop: LlamaGen/RAR",
  )
  p.add_argument("--image-size", type=int, help="side after cropping (default: the tokenizer's native size)")
  p.add_argument("--batch-size", type=int, default=64, help="images per encoder call")
  p.add_argument("--shard-size", type=int, default=1000, help="images per output shard")
  p.add_argument("--split", default="train", help="TFDS split")
  p.add_argument("--data-dir", help="TFDS data_dir for tfds:NAME")
  p.add_argument("--workers", type=int, default=8, help="image decoding threads")
  p.add_argument("--on-error", default="skip", choices=["skip", "fail"], help="what to do with unreadable images")
  _add_process_flags(p)
  p.set_defaults(run=_extract)

  p = commands.add_parser("import-codes", help="RandAR's published {label}/{index}.npy codes -> ArrayRecord shards")
  p.add_argument("codes", help="e.g. imagenet-llamagen-adm-256_codes/")
  p.add_argument("out")
  p.add_argument("--vocab-size", type=int, required=True, help="16384 (LlamaGen VQ) or 1024 (MaskGIT VQGAN)")
  p.add_argument("--shard-size", type=int, default=10000)
  p.add_argument("--on-error", default="fail", choices=["skip", "fail"])
  _add_process_flags(p)
  p.set_defaults(run=_import_codes)

  p = commands.add_parser("folder-to-tfds", help="class-folder tree -> TFDS array_record dataset (no TensorFlow)")
  p.add_argument("folder")
  p.add_argument("data_dir")
  p.add_argument("--split", default="train")
  p.add_argument("--on-error", default="skip", choices=["skip", "fail"])
  p.set_defaults(run=_folder_to_tfds)

  p = commands.add_parser("orders", help="PNG of the generation orders (RAR's six scan orders by default)")
  p.add_argument("--out", default="orders.png")
  p.add_argument("--grid", type=int, default=16)
  p.add_argument("--all", action="store_true", help="also the random and hierarchical orders")
  p.set_defaults(run=_orders)
