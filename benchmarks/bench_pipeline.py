"""Input-pipeline throughput: ArrayRecord codes -> permuted tokens/positions -> global batches, on this host.

    python -m benchmarks.bench_pipeline                       # batch 256, 16x16 grid, 2 augmentations, threads 2
    python -m benchmarks.bench_pipeline --workers 2 --anneal  # Grain worker processes; RAR's annealed policy

Writes ``--records`` synthetic records (LlamaGen vocabulary, int16) as ArrayRecord shards in a temporary directory,
then times ``--batches`` batches after one warm-up batch, twice: the host pipeline alone (numpy batches) and with
``jax.make_array_from_process_local_data`` onto the default mesh. Prints one JSON line; ``batches_per_s`` and
``tokens_per_s`` are for the full path (global jax.Arrays). For comparison it derives the best case of a RandAR-L
training step on one H100: 6 * params * slots + attention FLOPs per step (512 slots per image, dense bf16 peak
989 TFLOP/s, 100 % MFU), so ``margin`` = pipeline batches/s over that step rate is a lower bound on the headroom.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax

from benchmarks.common import report
from randar_jax import checkpoint, sharding
from randar_jax.data import orders, records
from randar_jax.data.pipeline import Loader, PipelineConfig, make_dataset
from randar_jax.data.synthetic import SyntheticCodes
from randar_jax.models.randar import RandARConfig

H100_BF16_DENSE_FLOPS = 989e12


def randar_l_step_flops(batch: int) -> float:
  """Training FLOPs of one RandAR-L step: 6 N per sequence slot plus causal-agnostic attention (fwd + 2x bwd)."""
  config = RandARConfig.variant("L", "llamagen")
  params = checkpoint.param_count(checkpoint.abstract_params(config))
  slots = 2 * config.grid_size**2  # [cls, P, x, ...] minus the unused last image token
  attention = 3 * 4 * slots**2 * config.dim * config.n_layer  # QK^T and AV, 2 flops per MAC, x3 for fwd+bwd
  return batch * (6 * params * slots + attention)


def rate(iterator, batches: int) -> float:
  jax.block_until_ready(jax.tree.leaves(next(iterator)))  # warm-up: thread start, first reads
  start = time.perf_counter()
  for _ in range(batches):
    jax.block_until_ready(jax.tree.leaves(next(iterator)))
  return batches / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--grid", type=int, default=16)
  parser.add_argument("--vocab", type=int, default=16384)
  parser.add_argument("--num-aug", type=int, default=2)
  parser.add_argument("--records", type=int, default=20_000)
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--workers", type=int, default=0)
  parser.add_argument("--anneal", action="store_true", help="RAR policy (annealing), else RandAR (always random)")
  args = parser.parse_args()

  source = SyntheticCodes(
    args.records, grid=args.grid, vocab_size=args.vocab, num_classes=1000, num_aug=args.num_aug, noise=0.1
  )
  policy = orders.OrderPolicy(anneal=(0, 1_000_000)) if args.anneal else orders.OrderPolicy()
  config = PipelineConfig(
    batch_size=args.batch,
    seed=0,
    order=policy,
    num_threads=args.threads,
    prefetch=2 * args.threads,
    workers=args.workers,
  )
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    records.write_source(tmp, source, shard_size=5000)
    write_s = time.perf_counter() - start
    shards = records.CodeShards(tmp)
    host_iterator = iter(make_dataset(shards, config))
    host = rate(host_iterator, args.batches)
    loader = Loader(shards, config, sharding.build_mesh())
    full = rate(loader, args.batches)
    for it in (host_iterator, loader):
      it.close()
  step_flops = randar_l_step_flops(args.batch)
  h100_steps = H100_BF16_DENSE_FLOPS / step_flops
  tokens = args.batch * args.grid**2
  report(
    {
      "batches_per_s": round(full, 2),
      "tokens_per_s": round(full * tokens),
      "records_per_s": round(full * args.batch),
      "host_batches_per_s": round(host, 2),
      "batch": args.batch,
      "tokens_per_example": args.grid**2,
      "num_aug": args.num_aug,
      "threads": args.threads,
      "workers": args.workers,
      "policy": "rar_anneal" if args.anneal else "randar_random",
      "write_records_per_s": round(args.records / write_s),
      "randar_l_step_tflops": round(step_flops / 1e12, 1),
      "h100_step_upper_bound_per_s": round(h100_steps, 2),
      "margin": round(full / h100_steps, 1),
    }
  )


if __name__ == "__main__":  # needed for --workers (spawned processes re-import this module)
  main()
