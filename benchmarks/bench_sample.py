"""``randar-jax sample`` end to end (decode + VQ decode + shard and npz writing, resumable layout) against the
decode loop alone, and peak host memory for two sample counts an order of magnitude apart (random weights).

    python -m benchmarks.bench_sample                                # CPU default: RandAR 4x256, grid 8, 16 steps
    python -m benchmarks.bench_sample --layers 24 --dim 1024 --heads 16 --grid 16 --steps 88 --batch 64 --count 5000

Prints one JSON line: images/s of the decode loop alone (tokens only), of decode + VQ decode (pixels fetched to the
host, not written) and of ``sample.run`` (images in shards, then tokens.npz, grid.png and samples.npz assembled),
the ratios, and the peak RSS of two fresh processes
sampling ``--count`` and 10 x ``--count`` images (and their ratio: flat when the host work streams).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import report
from randar_jax import families, sample, sharding
from randar_jax.decode import batched
from randar_jax.decode.sampling import Guidance
from randar_jax.models.randar import RandARConfig
from randar_jax.tokenizers.vq_llamagen import LlamaGenVQConfig


def build(args):
  config = RandARConfig(
    vocab_size=args.vocab, dim=args.dim, n_layer=args.layers, n_head=args.heads, grid_size=args.grid, num_classes=1000
  )
  with sharding.model_context(sharding.build_mesh()):
    return families.build(config), families.build(LlamaGenVQConfig(codebook_size=args.vocab, ch=args.vq_ch))


def settings(args) -> dict:
  return dict(num_steps=args.steps, guidance=Guidance.linear(1.0, 4.0))


def end_to_end(model, vq, args, count: int, out: str) -> float:
  job = sample.Job(np.arange(count) % 1000, seed=0, shard_size=args.shard)
  start = time.perf_counter()
  sample.run(model, vq, out, job, batch_size=args.batch, record={}, progress=False, **settings(args))
  return time.perf_counter() - start


def decode_alone(model, args, count: int, vq=None) -> float:
  """Seconds to decode ``count`` token grids (and, given ``vq``, their pixels, fetched to the host unwritten)."""
  start = time.perf_counter()
  for b in batched.decode_batches(model, np.arange(count) % 1000, batch_size=args.batch, **settings(args)):
    np.asarray(b.tokens if vq is None else vq.decode(b.tokens))
  return time.perf_counter() - start


def child(args) -> None:
  """Samples --count images end to end in this fresh process and prints its peak RSS (MiB)."""
  model, vq = build(args)
  with sharding.model_context(sharding.build_mesh()), tempfile.TemporaryDirectory() as out:
    end_to_end(model, vq, args, args.count, out)
  print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def rss(args, count: int) -> float:
  argv = [sys.executable, "-m", "benchmarks.bench_sample", "--child", *_flags(args, count)]
  out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]


def _flags(args, count: int) -> list[str]:
  keys = ("layers", "dim", "heads", "vocab", "grid", "steps", "batch", "shard", "vq_ch")
  return [*(v for k in keys for v in (f"--{k.replace('_', '-')}", str(getattr(args, k)))), "--count", str(count)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--vocab", type=int, default=1024)
  parser.add_argument("--grid", type=int, default=8)
  parser.add_argument("--steps", type=int, default=16)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--shard", type=int, default=256)
  parser.add_argument("--vq-ch", type=int, default=32, help="VQ decoder width (LlamaGen's is 128)")
  parser.add_argument("--count", type=int, default=128, help="images per timed run")
  parser.add_argument("--rss-count", type=int, default=32, help="the RSS runs sample this many images and 10x")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)
  model, vq = build(args)
  with sharding.model_context(sharding.build_mesh()), tempfile.TemporaryDirectory() as tmp:
    end_to_end(model, vq, args, args.batch, os.path.join(tmp, "warm"))  # compiles decode, VQ decode
    decode_alone(model, args, args.batch)
    alone, pixels = decode_alone(model, args, args.count), decode_alone(model, args, args.count, vq)
    full = end_to_end(model, vq, args, args.count, os.path.join(tmp, "run"))
    # the machine may be shared: bracket the end-to-end run and keep the faster of each
    alone, pixels = (
      min(alone, decode_alone(model, args, args.count)),
      min(pixels, decode_alone(model, args, args.count, vq)),
    )
  small, large = rss(args, args.rss_count), rss(args, 10 * args.rss_count)
  report(
    {
      "bench": "sample",
      "model": f"randar {args.layers}x{args.dim}, grid {args.grid}, {args.steps} steps, CFG, batch {args.batch}",
      "image_size": args.grid * 16,
      "count": args.count,
      "decode_images_per_s": round(args.count / alone, 2),
      "decode_and_vq_images_per_s": round(args.count / pixels, 2),
      "end_to_end_images_per_s": round(args.count / full, 2),
      "end_to_end_over_decode": round(alone / full, 3),
      "end_to_end_over_decode_and_vq": round(pixels / full, 3),
      "peak_rss_mib": {str(args.rss_count): round(small, 1), str(10 * args.rss_count): round(large, 1)},
      "rss_ratio": round(large / small, 3),
    }
  )


if __name__ == "__main__":
  main()
