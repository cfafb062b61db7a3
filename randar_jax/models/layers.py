"""Small building blocks shared by the transformers: annotated parameters, RMSNorm, SwiGLU, dropout, loss.

Every parameter carries logical axis names (``'embed'``, ``'heads'``, ``'mlp'``, ...) as ``out_sharding``
metadata; :mod:`randar_jax.sharding` maps them to mesh axes. Modules hold parameters only: dropout randomness
is passed in as explicit keys, so a module is a plain pytree of arrays that scans, remats and jits cleanly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], names: Sequence[str | None],
          dtype: jnp.dtype = jnp.float32) -> nnx.Param:
  """A parameter initialised with ``init`` and annotated with one logical axis name per dimension."""
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} axis names {tuple(names)} for a parameter of shape {tuple(shape)}")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(names))


def normal(std: float) -> Initializer:
  """N(0, std^2), untruncated (torch ``normal_``)."""
  return jax.nn.initializers.normal(stddev=std)


def ones(key, shape, dtype):  # noqa: ARG001 - initializer signature
  return jnp.ones(shape, dtype)


def zeros(key, shape, dtype):  # noqa: ARG001 - initializer signature
  return jnp.zeros(shape, dtype)


class RMSNorm(nnx.Module):
  """``x * rsqrt(mean(x^2) + eps) * scale``; statistics in float32, result cast back to x's dtype before scaling."""

  def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, ones, (dim,), ("embed",))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return normed.astype(x.dtype) * self.scale[...].astype(x.dtype)


class SwiGLU(nnx.Module):
  """LLaMA feed-forward ``w2(silu(w1 x) * w3 x)`` without biases; kernels (D, H) and (H, D)."""

  def __init__(self, dim: int, hidden: int, *, init: Initializer, rngs: nnx.Rngs):
    self.w1 = param(rngs, init, (dim, hidden), ("embed", "mlp"))
    self.w3 = param(rngs, init, (dim, hidden), ("embed", "mlp"))
    self.w2 = param(rngs, init, (hidden, dim), ("mlp", "embed"))

  def __call__(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    x = x.astype(dtype)
    gate = jax.nn.silu(x @ self.w1[...].astype(dtype))
    return (gate * (x @ self.w3[...].astype(dtype))) @ self.w2[...].astype(dtype)


def find_multiple(n: int, k: int) -> int:
  """Smallest multiple of k that is >= n (LlamaGen's FFN sizing)."""
  return n if n % k == 0 else n + k - n % k


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when ``key`` is None (evaluation) or rate is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean token cross-entropy in float32. logits (..., V), integer targets (...)."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jnp.mean(log_z - picked)
