"""Cost of the checkpoint digest (randar_jax/train/checkpointing.py) against the save and restore it guards, for a
RandAR train state (float32 params + Adam moments) on this machine.

    python -m benchmarks.bench_checkpoint                     # RandAR-L (343M params, ~4.1 GB state)
    python -m benchmarks.bench_checkpoint --layers 6          # a quarter of L's layers (RAM-limited machines)

Prints one JSON line: ``params``, ``state_gb``, ``save_s`` (Checkpointer.save until committed, digest included),
``digest_save_s`` (the digest of the state alone), ``restore_s`` (Checkpointer.restore, verification included),
``verify_s`` (digest of the restored state), and the fractions digest / save and verify / restore. Medians of
``--repeats`` (after one warm-up save + restore that also compiles the digest).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import jax

from benchmarks.common import report
from randar_jax import checkpoint, sharding
from randar_jax.data.pipeline import Loader, PipelineConfig
from randar_jax.data.synthetic import SyntheticCodes
from randar_jax.models.randar import RandARConfig
from randar_jax.train import checkpointing, preflight
from randar_jax.train.optim import OptimConfig
from randar_jax.train.train import Trainer


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", type=int, default=None, help="override L's 24 layers (to fit the RAM)")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
  args = parser.parse_args()
  cfg = RandARConfig.variant("L", **({"n_layer": args.layers} if args.layers else {}))
  mesh = sharding.build_mesh()
  trainer = Trainer.create(cfg, OptimConfig(), 1000, mesh)
  state = trainer.init()
  source = SyntheticCodes(grid=cfg.grid_size, vocab_size=cfg.vocab_size, num_classes=cfg.num_classes, num_records=64)
  loader = Loader(source, PipelineConfig(batch_size=jax.device_count()), mesh)
  directory = tempfile.mkdtemp(prefix="bench_ckpt_", dir=args.dir)
  ckpt = checkpointing.Checkpointer(directory, keep=2)
  arrays = checkpointing.Checkpointer._arrays(state)
  saves, digests, restores, verifies = [], [], [], []
  try:
    for i in range(args.repeats + 1):
      t = time.perf_counter()
      for tree in arrays.values():
        checkpointing.digest(tree)
      digests.append(time.perf_counter() - t)
      t = time.perf_counter()
      ckpt.save(i + 1, state.replace(step=state.step + i + 1), loader, cfg.to_dict(), {})
      ckpt.wait()
      saves.append(time.perf_counter() - t)
      t = time.perf_counter()
      restored = ckpt.restore(i + 1, trainer, loader)
      jax.block_until_ready(restored)
      restores.append(time.perf_counter() - t)
      t = time.perf_counter()
      for tree in checkpointing.Checkpointer._arrays(restored).values():
        checkpointing.digest(tree)
      verifies.append(time.perf_counter() - t)
      del restored
  finally:
    ckpt.close()
    loader.close()
    shutil.rmtree(directory, ignore_errors=True)
  med = {
    k: statistics.median(v[1:]) for k, v in dict(save=saves, digest=digests, restore=restores, verify=verifies).items()
  }
  report(
    {
      "bench": "checkpoint",
      "params": checkpoint.param_count(state.params),
      "layers": cfg.n_layer,
      "state_gb": preflight.state_bytes(trainer.abstract) / 1e9,
      "save_s": med["save"],
      "digest_save_s": med["digest"],
      "digest_fraction_of_save": med["digest"] / med["save"],
      "restore_s": med["restore"],
      "verify_s": med["verify"],
      "verify_fraction_of_restore": med["verify"] / med["restore"],
    }
  )


if __name__ == "__main__":
  main()
