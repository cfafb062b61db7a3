"""Times the original PyTorch RandAR's ``generate`` on this machine, for ``bench_decode --original``.

    python -m benchmarks.compare_original --randar-checkout ~/src/RandAR --batch 1 --out /tmp/original.json
    python -m benchmarks.compare_original --randar-checkout ~/src/RandAR --batch 16 --out /tmp/original.json
    python -m benchmarks.bench_decode --batch 1 --original /tmp/original.json     # prints vs_original_88

Same shape as bench_decode's default (12x512, 8 heads, 16x16 grid, V 16384), random weights, ``--cfg`` (default
1 -> 4), temperature 1, ``--num-steps`` forwards, the original drawing a random order per image; one untimed
warm-up call, then the median of ``--steps`` calls. Adds (or replaces) the ``batch_B`` entry of ``--out`` (the
format of benchmarks/original_randar_cpu.json). Needs torch and a RandAR checkout (``RandAR/model/randar_gpt.py``);
nothing in the tests needs either. ``bench_decode --original-checkout`` runs this script itself, before and after
its own timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

from benchmarks.common import add_model_args, environment, load_average


def constructor_args(args: argparse.Namespace) -> dict:
  """The original constructor's arguments for the benchmark shape (dropout off: inference)."""
  return dict(
    dim=args.dim,
    n_layer=args.layers,
    n_head=args.heads,
    vocab_size=args.vocab,
    block_size=args.grid**2,
    num_classes=args.classes,
    cls_token_num=1,
    model_type="c2i",
    num_inference_steps=args.num_steps,
    token_dropout_p=0.0,
    resid_dropout_p=0.0,
    ffn_dropout_p=0.0,
    grad_checkpointing=False,
  )


def time_original(checkout: str, args: argparse.Namespace) -> float:
  """images/s of the original's generate at the benchmark's shape."""
  import torch  # noqa: PLC0415 - optional: only this script needs it

  sys.path.insert(0, os.path.abspath(checkout))
  from RandAR.model.randar_gpt import RandARTransformer  # noqa: PLC0415

  torch.manual_seed(0)
  model = RandARTransformer(**constructor_args(args)).eval()
  cond = torch.arange(args.batch) % args.classes
  times = []
  with torch.no_grad():
    for i in range(args.steps + 1):
      start = time.perf_counter()
      # token_order None: the original draws a random order per image, as it does when sampling for FID
      model.generate(cond, None, cfg_scales=args.cfg, num_inference_steps=args.num_steps, temperature=1.0)
      if i:  # the first call warms up
        times.append(time.perf_counter() - start)
  return args.batch / statistics.median(times)


def cfg_scales(text: str) -> tuple[float, float]:
  """'1,4' -> (1.0, 4.0): the original's linear guidance ramp (start = end for a constant scale)."""
  try:
    start, end = (float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected 'start,end' (two numbers), got {text!r}") from None
  return start, end


def check_original(parser: argparse.ArgumentParser, checkout: str) -> None:
  """A clear error unless torch is importable and ``checkout`` holds the original RandAR code."""
  if importlib.util.find_spec("torch") is None:
    parser.error("needs torch to run the original (pip install torch==2.13.0)")
  if not os.path.isfile(os.path.join(checkout, "RandAR", "model", "randar_gpt.py")):
    parser.error(f"{checkout} holds no RandAR/model/randar_gpt.py (clone the RandAR repository there)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--randar-checkout", required=True, help="a RandAR git checkout (holding RandAR/model)")
  parser.add_argument("--out", required=True, help="JSON file to add this batch's numbers to")
  add_model_args(parser, batch=16)  # --steps: timed calls (after one warm-up)
  parser.add_argument("--num-steps", type=int, default=88, help="decode forwards (the parallel schedule)")
  parser.add_argument("--cfg", type=cfg_scales, default=(1.0, 4.0), help="the original's cfg_scales 'start,end'")
  args = parser.parse_args()
  check_original(parser, args.randar_checkout)
  rate = time_original(args.randar_checkout, args)
  table = {"randar": {}}
  if os.path.exists(args.out):
    with open(args.out) as f:
      table = json.load(f)
  import torch  # noqa: PLC0415

  entry = {
    f"images_per_s_{args.num_steps}": round(rate, 4),
    "load_average": load_average(),
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    **environment(),
  }
  table.setdefault("randar", {})[f"batch_{args.batch}"] = entry
  with open(args.out, "w") as f:
    json.dump(table, f, indent=2)
  print(json.dumps({"original": entry, "batch": args.batch}), flush=True)


if __name__ == "__main__":
  main()
