"""The ``randar-jax`` command line.

    randar-jax convert WEIGHTS.safetensors OUT_DIR [--config configs/randar.py:variant=L]
    randar-jax info OUT_DIR
    randar-jax sample CKPT_DIR --out DIR --classes 1,2,3 --num-per-class 4 --steps 88 --cfg 1,4 [--tokenizer TOK]
    randar-jax demo
"""

from __future__ import annotations

import argparse
import json
import os
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


def _sample(args: argparse.Namespace) -> None:
  import numpy as np

  from randar_jax import checkpoint, models
  from randar_jax.decode import batched
  from randar_jax.decode.sampling import Guidance, Sampling
  from randar_jax.utils import images

  # Validate everything that can be checked before loading weights or compiling.
  config = models.config_from_dict(checkpoint.read_config(args.checkpoint))
  labels = batched.parse_labels(args.classes, args.num_per_class, config.num_classes, args.num_samples, args.seed)
  guidance = Guidance.parse(args.cfg)
  sampling = Sampling.make(args.temperature, args.top_k, args.top_p)
  if not (args.steps == -1 or 1 <= args.steps <= config.num_tokens):
    raise ValueError(f"--steps must be in [1, {config.num_tokens}] (or -1), got {args.steps}")
  if args.batch_size < 1:
    raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
  tokenizer = checkpoint.load_model(args.tokenizer) if args.tokenizer else None
  model = checkpoint.load_model(args.checkpoint, **({"dtype": args.dtype} if args.dtype else {}))
  tokens, orders = batched.sample_labels(model, labels, batch_size=args.batch_size, seed=args.seed,
                                         num_steps=args.steps, sampling=sampling, guidance=guidance)
  os.makedirs(args.out, exist_ok=True)
  np.savez(os.path.join(args.out, "tokens.npz"), tokens=tokens, labels=labels, orders=orders)
  print(f"wrote {len(tokens)} token grids to {os.path.join(args.out, 'tokens.npz')}")
  if tokenizer is None:
    images.save_grid(images.token_map(tokens[:64], config.vocab_size), os.path.join(args.out, "tokens.png"))
    return
  pictures = np.concatenate([np.asarray(tokenizer.decode(tokens[i: i + args.batch_size]))
                             for i in range(0, len(tokens), args.batch_size)])
  images.save_grid(pictures[:64], os.path.join(args.out, "grid.png"))
  images.save_adm_npz(pictures, os.path.join(args.out, "samples.npz"), labels=labels)
  print(f"wrote {os.path.join(args.out, 'grid.png')} and samples.npz (ADM format, {pictures.shape})")


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
  p.add_argument("weights", help="released .safetensors file")
  p.add_argument("out", nargs="?", help="output checkpoint directory")
  p.add_argument("--config", help="config file[:args]; inferred from the tensor shapes when omitted")
  p.add_argument("--check", action="store_true", help="only validate keys and shapes, write nothing")
  p.set_defaults(run=_convert)

  p = commands.add_parser("info", help="print a checkpoint's config")
  p.add_argument("checkpoint")
  p.set_defaults(run=_info)

  p = commands.add_parser("sample", help="class-conditional sampling with parallel decoding")
  p.add_argument("checkpoint", help="Orbax checkpoint directory (from convert or training)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--classes", help="class ids, e.g. '1,5,9' or '0-9'")
  p.add_argument("--num-per-class", type=int, help="samples per listed class (every class if none listed)")
  p.add_argument("--num-samples", type=int, help="this many samples with uniformly random classes")
  p.add_argument("--steps", type=int, default=88, help="forward passes (tokens for one-by-one: -1)")
  p.add_argument("--cfg", default="1,4", help="guidance: 'none', 'S', 'S0,S1' (linear) or 'powcos:S,P'")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--top-k", type=int, default=0)
  p.add_argument("--top-p", type=float, default=1.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.add_argument("--tokenizer", help="tokenizer checkpoint directory: also write images")
  p.set_defaults(run=_sample)

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
