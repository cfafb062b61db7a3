"""The ``randar-jax`` command line.

    randar-jax convert WEIGHTS.safetensors OUT_DIR [--config configs/randar.py:variant=L]
    randar-jax convert vq_ds16_c2i.pt ckpt/vq_llamagen          # tokenizers too (.pt / .bin / .safetensors)
    randar-jax info OUT_DIR
    randar-jax tokenize IMAGE... --tokenizer ckpt/vq_llamagen --out codes.npy [--image-size 256 --crop adm]
    randar-jax detokenize codes.npy --tokenizer ckpt/vq_llamagen --out images/
    randar-jax demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _convert(args: argparse.Namespace) -> None:
  from randar_jax import checkpoint, models
  from randar_jax.config_io import load_config
  from randar_jax.convert import convert_params

  config = models.config_from_dict(load_config(args.config).model.to_dict()) if args.config else None
  start = time.time()
  params, config = convert_params(args.weights, config, check_only=args.check)
  if args.check:
    print(f"{args.weights}: every key and shape fits {config}")
    return
  out = checkpoint.save_params(args.out, params, config.to_dict())
  print(f"wrote {out}: {checkpoint.param_count(params):,} parameters of {config} in {time.time() - start:.1f} s")


def _info(args: argparse.Namespace) -> None:
  from randar_jax import checkpoint
  print(json.dumps(checkpoint.read_config(args.checkpoint), indent=1))


def _tokenize(args: argparse.Namespace) -> None:
  import os

  import numpy as np

  from randar_jax import tokenizers
  from randar_jax.tokenizers.preprocess import load_image

  def load(paths):
    images = [load_image(p, args.image_size, args.crop) for p in paths]
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
  print(f"wrote {args.out}: codes {codes.shape} {codes.dtype} in [0, {tok.vocab_size}) for {len(args.images)} "
        f"image(s)")


def _detokenize(args: argparse.Namespace) -> None:
  import os

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


def _demo(args: argparse.Namespace) -> None:
  """Placeholder until the digits demo lands: builds a tiny RandAR and runs one teacher-forced forward."""
  import jax
  import jax.numpy as jnp

  from randar_jax import checkpoint, models, sharding
  from randar_jax.models.randar import RandARConfig

  config = RandARConfig.variant("tiny", "maskgit", grid_size=8, num_classes=10)
  with sharding.model_context():
    model = models.build(config)
    key = jax.random.key(0)
    tokens = jax.random.randint(key, (2, config.num_tokens), 0, config.vocab_size)
    order = jax.vmap(lambda k: jax.random.permutation(k, config.num_tokens))(jax.random.split(key, 2))
    logits = model(tokens, jnp.array([1, 2]), order)
  print(f"tiny RandAR ({checkpoint.param_count(checkpoint.model_params(model)):,} parameters): "
        f"logits {tuple(logits.shape)} on {jax.device_count()} {jax.default_backend()} device(s)")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="randar-jax", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("convert", help="PyTorch weights -> Orbax checkpoint (strict)")
  p.add_argument("weights", help="released weights: .safetensors, or a torch.save .pt / .pth / .bin (read safely)")
  p.add_argument("out", nargs="?", help="output checkpoint directory")
  p.add_argument("--config", help="config file[:args]; inferred from the tensor shapes when omitted")
  p.add_argument("--check", action="store_true", help="only validate keys and shapes, write nothing")
  p.set_defaults(run=_convert)

  p = commands.add_parser("info", help="print a checkpoint's config")
  p.add_argument("checkpoint")
  p.set_defaults(run=_info)

  p = commands.add_parser("tokenize", help="images -> VQ codes (.npy, int32 (N, h, w))")
  p.add_argument("images", nargs="+", help="image files (any format PIL reads)")
  p.add_argument("--tokenizer", required=True, help="converted tokenizer checkpoint directory")
  p.add_argument("--out", required=True, help="output .npy file")
  p.add_argument("--image-size", type=int, default=256, help="side after cropping / resizing (default 256)")
  p.add_argument("--crop", default="adm", choices=["adm", "resize", "none"],
                 help="adm: ADM center crop (RandAR's preprocessing, default); resize: squash to a square; "
                      "none: as stored (sides must be multiples of 16)")
  p.add_argument("--batch-size", type=int, default=8)
  p.set_defaults(run=_tokenize)

  p = commands.add_parser("detokenize", help="VQ codes (.npy) -> PNG images")
  p.add_argument("codes", help=".npy of integer codes (N, h, w), (N, h * w) raster, or (N, views, h, w)")
  p.add_argument("--tokenizer", required=True, help="converted tokenizer checkpoint directory")
  p.add_argument("--out", required=True, help="output directory for 00000.png, 00001.png, ...")
  p.add_argument("--batch-size", type=int, default=8)
  p.set_defaults(run=_detokenize)

  p = commands.add_parser("demo", help="build a tiny model and run it (no download)")
  p.set_defaults(run=_demo)

  args = parser.parse_args(argv)
  if args.command == "convert" and not args.check and not args.out:
    parser.error("convert needs an output directory (or --check)")
  try:
    args.run(args)
  except (ValueError, FileNotFoundError) as e:  # clear one-line errors for bad input; bugs keep their traceback
    print(f"randar-jax {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
