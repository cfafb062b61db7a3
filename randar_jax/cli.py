"""The ``randar-jax`` command line.

    randar-jax convert WEIGHTS.safetensors OUT_DIR [--config configs/randar.py:variant=L]
    randar-jax info OUT_DIR
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
