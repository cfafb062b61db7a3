"""One of two real JAX processes (CPU, gloo) running the Loader; used by test_pipeline.py.

    python tests/multiprocess_loader.py PROCESS_ID PORT WORKDIR

Writes WORKDIR/process_{id}.npz: the globally gathered 'index' of 5 batches, and of batches 4-5 again after an
Orbax save at batch 3 and a restore into a fresh loader.
"""

import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from randar_jax import sharding
from randar_jax.data.pipeline import Loader, PipelineConfig
from randar_jax.data.synthetic import SyntheticCodes

SOURCE = dict(num_records=200, grid=(4, 4), vocab_size=30, num_classes=4)
CONFIG = PipelineConfig(batch_size=8, seed=3)


def gathered(loader, n):
  out = []
  for _ in range(n):
    batch = next(loader)
    assert batch["tokens"].shape == (CONFIG.batch_size, 16)
    out.append(multihost_utils.process_allgather(batch["meta"]["index"], tiled=True))
  return np.stack(out)


def main():
  pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
  jax.config.update("jax_num_cpu_devices", 1)  # one device per process (CPU collectives, openxla/xla#16430)
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid, initialization_timeout=60)
  source, mesh = SyntheticCodes(**SOURCE), sharding.build_mesh()
  loader = Loader(source, CONFIG, mesh)
  first = gathered(loader, 3)
  with ocp.CheckpointManager(f"{workdir}/ckpt") as mngr:
    mngr.save(3, args=ocp.args.Composite(data=loader.save_args()))
    mngr.wait_until_finished()
  rest = gathered(loader, 2)
  resumed = Loader(source, CONFIG, mesh)
  with ocp.CheckpointManager(f"{workdir}/ckpt") as mngr:
    mngr.restore(3, args=ocp.args.Composite(data=resumed.restore_args()))
  np.savez(f"{workdir}/process_{pid}.npz", index=np.concatenate([first, rest]), resumed=gathered(resumed, 2))
  multihost_utils.sync_global_devices("done")
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
