"""Synthetic pre-tokenised data with a planted structure, for tests and benchmarks (no ImageNet needed).

    src = SyntheticCodes(10_000, grid=16, vocab_size=1024, num_classes=10, noise=0.1)
    src[i]        # {'codes': int32 (num_aug, 256), 'label', 'index'}: same records as a codes directory
    write_source('synthetic_codes/', src)        # the same data as ArrayRecord shards (records.write_source)
    src.token_entropy()                          # nats per token given class, cell and augmentation

Each class owns a fixed random template of codes over the grid; augmentation a shows the template, mirrored
left-right for odd a (as ADM's stored flip), and every token is independently replaced by a uniform random code with
probability ``noise``. A model that learns the templates reaches about ``token_entropy()`` cross-entropy (once the
augmentation is evident from the context); a model that learns nothing stays at log(vocab_size).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from randar_jax.data.orders import Grid, grid_shape


class SyntheticCodes:
  """Random-access source; record i is a deterministic function of (seed, i), so any size costs no memory."""

  def __init__(
    self,
    num_records: int,
    grid: Grid = 16,
    vocab_size: int = 1024,
    num_classes: int = 10,
    num_aug: int = 2,
    noise: float = 0.1,
    seed: int = 0,
  ):
    if not 0.0 <= noise <= 1.0:
      raise ValueError(f"noise must be a probability, got {noise}")
    self.grid = grid_shape(grid)
    self.num_records, self.vocab_size, self.num_classes = num_records, vocab_size, num_classes
    self.num_aug, self.noise, self.seed = num_aug, noise, seed
    self.templates = np.random.default_rng([seed, 2**31]).integers(vocab_size, size=(num_classes, *self.grid))

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, i: int) -> dict[str, Any]:
    if not 0 <= i < self.num_records:
      raise IndexError(f"record {i} out of range [0, {self.num_records})")
    rng = np.random.default_rng([self.seed, i])
    label = int(rng.integers(self.num_classes))
    base = np.stack([self.templates[label][:, ::-1] if a % 2 else self.templates[label] for a in range(self.num_aug)])
    noisy = rng.random(base.shape) < self.noise
    codes = np.where(noisy, rng.integers(self.vocab_size, size=base.shape), base)
    return {"codes": codes.reshape(self.num_aug, -1).astype(np.int32), "label": np.int32(label), "index": np.int64(i)}

  def token_entropy(self) -> float:
    """Entropy (nats) of one token given its class, cell and augmentation: the planted structure's loss floor."""
    v, p = self.vocab_size, self.noise
    hit, miss = 1 - p + p / v, p / v
    return 0.0 if p == 0 else -(hit * math.log(hit) + (v - 1) * miss * math.log(miss))
