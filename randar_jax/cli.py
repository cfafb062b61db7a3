"""The ``randar-jax`` command line.

randar-jax convert WEIGHTS.safetensors OUT_DIR [--config randar:variant=L]
randar-jax convert vq_ds16_c2i.pt ckpt/vq_llamagen          # tokenizers too (.pt / .bin / .safetensors)
randar-jax pull randar-l [vq-llamagen-16 ...]      (released weights by name: download, convert once, print the dir)
randar-jax pull --list                              (every released checkpoint: family, size, FID, paired tokenizer)
randar-jax info OUT_DIR
randar-jax tokenize IMAGE... --tokenizer ckpt/vq_llamagen --out codes.npy [--image-size 256 --crop adm]
randar-jax detokenize codes.npy --tokenizer ckpt/vq_llamagen --out images/
randar-jax sample CKPT_DIR --out DIR --classes 1,2,3 --num-per-class 4 [--tokenizer TOK]  (the family's defaults)
randar-jax sample CKPT_DIR --out DIR --num-per-class 50 --tokenizer TOK [--png]   (FID: 50k, resumable, multi-host)
randar-jax sample RANDAR_CKPT --out DIR --classes 1,2,3 --steps 32 --cfg 1,3      (RandAR: parallel, any order)
randar-jax sample RAR_CKPT --out DIR --classes 1,2,3 [--cfg powcos:16,2.75 --temperature 1.0]   (RAR, raster)
randar-jax sample LLAMAGEN_CKPT --out DIR --classes 1,2,3 [--cfg 2.0 --cfg-interval 100 --top-k 2000]
randar-jax train --config randar:runlocal --workdir runs/x [--config.optim.lr=1e-4 ...]   (recipes: randar_jax/configs)
randar-jax demo [--out runs/digits] [--order raster]      (digits: train, sample, edit, measure; CPU, minutes)
randar-jax extract IMAGES OUT_DIR --tokenizer CKPT [--aug adm|ten-crop]   (IMAGES: folder, .tar, tfds:NAME)
randar-jax import-codes RANDAR_CODES_DIR OUT_DIR --vocab-size 16384
randar-jax folder-to-tfds IMAGE_FOLDER DATA_DIR
randar-jax orders [--out orders.png] [--grid 16]
randar-jax eval SAMPLES.npz|DIR --ref REF.npz --inception CKPT [--out metrics.json]     (FID, IS, prec., recall)
randar-jax cfg-search --model CKPT --tokenizer TOK --ref REF.npz --inception CKPT --scales 2.0:8.0:0.2 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from randar_jax import families
from randar_jax.utils import profiling


def _convert(args: argparse.Namespace) -> None:
  import dataclasses

  from randar_jax import checkpoint
  from randar_jax.convert import check_output, config_from_spec, convert_params, save_checkpoint

  if not os.path.isfile(args.weights):
    raise FileNotFoundError(f"no such weights file: {args.weights}")
  if not args.check:
    check_output(args.out, overwrite=args.overwrite)  # before minutes of reading
  if args.image_size is not None and args.image_size < 1:
    raise ValueError(f"--image-size must be a positive number of pixels, got {args.image_size}")
  config = config_from_spec(args.config) if args.config else None
  start = time.time()
  params, config = convert_params(args.weights, config, check_only=args.check)
  if args.image_size is not None:
    if families.of(config).kind != "tokenizer":
      raise ValueError(f"--image-size is for tokenizers; {args.weights} holds a {config.FAMILY!r} generator")
    if args.image_size % config.downsample:
      raise ValueError(f"--image-size {args.image_size} is not a multiple of the downsampling {config.downsample}")
    config = dataclasses.replace(config, image_size=args.image_size)
  if args.check:
    print(f"{args.weights}: every key and shape fits {config}")
    return
  out = save_checkpoint(args.out, params, config, overwrite=args.overwrite)
  print(f"wrote {out}: {checkpoint.param_count(params):,} parameters of {config} in {time.time() - start:.1f} s")


def _pull(args: argparse.Namespace) -> None:
  from randar_jax import hub

  if args.list or not args.names:
    print("\n".join(hub.describe(r) for r in hub.RELEASES))
    return
  releases = [hub.get(name) for name in args.names]  # every name checked before any download
  for release in releases:
    directory = hub.pull(release.name, cache_dir=args.cache_dir)
    pair = f" (pair it with --tokenizer {release.tokenizer})" if release.tokenizer else ""
    print(f"{release.name}: {directory}{pair}")


def _info(args: argparse.Namespace) -> None:
  from randar_jax import checkpoint

  print(json.dumps(checkpoint.read_config(args.checkpoint), indent=1))


def generator_config(path: str, flag: str = "checkpoint", family: str | None = None):
  """The config of the generator checkpoint at ``path``, read without loading weights; one clear line when it
  holds a tokenizer (or another model kind) or, with ``family``, another family than the command needs."""
  from randar_jax import checkpoint

  config = families.config_from_dict(checkpoint.read_config(path))
  spec = families.of(config)
  if spec.kind != "generator":
    hint = " (pass it as --tokenizer)" if spec.kind == "tokenizer" else ""
    raise ValueError(f"{flag} {path} holds a {spec.name!r} {spec.kind}, not an image generator{hint}")
  if family is not None and spec.name != family:
    raise ValueError(f"{flag} {path} holds a {spec.name!r} model; this command needs a {family!r} one")
  return config


def check_tokenizer(spec: str | None, config, flag: str = "--tokenizer"):
  """The TokenizerInfo of ``spec`` after checking it against the generator ``config`` (vocabulary), or None."""
  from randar_jax import tokenizers

  if spec is None:
    return None
  tok = tokenizers.info(spec)
  tokenizers.check_fits_model(tok, config, flag)
  return tok


def check_sample_memory(config, settings, batch_size: int, tok=None) -> None:
  """Refuses a batch whose KV cache / logits (and decoded images) would not fit on the device."""
  from randar_jax.utils import memory

  need = memory.generator_bytes(
    config, batch=batch_size, tokens=config.num_tokens, guided=settings.guidance is not None
  )
  if tok is not None:
    side = config.grid_size * tok.downsample
    need = max(need, memory.tokenizer_bytes(tok, batch=batch_size, height=side, width=side))
  memory.check_fits(need, f"sampling a batch of {batch_size}", batch=batch_size)


def check_positive(**flags: int | None) -> None:
  """--name must be >= 1 for each given (not None) flag value."""
  for name, value in flags.items():
    if value is not None and value < 1:
      raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def parse_cfg(spec: str | None, flag: str = "--cfg"):
  """A guidance flag as a Guidance (or None for 'none'), the flag named in the error."""
  from randar_jax.decode.sampling import Guidance

  try:
    return Guidance.parse(spec)
  except ValueError as e:
    raise ValueError(f"{flag}: {e}") from None


def decode_settings(args: argparse.Namespace, config):
  """The family's default DecodeSettings for ``config`` with the sample flags that were given (--steps, --cfg,
  --cfg-interval, --temperature, --top-k, --top-p, --order), checked before any weights are loaded."""
  return families.of(config).decode_settings(
    config,
    steps=args.steps,
    cfg="default" if args.cfg is None else parse_cfg(args.cfg),
    cfg_interval=args.cfg_interval,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    order=args.order,
  )


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
  """The decode flags every sampling command shares; unset flags take the model family's defaults."""
  p.add_argument(
    "--steps",
    type=int,
    help="forward passes (-1: one token each); default: the family's "
    "(RandAR: the paper's parallel schedule, capped at N; RAR and LlamaGen: one token per step)",
  )
  p.add_argument(
    "--cfg",
    help="guidance: 'none', 'S', 'S0,S1' (linear) or 'powcos:S,P'; default: the family's "
    "(RandAR '1,4', RAR the per-size setting, LlamaGen '4')",
  )
  p.add_argument("--cfg-interval", type=float, help="stop guidance after this token (LlamaGen's --cfg-interval)")
  p.add_argument("--temperature", type=float, help="default: the family's (1.0; RAR per size)")
  p.add_argument("--order", choices=["raster", "random"], help="generation order (default: the family's)")
  p.add_argument("--top-k", type=int, help="default: the family's (0 = off; LlamaGen 2000)")
  p.add_argument("--top-p", type=float, help="default: the family's (1.0 = off)")


def _sample(args: argparse.Namespace) -> None:
  import jax

  from randar_jax import checkpoint, sample, sharding, tokenizers
  from randar_jax.decode import batched
  from randar_jax.utils import files

  if args.distributed:  # every process runs this same command; the cluster (TPU slice, SLURM) is auto-detected
    jax.distributed.initialize()

  # Validate everything that can be checked before loading weights or compiling.
  config = generator_config(args.checkpoint)
  if args.model and args.model != config.FAMILY:
    raise ValueError(f"{args.checkpoint} holds a {config.FAMILY!r} model, not {args.model!r} (drop --model or fix it)")
  settings = decode_settings(args, config)
  labels = batched.parse_labels(args.classes, args.num_per_class, config.num_classes, args.num_samples, args.seed)
  check_positive(batch_size=args.batch_size, grid_rows=args.grid_rows, grid_scale=args.grid_scale)
  files.check_output_dir(args.out)
  check_sample_memory(config, settings, args.batch_size, check_tokenizer(args.tokenizer, config))
  job = sample.Job(labels, seed=args.seed, shard_size=args.shard_size, png=args.png and bool(args.tokenizer))
  if args.png and not args.tokenizer:
    raise ValueError("--png needs --tokenizer (token grids have no pixels)")
  tokenizer_id = None
  if args.tokenizer:
    tokenizer_id = args.tokenizer if args.tokenizer.startswith("pixels:") else os.path.abspath(args.tokenizer)
  record = {
    "checkpoint": os.path.abspath(args.checkpoint),
    "tokenizer": tokenizer_id,
    "dtype": args.dtype,
    "settings": sample.settings_record(settings),
  }
  sample.check_manifest(args.out, {**record, **job.record()})  # another run's folder: refused before any work
  mesh = sharding.build_mesh(devices=jax.local_devices())  # each process samples its shards on its own devices
  tokenizer = tokenizers.load(args.tokenizer, mesh=mesh) if args.tokenizer else None
  model = checkpoint.load_model(args.checkpoint, mesh=mesh, **({"dtype": args.dtype} if args.dtype else {}))
  start = time.time()
  with sharding.model_context(mesh):
    sample.run(
      model,
      tokenizer,
      args.out,
      job,
      batch_size=args.batch_size,
      record=record,
      grid_rows=args.grid_rows,
      grid_scale=args.grid_scale,
      **settings.kwargs(),
    )
  if jax.process_index() == 0:
    print(f"sample: {len(labels)} samples in {args.out} ({time.time() - start:.1f} s)")


class _Parser(argparse.ArgumentParser):
  """argparse with its errors (a flag's type, choices, a missing argument) as the one line every error is."""

  def error(self, message: str):
    self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
  console = argv is None  # the console command (not a call from Python)
  argv = sys.argv[1:] if argv is None else list(argv)
  if argv[:1] == ["train"]:  # absl + ml_collections flags (--config.x.y=...): handed over whole
    from randar_jax.train import main as train_main

    train_main.run(["randar-jax train", *argv[1:]])
    return 0
  parser = _Parser(prog="randar-jax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("convert", help="PyTorch weights -> Orbax checkpoint (strict)")
  p.add_argument("weights", help="released weights: .safetensors, or a torch.save .pt / .pth / .bin (read safely)")
  p.add_argument("out", nargs="?", help="output checkpoint directory")
  p.add_argument(
    "--config",
    help="recipe or config file[:args] (randar:variant=L), or a JSON of the original constructor's arguments "
    "[:key=value,...]; inferred from the tensor shapes when omitted",
  )
  p.add_argument("--check", action="store_true", help="only validate keys and shapes, write nothing")
  p.add_argument("--overwrite", action="store_true", help="replace an existing converted checkpoint (atomically)")
  p.add_argument("--image-size", type=int, help="tokenizers: the native image side to record (default 256)")
  p.set_defaults(run=_convert)

  p = commands.add_parser("pull", help="released weights by name: download (Hugging Face cache), convert once")
  p.add_argument("names", nargs="*", metavar="NAME", help="released checkpoints (see --list)")
  p.add_argument("--list", action="store_true", help="list the released checkpoints")
  p.add_argument("--cache-dir", help="Hugging Face hub cache (default: $HF_HUB_CACHE or $HF_HOME/hub)")
  p.set_defaults(run=_pull)

  p = commands.add_parser("info", help="print a checkpoint's config")
  p.add_argument("checkpoint")
  p.set_defaults(run=_info)

  p = commands.add_parser("sample", help="class-conditional sampling with the family's decoder and defaults")
  p.add_argument("checkpoint", help="Orbax checkpoint directory (from convert or training) or a released name")
  p.add_argument(
    "--model", choices=families.names("generator"), help="expected model family (default: the checkpoint's)"
  )
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--classes", help="class ids, e.g. '1,5,9' or '0-9'")
  p.add_argument("--num-per-class", type=int, help="samples per listed class (every class if none listed)")
  p.add_argument("--num-samples", type=int, help="this many samples with uniformly random classes")
  add_sampling_flags(p)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.add_argument("--tokenizer", help="tokenizer checkpoint directory (or pixels:N): also write images")
  p.add_argument("--png", action="store_true", help="also write one PNG per sample (OUT/png/CLASS/INDEX.png)")
  p.add_argument("--grid-rows", type=int, default=10, help="classes shown in grid.png (one row each)")
  p.add_argument("--grid-scale", type=int, default=1, help="upscale grid.png (e.g. 8 for tiny images)")
  p.add_argument(
    "--shard-size", type=int, default=256, help="samples per shard: a killed run resumes from its last finished shard"
  )
  p.add_argument(
    "--distributed",
    action="store_true",
    help="call jax.distributed.initialize() first (TPU pod slice, SLURM): each process samples its shards "
    "into the shared --out, process 0 assembles",
  )
  p.add_argument("--profile", metavar="DIR", help="write a jax.profiler trace of the command to DIR (TensorBoard)")
  p.set_defaults(run=_sample)

  commands.add_parser("train", help="train from a recipe (randar_jax/configs) or config file; --help for flags")

  # Each package owns its subcommands (tokenize, extract, inpaint, eval, ...).
  from randar_jax import app, demo
  from randar_jax.data import commands as data_commands
  from randar_jax.eval import commands as eval_commands
  from randar_jax.tokenizers import commands as tokenizer_commands
  from randar_jax.zeroshot import commands as zeroshot_commands

  for group in (demo, app, tokenizer_commands, data_commands, zeroshot_commands, eval_commands):
    group.register(commands)

  args = parser.parse_args(argv)
  if args.command == "convert" and not args.check and not args.out:
    parser.exit(2, "randar-jax convert: error: convert needs an output directory (or --check)\n")
  try:
    with profiling.trace(getattr(args, "profile", None)):  # commands with --profile DIR (sample)
      args.run(args)
  except Exception as e:  # clear one-line errors for bad input and the environment; bugs keep their traceback
    message = user_error(e)
    if message is None:
      raise
    print(f"randar-jax {args.command}: error: {message}", file=sys.stderr)
    if console:  # no library thread (Orbax's) may keep a failed process alive
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(2)
    return 2
  return 0


def user_error(e: BaseException) -> str | None:
  """The one line to show for a user or environment error (bad input, file system, out of memory); None for a
  bug, which keeps its traceback."""
  if isinstance(e, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError)) and not isinstance(
    e, UnicodeError
  ):
    text = str(e)
  elif isinstance(e, OSError):  # permission, read-only or full file system: say what and where
    what = e.strerror or str(e)
    text = f"{what}: {e.filename}" if e.filename else what
  elif isinstance(e, MemoryError):
    text = "out of host memory; try a smaller --batch-size"
  elif "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):  # XLA's allocation failures
    text = f"out of device memory ({str(e).splitlines()[0][:200]}); try a smaller --batch-size"
  else:
    return None
  return " ".join(text.split())  # one line


if __name__ == "__main__":
  sys.exit(main())
