"""RandAR on scikit-learn's handwritten digits (8x8 grey levels as tokens): the embedded default behind
``randar-jax demo``, trained in a few minutes on a CPU.

  randar-jax train --config digits --workdir runs/digits_train
  randar-jax train --config digits:order=raster,total_steps=2000 --workdir runs/digits_raster

Arguments: order = random | raster, total_steps. The recipe itself lives in :func:`randar_jax.demo.digits_config`
(one place for the demo, this file and the notebooks).
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.demo import digits_config


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, order="random", total_steps=0)
  return digits_config(arg.order, **({"total_steps": arg.total_steps} if arg.total_steps else {}))
