"""The handwritten-digits set that ships with scikit-learn: real data, offline, small enough for a laptop CPU.

1,797 images of 8 x 8 pixels with 17 grey levels (0..16) and 10 classes. A grey level is a token
(:class:`randar_jax.tokenizers.pixels.PixelTokenizer` with 17 levels), so an image is 64 tokens on an 8 x 8 grid.

Split (fixed, documented): ``sklearn.model_selection.train_test_split(test_size=0.2, stratify=labels,
random_state=0)`` -> 1,437 training and 360 test images.

    train = digits_source('train')          # ArraySource: codes (N, 1, 64), labels; the training pipeline's input
    clf = DigitsClassifier.fit()            # an RBF SVM on the 64 pixels, trained on the training split only
    clf.accuracy(images, labels)            # images: uint8 (N, 8, 8, 1) or grey levels (N, 8, 8)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from randar_jax.data.records import ArraySource

LEVELS, GRID, NUM_CLASSES = 17, 8, 10


@functools.lru_cache(maxsize=1)
def load_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'train': (levels (N, 8, 8) int32 in 0..16, labels (N,)), 'test': ...}."""
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  data = load_digits()
  levels = data.images.astype(np.int32)
  x_train, x_test, y_train, y_test = train_test_split(
    levels, data.target.astype(np.int32), test_size=0.2, stratify=data.target, random_state=0
  )
  return {"train": (x_train, y_train), "test": (x_test, y_test)}


def digits_source(split: str = "train") -> ArraySource:
  """The split as a pipeline source: one augmentation, 64 raster tokens per image."""
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  levels, labels = load_split()[split]
  return ArraySource(levels.reshape(len(levels), 1, -1), labels, grid=GRID, vocab_size=LEVELS)


def as_levels(images) -> np.ndarray:
  """uint8 images (N, 8, 8[, 1]) or grey levels (N, 8, 8) / (N, 64) -> int levels (N, 64)."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = np.round(images.astype(np.float64).reshape(len(images), -1) * (LEVELS - 1) / 255)
  return images.reshape(len(images), -1).astype(np.int32)


@dataclasses.dataclass
class DigitsClassifier:
  """The judge of generated digits: an RBF support-vector machine (scikit-learn ``SVC(gamma=0.001)``, the classic
  digits setting) on the 64 grey levels, fit on the training split only: 98.9% on the test split, in 0.1 s."""

  model: object

  @classmethod
  def fit(cls) -> DigitsClassifier:
    from sklearn.svm import SVC

    levels, labels = load_split()["train"]
    return cls(SVC(gamma=0.001).fit(levels.reshape(len(levels), -1), labels))

  def predict(self, images) -> np.ndarray:
    return self.model.predict(as_levels(images))

  def accuracy(self, images, labels) -> float:
    return float(np.mean(self.predict(images) == np.asarray(labels)))

  def features(self, images) -> np.ndarray:
    """Per-class decision values (N, 10): a feature space for FID-style distances between sets of digits (the
    role Inception's pool features play for ImageNet)."""
    return self.model.decision_function(as_levels(images)).astype(np.float64)


def memorised_share(levels, train_levels: np.ndarray | None = None) -> float:
  """Share of generated images (grey levels) identical to some training image."""
  train = load_split()["train"][0] if train_levels is None else train_levels
  seen = {row.tobytes() for row in np.asarray(train, np.int32).reshape(len(train), -1)}
  generated = as_levels(levels)
  return float(np.mean([row.tobytes() in seen for row in generated]))
