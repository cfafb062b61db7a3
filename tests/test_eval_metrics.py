"""Metrics against straightforward float64 references: Frechet distance (SciPy, as the ADM evaluator computes it),
Inception Score, precision / recall (NumPy k-NN), and the streaming statistics against one-shot NumPy."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from randar_jax.eval import metrics


def adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """guided-diffusion evaluations/evaluator.py FIDStatistics.frechet_distance, verbatim in substance."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
      offset = np.eye(sigma1.shape[0]) * eps
      covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
  diff = mu1 - mu2
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean.real)


def gaussians(rng, n, d, rank=None):
  mix = rng.normal(size=(rank or d, d))
  a = rng.normal(size=(n, rank or d)) @ mix * 0.4 + rng.normal(size=d)
  b = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, d) + 0.3
  return (a.mean(0), np.cov(a, rowvar=False)), (b.mean(0), np.cov(b, rowvar=False))


# A matrix square root is not Lipschitz at a zero eigenvalue: round-off of size eps * |S| in a (near-)singular
# covariance moves tr((S1 S2)^1/2) by ~sqrt(eps) * |S| per null direction, for SciPy's Schur-based sqrtm and for
# our eigendecompositions alike (both are ~1e-6 absolute from a 60-digit mpmath evaluation of the same inputs
# here). So singular cases agree to ~1e-8 relative, well-conditioned ones to float64 round-off.
@pytest.mark.parametrize(
  "n, d, rank, rtol",
  [
    (4000, 32, None, 1e-12),  # well conditioned
    (3000, 48, 12, 1e-7),  # near-singular: rank-12 structure plus round-off
    (20, 48, None, 1e-7),  # singular: fewer samples than dimensions (ADM's sqrtm hits its fallback)
  ],
)
def test_frechet_distance_matches_scipy(n, d, rank, rtol):
  (mu1, s1), (mu2, s2) = gaussians(np.random.default_rng(d + n), n, d, rank)
  ours = metrics.frechet_distance(mu1, s1, mu2, s2)
  assert ours == pytest.approx(adm_frechet(mu1, s1, mu2, s2), rel=rtol)
  assert metrics.frechet_distance(mu1, s1, mu2, s2, sqrt_sigma1=metrics.sqrt_psd(s1)) == ours
  assert metrics.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=rtol)  # symmetric


def test_frechet_distance_of_a_distribution_with_itself_is_zero_and_shifts_add():
  (mu, s), _ = gaussians(np.random.default_rng(1), 500, 16, 4)  # rank 4 of 16: sqrt(eps) conditioning (above)
  tol = 1e-6 * np.trace(s)
  assert abs(metrics.frechet_distance(mu, s, mu, s)) < tol
  shift = np.full(16, 0.5)
  assert metrics.frechet_distance(mu, s, mu + shift, s) == pytest.approx(shift @ shift, abs=tol)
  (mu, s), _ = gaussians(np.random.default_rng(2), 2000, 16)  # full rank: round-off only
  assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-12 * np.trace(s)


def test_frechet_distance_rejects_mismatched_statistics():
  with pytest.raises(ValueError, match="same feature extractor"):
    metrics.frechet_distance(np.zeros(4), np.eye(4), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match="non-finite"):
    metrics.frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


def reference_inception_score(logits, split_size):
  """ADM evaluator's compute_inception_score on softmax outputs."""
  preds = np.exp(logits - logits.max(1, keepdims=True))
  preds /= preds.sum(1, keepdims=True)
  scores = []
  for i in range(0, len(preds), split_size):
    part = preds[i : i + split_size]
    kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
  return float(np.mean(scores))


def reference_precision_recall(real, fake, k):
  def dist(a, b):
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None], 0)

  def radii(x):
    return np.sort(dist(x, x), axis=1)[:, k]

  precision = (dist(fake, real) <= radii(real)[None]).any(1).mean()
  recall = (dist(real, fake) <= radii(fake)[None]).any(1).mean()
  return precision, recall


def test_streaming_statistics_equal_one_shot():
  rng = np.random.default_rng(0)
  feats = (rng.normal(size=(1000, 24)) * 0.1 + 50.0).astype(np.float32)  # large mean, small spread
  logits = rng.normal(size=(1000, 7)) * 3
  stats = metrics.RunningStats(split_size=300)
  for start in range(0, 1000, 64):  # batches cross the split boundaries
    stats.update(feats[start : start + 64], logits[start : start + 64])
  x = feats.astype(np.float64)
  np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-13)
  np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-15)
  np.testing.assert_array_equal(stats.features, feats)
  assert stats.count == 1000
  assert stats.inception_score() == pytest.approx(reference_inception_score(logits, 300), rel=1e-12)
  assert stats.inception_score() == stats.inception_score()  # reading it does not close the open split


def test_inception_score_single_split_and_without_logits():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(50, 10)) * 2
  stats = metrics.RunningStats(keep_features=False)
  stats.update(rng.normal(size=(50, 4)), logits)
  assert stats.inception_score() == pytest.approx(reference_inception_score(logits, 5000), rel=1e-12)
  assert stats.features is None
  plain = metrics.RunningStats()
  plain.update(rng.normal(size=(5, 4)))
  assert plain.inception_score() is None
  with pytest.raises(ValueError, match="every batch or with none"):
    plain.update(rng.normal(size=(5, 4)), logits[:5])
  with pytest.raises(ValueError, match="width changed"):
    plain.update(rng.normal(size=(5, 3)))


@pytest.mark.parametrize("n_real, n_fake, block", [(120, 90, 1024), (130, 70, 32)])
def test_precision_recall_match_numpy(n_real, n_fake, block):
  rng = np.random.default_rng(n_real)
  real = rng.normal(size=(n_real, 16)).astype(np.float32)
  fake = (rng.normal(size=(n_fake, 16)) * 1.3 + 0.4).astype(np.float32)  # shifted, wider: P and R in (0, 1)
  precision, recall = metrics.precision_recall(real, fake, k=3, block=block)
  ref_p, ref_r = reference_precision_recall(real.astype(np.float64), fake.astype(np.float64), 3)
  assert 0 < precision < 1 and 0 < recall < 1
  assert (precision, recall) == (ref_p, ref_r)


def test_manifold_radii_equal_kth_neighbour():
  x = np.random.default_rng(5).normal(size=(40, 6)).astype(np.float32)
  d = ((x[:, None] - x[None]) ** 2).sum(-1)
  np.testing.assert_allclose(metrics.manifold_radii(x, k=3, block=16), np.sort(d, 1)[:, 3], rtol=1e-5)
  with pytest.raises(ValueError, match="more than 3 features"):
    metrics.manifold_radii(x[:3])
