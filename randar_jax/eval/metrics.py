"""Generation metrics from features: Frechet distance, Inception Score, precision / recall; streaming statistics.

    stats = RunningStats(split_size=5000)
    for feats, logits in batches:                  # e.g. (64, 2048) pool-3 features and (64, 1008) logits
      stats.update(feats, logits)                  # float64 running sums; features kept for precision / recall
    fid = frechet_distance(stats.mean, stats.covariance, ref_mu, ref_sigma)
    is_ = stats.inception_score()
    precision, recall = precision_recall(ref_features, stats.features, k=3)

Definitions follow the ADM evaluator (guided-diffusion ``evaluations/evaluator.py``, which RandAR's ``eval/fid.py``
copies):

* FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2) in float64. ADM takes ``scipy.linalg.sqrtm(S1 S2)``
  and retries with 1e-6 on the diagonals when that is not finite. Here tr((S1 S2)^1/2) is the sum of the square
  roots of the eigenvalues of the symmetric PSD matrix S1^1/2 S2 S1^1/2 (same eigenvalues as S1 S2), from two
  symmetric eigendecompositions with round-off negatives clipped to 0: no complex parts, no failure on singular
  covariances (e.g. fewer samples than dimensions), no added epsilon.
* IS = mean over splits of ``split_size`` consecutive samples (the last one may be shorter; ADM: 5000) of
  exp(mean_i KL(p_i || mean p)), p = softmax(logits).
* Precision / recall (Kynkaanniemi et al. 2019, ADM's ``ManifoldEstimator``, k = 3): each feature's radius is
  the distance to its k-th nearest neighbour within its own set (itself at rank 0); precision = share of sample
  features inside some reference ball, recall = share of reference features inside some sample ball. Distances
  are squared Euclidean, computed in JAX in row blocks at float32 with HIGHEST matmul precision (ADM uses float16
  blocks with a float32 fallback), so a 50k x 50k comparison never materialises.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SPLIT_SIZE = 5000  # ADM's Inception Score split
K_NEIGHBOURS = 3


# ---- Frechet distance ------------------------------------------------------------------------------------------


def sqrt_psd(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
  sigma = np.asarray(sigma, np.float64)
  w, v = np.linalg.eigh((sigma + sigma.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
  mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, sqrt_sigma1: np.ndarray | None = None
) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); means (D,), covariances (D, D); float64.

  ``sqrt_sigma1`` = :func:`sqrt_psd` (sigma1), when one side is compared many times (a reference in a CFG search):
  it saves the larger of the two eigendecompositions."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(
      f"statistics do not match: means {mu1.shape} / {mu2.shape}, covariances {sigma1.shape} / "
      f"{sigma2.shape}; were they made by the same feature extractor?"
    )
  for name, s in (("first", sigma1), ("second", sigma2)):
    if not np.isfinite(s).all():
      raise ValueError(f"the {name} covariance has non-finite entries")
  root = sqrt_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
  middle = root @ sigma2 @ root
  eig = np.linalg.eigvalsh((middle + middle.T) / 2)
  tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# ---- streaming statistics ----------------------------------------------------------------------------------------


def _softmax64(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


def _split_score(total: np.ndarray, plogp: float, n: int) -> float:
  """exp(mean_i KL(p_i || mean p)) from a split's sum of p (K,), sum of p log p and size."""
  mean = total / n
  return float(np.exp(plogp / n - np.sum(mean * np.log(np.maximum(mean, 1e-300)))))


class RunningStats:
  """Mean and covariance of a stream of feature batches from float64 running sums, the Inception Score's per-split
  sums (when logits are given), and optionally the features themselves (float32, for precision / recall).

  Sums are taken around a shift (the first batch's mean), so the covariance keeps its precision when the
  features' mean is large against their spread. Memory: O(D^2), plus N x D if ``keep_features``.
  """

  def __init__(self, *, keep_features: bool = True, split_size: int = SPLIT_SIZE):
    if split_size < 1:
      raise ValueError(f"split_size must be positive, got {split_size}")
    self.keep_features, self.split_size = keep_features, split_size
    self.count = 0
    self._shift = self._sum = self._outer = None
    self._kept: list[np.ndarray] = []
    self._scores: list[float] = []  # finished IS splits
    self._split = None  # [sum p (K,), sum p log p, n] of the open split
    self._with_logits = None

  def update(self, features, logits=None) -> None:
    """Adds a batch: features (B, D) and, for the Inception Score, class logits (B, K) (every batch or none)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(f"features must be a non-empty (batch, dim) array, got shape {x.shape}")
    if self._shift is None:
      self._shift = x.mean(axis=0)
      self._sum, self._outer = np.zeros_like(self._shift), np.zeros((x.shape[1],) * 2)
    elif x.shape[1] != self._shift.shape[0]:
      raise ValueError(f"feature width changed from {self._shift.shape[0]} to {x.shape[1]}")
    if self._with_logits is not None and self._with_logits != (logits is not None):
      raise ValueError("logits must be given with every batch or with none")
    self._with_logits = logits is not None
    centred = x - self._shift
    self._sum += centred.sum(axis=0)
    self._outer += centred.T @ centred
    self.count += x.shape[0]
    if self.keep_features:
      self._kept.append(np.array(features, np.float32))  # a copy: callers may reuse their buffer
    if logits is not None:
      self._update_splits(_softmax64(logits))

  def _update_splits(self, p: np.ndarray) -> None:
    while len(p):
      if self._split is None:
        self._split = [np.zeros(p.shape[1]), 0.0, 0]
      take = min(self.split_size - self._split[2], len(p))
      part, p = p[:take], p[take:]
      self._split[0] += part.sum(axis=0)
      self._split[1] += float(np.sum(part * np.log(np.maximum(part, 1e-300))))
      self._split[2] += take
      if self._split[2] == self.split_size:
        self._close_split()

  def _close_split(self) -> None:
    self._scores.append(_split_score(*self._split))
    self._split = None

  @property
  def mean(self) -> np.ndarray:
    self._check()
    return self._shift + self._sum / self.count

  @property
  def covariance(self) -> np.ndarray:
    """Unbiased (N - 1) covariance, as ``np.cov(features, rowvar=False)``."""
    self._check()
    if self.count < 2:
      raise ValueError("a covariance needs at least two samples")
    d = self._sum / self.count
    return (self._outer - self.count * np.outer(d, d)) / (self.count - 1)

  @property
  def features(self) -> np.ndarray | None:
    return np.concatenate(self._kept) if self.keep_features and self._kept else None

  def inception_score(self) -> float | None:
    """Mean over the splits (the open last one included), or None without logits."""
    if not self._with_logits:
      return None
    return float(np.mean(self._scores + ([_split_score(*self._split)] if self._split else [])))

  def _check(self) -> None:
    if not self.count:
      raise ValueError("no features were added")


# ---- precision / recall ------------------------------------------------------------------------------------------


def _squared_distances(rows: jax.Array, cols: jax.Array) -> jax.Array:
  """(B, D), (N, D) -> (B, N) squared Euclidean distances, |r|^2 - 2 r.c + |c|^2 clamped at 0 (ADM's form)."""
  dots = jnp.dot(rows, cols.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(jnp.sum(rows * rows, 1)[:, None] - 2 * dots + jnp.sum(cols * cols, 1)[None, :], 0.0)


def _row_blocks(x: jax.Array, block: int) -> jax.Array:
  """(N, D) -> (ceil(N / block), block, D), padded with the last row."""
  pad = -x.shape[0] % block
  x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
  return x.reshape(-1, block, x.shape[1])


@functools.partial(jax.jit, static_argnames=("k", "block"))
def _radii(features: jax.Array, k: int, block: int) -> jax.Array:
  def kth(rows):
    return -jax.lax.top_k(-_squared_distances(rows, features), k + 1)[0][:, k]

  return jax.lax.map(kth, _row_blocks(features, block)).reshape(-1)[: features.shape[0]]


@functools.partial(jax.jit, static_argnames=("block",))
def _covered(queries: jax.Array, points: jax.Array, radii: jax.Array, block: int) -> jax.Array:
  def inside(rows):
    return jnp.any(_squared_distances(rows, points) <= radii[None, :], axis=1)

  return jax.lax.map(inside, _row_blocks(queries, block)).reshape(-1)[: queries.shape[0]]


def manifold_radii(features, k: int = K_NEIGHBOURS, block: int = 1024) -> np.ndarray:
  """(N, D) -> (N,) squared distance of each feature to its k-th nearest neighbour in the set (itself = 0th)."""
  features = jnp.asarray(features, jnp.float32)
  if features.ndim != 2 or features.shape[0] <= k:
    raise ValueError(f"a k={k} manifold needs more than {k} features (N, D), got shape {features.shape}")
  return np.asarray(_radii(features, k, min(block, features.shape[0])))


def coverage(queries, points, radii, block: int = 1024) -> np.ndarray:
  """(Q,) bool: whether each query lies within the radius of at least one of ``points`` (radii squared)."""
  queries = jnp.asarray(queries, jnp.float32)
  return np.asarray(
    _covered(queries, jnp.asarray(points, jnp.float32), jnp.asarray(radii, jnp.float32), min(block, queries.shape[0]))
  )


def precision_recall(reference, samples, k: int = K_NEIGHBOURS, block: int = 1024) -> tuple[float, float]:
  """Improved precision and recall of ``samples`` (M, D) against ``reference`` (N, D) features."""
  reference, samples = np.asarray(reference, np.float32), np.asarray(samples, np.float32)
  if reference.ndim != 2 or samples.ndim != 2 or reference.shape[1] != samples.shape[1]:
    raise ValueError(f"features must be (N, D) of one width, got {reference.shape} and {samples.shape}")
  ref_radii, sample_radii = manifold_radii(reference, k, block), manifold_radii(samples, k, block)
  precision = coverage(samples, reference, ref_radii, block).mean()
  recall = coverage(reference, samples, sample_radii, block).mean()
  return float(precision), float(recall)
