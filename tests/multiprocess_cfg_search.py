"""A stand-in feature extractor for the evaluation tests, and one of two real JAX processes running ``randar-jax
cfg-search`` (used by test_eval_cli.py):

    python tests/multiprocess_cfg_search.py PROCESS_ID PORT ARGS_JSON

``TinyFeatures`` plays the part the digits classifier plays in the demo: a network registered with
``extractors.register`` and selected with ``--features tiny:``.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.eval import extractors


@jax.jit
def _tiny_features(images, w):
  x = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0
  return jnp.tanh(x @ w)


class TinyFeatures:
  """uint8 (N, H, W, 1) grey images (or (N, H, W, 3) with the grey level repeated, as ADM files hold them) -> 8
  features (a fixed random projection of the H*W pixels, whatever the fixture's grid); 5-way logits on them."""

  name = "tiny"

  def __init__(self, arg: str = ""):
    self.seed = int(arg or 0)
    self.w2 = jnp.asarray(np.random.default_rng(self.seed).normal(size=(8, 5)) * 2.0, jnp.float32)

  def features(self, images):
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"TinyFeatures takes (N, H, W, 1) or (N, H, W, 3) images, got {images.shape}")
    grey = images[..., :1]
    pixels = grey.shape[1] * grey.shape[2]
    w1 = np.random.default_rng((self.seed, pixels)).normal(size=(pixels, 8)) * 0.8
    return _tiny_features(jnp.asarray(grey), jnp.asarray(w1, jnp.float32))

  def logits(self, features):
    return jnp.asarray(features) @ self.w2


extractors.register("tiny", TinyFeatures)


def main():
  pid, port, args = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
  jax.config.update("jax_num_cpu_devices", 1)
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid, initialization_timeout=60)
  from jax.experimental import multihost_utils

  from randar_jax import cli

  try:
    code = cli.main(args)
  except RuntimeError as e:  # the other processes' side of an error on process 0
    print(f"stopped: {e}")
    code = 3
  if code == 0:
    multihost_utils.sync_global_devices("done")
  jax.distributed.shutdown()
  sys.exit(code)


if __name__ == "__main__":
  main()
