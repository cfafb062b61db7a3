"""Statistics of image sets and the metrics between them: what ``randar-jax eval`` and the CFG search run.

    net = extractors.load('ckpt/inception')
    ref = reference_statistics('VIRTUAL_imagenet256_labeled.npz', net, cache='ref_stats.npz')
    stats = image_statistics(net, open_images('samples.npz'))
    metrics = compare(stats, ref)     # {'fid', 'inception_score', 'precision', 'recall', 'num_samples', ...}

Reference files, recognised by their keys:

* an ADM reference batch (``VIRTUAL_imagenet256_labeled.npz``): ``mu`` / ``sigma`` (TF Inception pool-3 over the
  whole training set) give the FID; its ``arr_0`` images (10k) are run through the extractor for precision /
  recall, as the ADM evaluator does. Only Inception features are comparable with these statistics.
* a statistics file written here (:meth:`Statistics.save`): ``mu``, ``sigma``, ``count``, ``extractor`` (the
  network that made them, checked against the one in use), ``features`` (for precision / recall), ``inception_score``.
* any other ``.npz`` with uint8 ``arr_0`` images, or a folder of images: everything is computed from the images.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Iterable

import jax
import numpy as np
from tqdm.auto import tqdm

from randar_jax.eval import extractors, metrics, samples
from randar_jax.eval.extractors import FeatureExtractor

ADM_EXTRACTOR = "inception_fid"  # ADM reference batches come from the TF graph this Inception reproduces


@dataclasses.dataclass
class Statistics:
  """Feature statistics of one image set. ``extractor`` is None for ADM reference batches (TF Inception)."""

  mu: np.ndarray  # (D,) float64
  sigma: np.ndarray  # (D, D) float64
  count: int
  extractor: str | None = None
  features: np.ndarray | None = None  # (N, D) float32, for precision / recall
  inception_score: float | None = None
  _sqrt_sigma: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

  def sqrt_sigma(self) -> np.ndarray:
    """sigma^1/2, computed once (a reference is compared with every scale of a search)."""
    if self._sqrt_sigma is None:
      self._sqrt_sigma = metrics.sqrt_psd(self.sigma)
    return self._sqrt_sigma

  @classmethod
  def from_running(cls, running: metrics.RunningStats, extractor: str) -> Statistics:
    return cls(running.mean, running.covariance, running.count, extractor, running.features, running.inception_score())

  def save(self, path: str | os.PathLike) -> str:
    """Writes an ``.npz`` that :func:`reference_statistics` reads back (atomically: no half-written file)."""
    values = {"mu": self.mu, "sigma": self.sigma, "count": np.int64(self.count)}
    if self.extractor is not None:  # None: an ADM batch's TF Inception statistics, which stay untagged
      values["extractor"] = self.extractor
    if self.features is not None:
      values["features"] = self.features
    if self.inception_score is not None:
      values["inception_score"] = np.float64(self.inception_score)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = os.fspath(path) + ".partial.npz"
    np.savez(partial, **values)
    os.replace(partial, path)
    return os.fspath(path)

  def check_extractor(self, name: str, where: str) -> None:
    """Refuses statistics made by another network (ADM batches: any FID Inception preprocessing fits)."""
    fits = self.extractor == name if self.extractor else name.split("/")[0] == ADM_EXTRACTOR
    if not fits:
      raise ValueError(
        f"{where} holds statistics of {self.extractor or 'TF Inception (ADM)'!r} features, but the "
        f"extractor in use is {name!r}; statistics of different networks (or preprocessing) cannot "
        f"be compared. Recompute the reference with this extractor (give its images instead)"
      )


def load_statistics(path: str | os.PathLike) -> Statistics:
  """A statistics file (:meth:`Statistics.save`) or an ADM reference batch (``mu``, ``sigma``)."""
  try:
    with np.load(path) as data:
      keys = set(data.files)
      if not {"mu", "sigma"} <= keys:
        raise ValueError(f"{path} holds no statistics ('mu' and 'sigma'); it has {sorted(keys)}")
      return Statistics(
        np.asarray(data["mu"], np.float64),
        np.asarray(data["sigma"], np.float64),
        int(data["count"]) if "count" in keys else 0,
        str(data["extractor"]) if "extractor" in keys else None,
        np.asarray(data["features"], np.float32) if "features" in keys else None,
        float(data["inception_score"]) if "inception_score" in keys else None,
      )
  except (OSError, EOFError) as e:
    raise ValueError(f"cannot read statistics from {path} (truncated or not an .npz?): {e}") from None


def _npz_keys(path: str) -> set[str]:
  try:
    with zipfile.ZipFile(path) as z:
      return {name[:-4] for name in z.namelist() if name.endswith(".npy")}
  except (zipfile.BadZipFile, OSError) as e:
    raise ValueError(f"{path} is not a readable .npz file (truncated or corrupt?): {e}") from None


def image_statistics(
  extractor: FeatureExtractor,
  images: samples.ImageSets | Iterable,
  *,
  batch_size: int = 64,
  keep_features: bool = True,
  split_size: int = metrics.SPLIT_SIZE,
  desc: str = "features",
) -> Statistics:
  """Streams images (an image set or an iterable of uint8 batches) through the extractor into statistics."""
  total = len(images) if hasattr(images, "__len__") else None
  batches = images.batches(batch_size) if hasattr(images, "batches") else images
  running = metrics.RunningStats(keep_features=keep_features, split_size=split_size)
  with tqdm(total=total, desc=desc, unit="img", disable=not desc) as bar:
    for feats, logits in extractors.extract(extractor, batches, batch_size):
      running.update(feats, logits)
      bar.update(len(feats))
  return Statistics.from_running(running, extractor.name)


def gather_rows(rows: np.ndarray | None) -> np.ndarray | None:
  """Concatenates every process's rows (N_p, ...) in process order, on every process (a no-op on one process).
  Shares may differ in length: each is padded to the longest for the all-gather, then trimmed."""
  if jax.process_count() == 1 or rows is None:
    return rows
  from jax.experimental import multihost_utils

  counts = np.asarray(multihost_utils.process_allgather(np.int64(len(rows)))).reshape(-1)
  padded = np.zeros((int(counts.max()),) + rows.shape[1:], rows.dtype)
  padded[: len(rows)] = rows
  everything = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([part[:n] for part, n in zip(everything, counts)])


def reference_statistics(
  path: str | os.PathLike,
  extractor: FeatureExtractor,
  *,
  batch_size: int = 64,
  need_features: bool = True,
  cache: str | os.PathLike | None = None,
) -> Statistics:
  """Reference statistics from an ADM batch, a statistics file, an ``.npz`` of images or a folder (see the module
  docstring). With ``cache``, what was computed is saved there and read back on the next call."""
  if cache and os.path.isfile(cache):
    stats = load_statistics(cache)
    stats.check_extractor(extractor.name, os.fspath(cache))
    return stats
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no reference at {path}")
  keys = _npz_keys(path) if os.path.isfile(path) else set()
  if "mu" in keys:
    stats = load_statistics(path)
    stats.check_extractor(extractor.name, path)
    if stats.features is None and need_features and "arr_0" in keys:
      stats.features = image_statistics(
        extractor, samples.open_images(path), batch_size=batch_size, desc="reference features"
      ).features
  else:
    stats = image_statistics(
      extractor,
      samples.open_images(path),
      batch_size=batch_size,
      keep_features=need_features,
      desc="reference features",
    )
  if stats.features is not None and stats.features.shape[-1] != stats.mu.shape[-1]:
    raise ValueError(f"{path}: mu {stats.mu.shape} and features {stats.features.shape} disagree")
  if cache:
    stats.save(cache)
  return stats


def compare(
  stats: Statistics, reference: Statistics, *, k: int = metrics.K_NEIGHBOURS, precision_recall: bool = True
) -> dict:
  """FID (and IS, precision / recall where the statistics allow) of ``stats`` against ``reference``."""
  if reference.extractor is not None and stats.extractor != reference.extractor:
    raise ValueError(f"statistics of {stats.extractor!r} features cannot be compared with {reference.extractor!r}")
  out = {
    "fid": metrics.frechet_distance(
      reference.mu, reference.sigma, stats.mu, stats.sigma, sqrt_sigma1=reference.sqrt_sigma()
    )
  }
  if stats.inception_score is not None:
    out["inception_score"] = stats.inception_score
  if precision_recall and stats.features is not None and reference.features is not None:
    out["precision"], out["recall"] = metrics.precision_recall(reference.features, stats.features, k)
  out.update(
    num_samples=stats.count,
    num_reference=reference.count or (len(reference.features) if reference.features is not None else None),
    extractor=stats.extractor,
  )
  return out
