"""``randar-jax eval`` and ``randar-jax cfg-search``.

    randar-jax eval samples.npz --ref VIRTUAL_imagenet256_labeled.npz --inception ckpt/inception --out metrics.json
    randar-jax eval samples/ --ref ref_images/ --inception pt_inception-2015-12-05-6726825d.pth --no-pr
    randar-jax cfg-search --model ckpt/randar_l --tokenizer ckpt/vq --ref VIRTUAL_imagenet256_labeled.npz \\
        --inception ckpt/inception --scales 2.0:8.0:0.2 --num-samples 10000 --final-samples 50000 --out runs/cfg

SAMPLES: ADM ``.npz`` files (``arr_0``) and / or folders of images (several are read as one set, e.g. the
per-process parts of a multi-host run). REF: an ADM reference batch, a statistics ``.npz`` written by
``--save-ref`` / the CFG search, an ``.npz`` of uint8 images or a folder. ``--features NAME:ARG`` replaces the
Inception by a registered extractor (``randar_jax.eval.extractors.register``). Use ``--preprocess tf1`` to match
the TF graph's resize when comparing with statistics made by the ADM evaluator.
"""

from __future__ import annotations

import argparse
import json
import os


def _extractor(args: argparse.Namespace):
  from randar_jax.eval import extractors

  if (args.inception is None) == (args.features is None):
    raise ValueError("give the Inception weights (--inception CKPT or the pytorch-fid .pth) or --features NAME:ARG")
  return extractors.load(args.features or args.inception, preprocessing=args.preprocess)


def _check_common(args: argparse.Namespace) -> None:
  """The flags eval and cfg-search share, checked before any network is loaded."""
  from randar_jax import cli
  from randar_jax.utils import files

  cli.check_positive(batch_size=args.batch_size)
  if (args.inception is None) == (args.features is None):
    raise ValueError("give the Inception weights (--inception CKPT or the pytorch-fid .pth) or --features NAME:ARG")
  if not os.path.exists(args.ref):
    raise FileNotFoundError(f"no reference at --ref {args.ref}")
  if getattr(args, "save_ref", None) and not os.path.isfile(args.save_ref):
    files.check_output_file(args.save_ref, ".npz", "--save-ref")


def _eval(args: argparse.Namespace) -> None:
  from randar_jax.eval import evaluate, samples
  from randar_jax.utils import files

  _check_common(args)
  if args.out:
    files.check_output_file(args.out, flag="--out")
  images = samples.open_images(args.samples)  # validate the inputs before loading any network
  net = _extractor(args)
  reference = evaluate.reference_statistics(
    args.ref, net, batch_size=args.batch_size, need_features=not args.no_pr, cache=args.save_ref
  )
  stats = evaluate.image_statistics(
    net, images, batch_size=args.batch_size, keep_features=not args.no_pr, desc="sample features"
  )
  result = {
    **evaluate.compare(stats, reference, precision_recall=not args.no_pr),
    "samples": [os.path.abspath(p) for p in args.samples],
    "reference": os.path.abspath(args.ref),
  }
  text = json.dumps(result, indent=1)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with files.atomic_path(args.out) as tmp, open(tmp, "w") as f:
      f.write(text + "\n")
  print(text)


def _cfg_search(args: argparse.Namespace) -> None:
  import jax

  from randar_jax import checkpoint, cli, families, sharding, tokenizers
  from randar_jax.eval import cfg_search, evaluate
  from randar_jax.utils import files, memory

  _check_common(args)
  files.check_output_dir(args.out)
  config = cli.generator_config(args.model, "--model")  # fail fast on a wrong directory
  tok = cli.check_tokenizer(args.tokenizer, config)
  # the family's sampling recipe, with the flags given (the guidance schedule's scale is what the search varies)
  settings = families.of(config).decode_settings(
    config, steps=args.steps, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p
  )
  default_schedule = settings.guidance.schedule_name if settings.guidance is not None else "linear"
  search = cfg_search.SearchConfig(
    scales=cfg_search.parse_scales(args.scales),
    num_samples=args.num_samples,
    final_samples=args.final_samples,
    steps=settings.num_steps,
    batch_size=args.batch_size,
    seed=args.seed,
    schedule=args.schedule or default_schedule,
    temperature=settings.sampling.temperature,
    top_k=settings.sampling.top_k,
    top_p=settings.sampling.top_p,
    save_samples=args.save_samples,
  )
  side = config.grid_size * tok.downsample
  need = max(
    memory.generator_bytes(config, batch=search.batch_size, tokens=config.num_tokens, guided=True),
    memory.tokenizer_bytes(tok, batch=search.batch_size, height=side, width=side),
  )
  memory.check_fits(need, f"sampling batches of {search.batch_size}", batch=search.batch_size)
  mesh = sharding.build_mesh(devices=jax.local_devices())  # each process samples on its own devices
  tokenizer = tokenizers.load(args.tokenizer, mesh=mesh)
  net = _extractor(args)
  inputs = {"model": os.path.abspath(args.model), "reference": os.path.abspath(args.ref)}
  cfg_search.prepare(args.out, search, net.name, inputs)  # refuse another search's directory before its cache
  reference = cfg_search.on_lead(
    evaluate.reference_statistics,
    args.ref,
    net,
    batch_size=args.batch_size,
    cache=os.path.join(args.out, "reference_stats.npz"),
  )
  model = checkpoint.load_model(args.model, mesh=mesh, **({"dtype": args.dtype} if args.dtype else {}))
  cfg_search.run(model, tokenizer, net, reference, args.out, search, mesh=mesh, inputs=inputs)


def _add_extractor(p: argparse.ArgumentParser) -> None:
  p.add_argument("--inception", help="FID Inception: converted checkpoint directory or pt_inception-...-6726825d.pth")
  p.add_argument("--features", help="a registered feature extractor NAME:ARG instead of the Inception")
  p.add_argument(
    "--preprocess",
    default="pytorch_fid",
    choices=["pytorch_fid", "tf1"],
    help="Inception resize: pytorch_fid (torch bilinear, default) or tf1 (the ADM evaluator's TF graph)",
  )
  p.add_argument("--batch-size", type=int, default=64)


def register(commands) -> None:
  """Adds ``eval`` and ``cfg-search`` to the ``randar-jax`` parser."""
  p = commands.add_parser("eval", help="FID / IS / precision / recall of samples against a reference (JSON)")
  p.add_argument("samples", nargs="+", help="ADM .npz (arr_0) and / or folders of images")
  p.add_argument("--ref", required=True, help="ADM reference batch, statistics .npz, .npz of images or folder")
  _add_extractor(p)
  p.add_argument("--out", help="also write the metrics JSON here")
  p.add_argument("--no-pr", action="store_true", help="skip precision / recall (keeps no features in memory)")
  p.add_argument("--save-ref", help="save the reference statistics here (reused when the file exists)")
  p.set_defaults(run=_eval)

  p = commands.add_parser("cfg-search", help="FID over a grid of guidance scales (resumable, multi-host), plot")
  p.add_argument("--model", required=True, help="generator checkpoint directory")
  p.add_argument("--tokenizer", required=True, help="tokenizer checkpoint directory (or pixels:N)")
  p.add_argument("--ref", required=True, help="ADM reference batch, statistics .npz, .npz of images or folder")
  _add_extractor(p)
  p.add_argument("--out", required=True, help="output directory (results, plot; re-run to resume)")
  p.add_argument("--scales", default="2.0:8.0:0.2", help="START:STOP:STEP (inclusive) or a list '2,3,4'")
  p.add_argument(
    "--schedule",
    help="linear (1 -> s), constant, or powcos:POWER; default: the family's (RandAR "
    "linear, RAR powcos with its per-size power, LlamaGen constant)",
  )
  p.add_argument("--num-samples", type=int, default=10000, help="samples per scale")
  p.add_argument("--final-samples", type=int, default=0, help="samples of a final run at the best scale (0: none)")
  p.add_argument("--save-samples", action="store_true", help="write the final run's images as ADM .npz")
  p.add_argument("--steps", type=int, help="forward passes (default: the family's)")
  p.add_argument("--temperature", type=float, help="default: the family's")
  p.add_argument("--top-k", type=int, help="default: the family's")
  p.add_argument("--top-p", type=float, help="default: the family's")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype (default: the checkpoint's)")
  p.set_defaults(run=_cfg_search)
