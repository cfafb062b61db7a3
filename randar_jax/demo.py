"""``randar-jax demo``: RandAR end to end on real data that ships with scikit-learn, in a few minutes on a CPU.

The handwritten digits (8 x 8 pixels, 17 grey levels, 10 classes; :mod:`randar_jax.data.digits`) with grey levels
as tokens go through the same code as ImageNet: the Grain pipeline with random orders, the sharded train step,
Orbax checkpoints, the compiled parallel decoder and zero-shot editing. The demo

1. trains ``digits_config()`` in ``OUT/train`` (or reuses a finished run there; an interrupted one resumes),
2. samples every class at full steps (64 forwards) and 4x fewer (16), judged by a classifier trained only on
   the real training split (:class:`randar_jax.data.digits.DigitsClassifier`),
3. inpaints the bottom half and outpaints the right half of test digits (known pixels kept exactly),
4. writes PNGs, the loss curve and ``metrics.json``, and prints a summary.

    randar-jax demo --out runs/digits                       # random-order RandAR (the README's main command)
    randar-jax demo --out runs/digits_raster --order raster # the same budget in raster order, for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from randar_jax.data import digits
from randar_jax.models.randar import RandARConfig
from randar_jax.train.config import recipe

FULL_STEPS, FAST_STEPS = 64, 16


def digits_config(order: str = "random", total_steps: int = 700) -> ml_collections.ConfigDict:
  """The digits recipe: a 2-block, 64-wide RandAR (110k parameters) on the 1,437 training digits."""
  model = RandARConfig(vocab_size=digits.LEVELS, dim=64, n_layer=2, n_head=2, multiple_of=32,
                       grid_size=digits.GRID, num_classes=digits.NUM_CLASSES, token_dropout=0.0, resid_dropout=0.0,
                       ffn_dropout=0.0, remat=False)
  config = recipe(model.to_dict(), seed=0, total_steps=total_steps, batch_size=64,
                  optim=dict(lr=3e-3, warmup_steps=total_steps // 10, skip_after=total_steps // 10),
                  data="digits", order=dict(order=order), ckpt_every=100, keep_every=None,
                  sample_kwargs=dict(num_steps=FULL_STEPS))
  config.tokenizer = f"pixels:{digits.LEVELS}"
  config.data.num_threads = 2
  config.log_every = 50
  config.sample.update(every=total_steps, num_images=20)
  config.eval.update(every=0, split="test")
  return config
