"""Evaluation costs: FID Inception throughput, precision / recall, the Frechet distance and the streaming statistics
(random weights and features, nothing downloaded).

    python -m benchmarks.bench_eval                                       # CPU-sized defaults
    python -m benchmarks.bench_eval --batch 256 --samples 50000 --reference 10000 --repeats 5   # the ADM protocol

Prints one JSON line: Inception images/s (uint8 256x256 in, resize to 299 included; median of ``--repeats`` calls
after one compile-and-run call), the seconds of precision / recall for ``--samples`` x ``--reference`` 2048-d
features, of one 2048-d Frechet distance (host float64) and of the running float64 sums per 10k features.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from benchmarks.common import report, timed
from randar_jax import checkpoint, families, sharding
from randar_jax.eval import metrics
from randar_jax.eval.inception import InceptionConfig, InceptionExtractor


def inception(batch: int, size: int, repeats: int, precision: str) -> dict:
  config = InceptionConfig()
  mesh = sharding.build_mesh(devices=jax.local_devices())
  with sharding.model_context(mesh):
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: families.build(config)))
    state = jax.jit(lambda: nnx.split(families.build(config))[1])()
  net = InceptionExtractor(nnx.merge(graphdef, state), mesh=mesh, precision=precision)
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  first, times = timed(lambda: net.features(images), repeats)
  seconds = statistics.median(times)
  return {
    "images_per_s": round(batch / seconds, 2),
    "batch_s": round(seconds, 4),
    "first_s": round(first, 2),
    "params": checkpoint.param_count(checkpoint.model_params(net.model)),
    "precision": precision,
  }


def features(n: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.maximum(rng.normal(0.3, 0.5, (n, 2048)), 0).astype(np.float32)  # ReLU-like, as pool-3


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--precision", default="highest", choices=["highest", "high", "default"])
  parser.add_argument("--samples", type=int, default=2000, help="sample features for precision / recall")
  parser.add_argument("--reference", type=int, default=2000, help="reference features for precision / recall")
  args = parser.parse_args()

  result = {"inception": inception(args.batch, args.size, args.repeats, args.precision), "batch": args.batch}
  fake, real = features(args.samples, 1), features(args.reference, 2)
  metrics.precision_recall(real[:64], fake[:64])  # compile the small shapes away from the timing
  start = time.perf_counter()
  p, r = metrics.precision_recall(real, fake)
  result["precision_recall"] = {
    "seconds": round(time.perf_counter() - start, 3),
    "samples": args.samples,
    "reference": args.reference,
    "precision": p,
    "recall": r,
  }
  running = metrics.RunningStats(keep_features=False)
  start = time.perf_counter()
  for i in range(0, len(fake), 256):
    running.update(fake[i : i + 256])
  result["stats_per_10k_s"] = round((time.perf_counter() - start) * 10000 / len(fake), 3)
  ref = metrics.RunningStats(keep_features=False)
  ref.update(real)
  start = time.perf_counter()
  result["fid_features_only"] = metrics.frechet_distance(running.mean, running.covariance, ref.mean, ref.covariance)
  result["frechet_s"] = round(time.perf_counter() - start, 3)
  report(result)


if __name__ == "__main__":
  main()
