"""Greedy tokens of ours against the original PyTorch RandAR at the benchmark's shape (not the tiny fixture).

    python -m benchmarks.greedy_vs_original --randar-checkout ~/src/RandAR            # 12x512, 88 steps, CFG 1 -> 4
    python -m benchmarks.greedy_vs_original --randar-checkout ~/src/RandAR --num-steps 32 --batch 4

Builds the original ``RandARTransformer`` with random weights (its output head, zero at initialisation, drawn
like the other linears so greedy decoding is not a tie), converts its state dict with our converter (a ``.pt``
through our safe pickle reader, as a user converts released weights), and decodes the same labels and
generation orders greedily (top-k 1) in both, at float32 with ``jax.default_matmul_precision('highest')``.
Prints one JSON line: tokens equal, their count, and per sample the first generation step where they differ.
Needs torch and a RandAR checkout; nothing in the tests needs either (the tests check greedy parity on the golden
fixtures made by the same code).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import jax
import numpy as np

from benchmarks.common import add_model_args, report
from benchmarks.compare_original import cfg_scales, check_original, constructor_args


def original_tokens(checkout: str, args: argparse.Namespace, orders: np.ndarray, state_path: str) -> np.ndarray:
  """The original's greedy tokens (B, N) in raster order; saves its state dict to ``state_path``."""
  import torch  # noqa: PLC0415 - optional: only this script needs it

  sys.path.insert(0, os.path.abspath(checkout))
  from RandAR.model.randar_gpt import RandARTransformer  # noqa: PLC0415

  torch.manual_seed(args.seed)
  model = RandARTransformer(**constructor_args(args)).eval()
  torch.nn.init.normal_(model.output.weight, std=model.initializer_range)
  torch.save(model.state_dict(), state_path)
  cond = torch.arange(args.batch) % args.classes
  with torch.no_grad():
    out = model.generate(
      cond, torch.from_numpy(orders), cfg_scales=args.cfg, num_inference_steps=args.num_steps, top_k=1
    )
  return out.numpy()


def our_tokens(args: argparse.Namespace, orders: np.ndarray, state_path: str) -> np.ndarray:
  """Our greedy tokens (B, N) in raster order from the converted state dict."""
  from randar_jax import checkpoint, sharding  # noqa: PLC0415
  from randar_jax.convert import convert_params  # noqa: PLC0415
  from randar_jax.decode import randar as randar_decode  # noqa: PLC0415
  from randar_jax.decode.sampling import Guidance, Sampling  # noqa: PLC0415
  from randar_jax.models.randar import RandARConfig  # noqa: PLC0415

  config = RandARConfig.from_torch_args(constructor_args(args))
  params, config = convert_params(state_path, config, progress=False)
  model = checkpoint.model_with_params(config, params)
  with sharding.model_context():
    start, end = args.cfg
    guidance = None if end <= 1.0 else Guidance.linear(start, end)  # the original guides only when end > 1
    with jax.default_matmul_precision("highest"):
      out = randar_decode.generate(
        model,
        np.arange(args.batch) % args.classes,
        jax.random.key(0),
        num_steps=args.num_steps,
        order=orders,
        guidance=guidance,
        sampling=Sampling.make(top_k=1),
      )
  return np.asarray(out.tokens)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--randar-checkout", required=True, help="a RandAR git checkout (holding RandAR/model)")
  add_model_args(parser, batch=2)
  parser.add_argument("--num-steps", type=int, default=88, help="decode forwards (the parallel schedule)")
  parser.add_argument("--cfg", type=cfg_scales, default=(1.0, 4.0), help="cfg_scales 'start,end' (linear)")
  parser.add_argument("--seed", type=int, default=0, help="weights and generation orders")
  args = parser.parse_args()
  check_original(parser, args.randar_checkout)
  n = args.grid**2
  orders = np.stack([np.random.default_rng(args.seed + b).permutation(n) for b in range(args.batch)])
  with tempfile.TemporaryDirectory() as tmp:
    state_path = os.path.join(tmp, "original.pt")
    theirs = original_tokens(args.randar_checkout, args, orders, state_path)
    ours = our_tokens(args, orders, state_path)
  in_order_theirs = np.take_along_axis(theirs, orders, axis=1)  # generation order: step i is cell orders[b, i]
  in_order_ours = np.take_along_axis(ours, orders, axis=1)
  differ = in_order_theirs != in_order_ours
  report(
    {
      "greedy_equal": bool(not differ.any()),
      "tokens": int(differ.size),
      "tokens_differing": int(differ.sum()),
      "first_difference_step": [int(np.argmax(row)) if row.any() else None for row in differ],
      "num_steps": args.num_steps,
      "cfg": list(args.cfg),
      "batch": args.batch,
      "shape": f"{args.layers}x{args.dim}, {args.heads} heads, {args.grid}x{args.grid} grid, V {args.vocab}",
    }
  )


if __name__ == "__main__":
  main()
