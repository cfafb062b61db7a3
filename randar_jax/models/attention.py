"""Attention: one entry point for every kernel, and the preallocated KV cache shared by all decoders.

``attend`` is the only place that calls an attention kernel. ``implementation`` selects XLA (default, runs
everywhere), ``'cudnn'`` (flash attention on NVIDIA GPUs) or ``None`` (let JAX choose); a Pallas/splash kernel
slots in here too. Decoding always uses XLA with an explicit slot mask.

The cache is laid out layer-first: values ``(layers, batch, kv_heads, slots, head_dim)`` and keys transposed,
``(layers, batch, kv_heads, head_dim, slots)``: layers first to match the stacked parameter layout, heads before
slots so each (batch, head) block is one contiguous matrix for the attention matmuls, and keys with slots last so
that q·kᵀ is a plain (chunk, head_dim) @ (head_dim, slots) product (XLA's CPU kernels run the q·kᵀ of a
(head_dim, slots) key block ~4× faster than of a (slots, head_dim) one, which they transpose first). It is
updated in place with ``dynamic_update_slice``, and a decode step reads only a static *window* of leading slots
(the slots its queries can see).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from randar_jax import sharding

AXES = ("layers", "batch", "kv_heads", "cache_slots", "head_dim")  # logical axes of KVCache.v
K_AXES = ("layers", "batch", "kv_heads", "head_dim", "cache_slots")  # of KVCache.k (keys transposed)


class KVCache(NamedTuple):
  """Keys (layers, batch, kv_heads, head_dim, slots) and values (layers, batch, kv_heads, slots, head_dim)."""

  k: jax.Array
  v: jax.Array

  @classmethod
  def zeros(
    cls, layers: int, batch: int, slots: int, kv_heads: int, head_dim: int, dtype: jnp.dtype = jnp.float32
  ) -> KVCache:
    return cls(
      jnp.zeros((layers, batch, kv_heads, head_dim, slots), dtype),
      jnp.zeros((layers, batch, kv_heads, slots, head_dim), dtype),
    )

  @property
  def slots(self) -> int:
    return self.v.shape[3]

  def place_like(self, like: jax.Array) -> KVCache:
    """Committed where the decode program returns its cache (``sharding.place_like_outputs``) for parameters
    on ``like``'s mesh."""
    return KVCache(sharding.place_like_outputs(self.k, K_AXES, like), sharding.place_like_outputs(self.v, AXES, like))

  def constrain(self) -> KVCache:
    """Both buffers constrained to their logical axes (for a sharded decode)."""
    return KVCache(sharding.constrain(self.k, K_AXES), sharding.constrain(self.v, AXES))

  def update(
    self, layer: jax.Array | int, start: jax.Array, k: jax.Array, v: jax.Array, window: int
  ) -> tuple[KVCache, jax.Array, jax.Array]:
    """Writes a chunk k, v (batch, chunk, kv_heads, head_dim) at slot ``start`` of ``layer``.

    Returns the new cache and that layer's keys (batch, kv_heads, head_dim, window) and values (batch,
    kv_heads, window, head_dim) in slots [0, window). Note: ``dynamic_update_slice`` clamps an out-of-range
    start; callers size the cache so the chunk always fits (the decode plan asserts it).
    """
    k = k.transpose(0, 2, 3, 1)[None].astype(self.k.dtype)  # (1, batch, kv_heads, head_dim, chunk)
    new_k = jax.lax.dynamic_update_slice(self.k, k, (layer, 0, 0, 0, start))
    new_v = jax.lax.dynamic_update_slice(self.v, v.swapaxes(1, 2)[None].astype(self.v.dtype), (layer, 0, 0, start, 0))
    at = lambda c: jax.lax.dynamic_index_in_dim(c, layer, axis=0, keepdims=False)  # noqa: E731
    return KVCache(new_k, new_v), at(new_k)[..., :window], at(new_v)[:, :, :window]


def slot_mask(start: jax.Array, chunk: int, slots: int) -> jax.Array:
  """Causal-by-slot mask (chunk, slots): query at slot ``start + i`` sees keys at slots <= its own."""
  query_slots = start + jnp.arange(chunk)
  return jnp.arange(slots)[None, :] <= query_slots[:, None]


def attend_cached(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Attention of a chunk against cached slots. q (B, T, H, hd); k (B, Hkv, hd, S); v (B, Hkv, S, hd); mask
  (T, S) bool.

  Returns (B, T, H, hd). Scores and softmax in float32; grouped-query heads share k/v (head h -> h // G).
  """
  batch, chunk, heads, head_dim = q.shape
  groups = heads // k.shape[1]
  q = q.reshape(batch, chunk, k.shape[1], groups, head_dim).transpose(0, 2, 3, 1, 4)  # (B, Hkv, G, T, hd)
  scores = jnp.einsum("bkgtd,bkds->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(head_dim))
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bksd->bkgtd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)
  return out.transpose(0, 3, 1, 2, 4).reshape(batch, chunk, heads, head_dim)


def attend(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  *,
  mask: jax.Array | None = None,
  causal: bool = False,
  implementation: str | None = "xla",
  dropout_rate: float = 0.0,
  dropout_key: jax.Array | None = None,
) -> jax.Array:
  """Softmax attention with scale head_dim**-0.5. q (B, T, H, hd); k, v (B, S, Hkv, hd) with H % Hkv == 0.

  Returns (B, T, H, hd). ``mask`` is boolean, broadcastable to (B, H, T, S), True where attention is allowed.
  With ``dropout_key`` (training) and ``dropout_rate`` > 0, attention probabilities are dropped (torch SDPA's
  ``dropout_p``); that path is plain XLA (no fused kernel supports it). The XLA path computes in a heads-major
  layout, (B, H, T, hd): ``jax.nn.dot_product_attention``'s XLA form contracts the (B, T, H, hd) operands as
  they are, which XLA's CPU backend runs 1.2-2x slower forward and backward (train-step shapes of the digits
  demo, 64 x 4 heads x 129 slots).
  """
  drop = dropout_key is not None and dropout_rate > 0.0
  if implementation != "xla" and not drop:
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=implementation)
  groups = q.shape[2] // k.shape[2]
  q, k, v = (x.swapaxes(1, 2) for x in (q, jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)))
  scores = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(q.shape[-1]))
  allowed = jnp.ones(scores.shape[-2:], bool) if mask is None else mask
  if causal:
    allowed = allowed & jnp.tril(jnp.ones(scores.shape[-2:], bool))
  probs = jax.nn.softmax(jnp.where(allowed, scores, jnp.finfo(jnp.float32).min), axis=-1)
  if drop:
    keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bhts,bhsd->bhtd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype).swapaxes(1, 2)


def self_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  *,
  cache: KVCache | None = None,
  layer: jax.Array | None = None,
  start: jax.Array | None = None,
  window: int | None = None,
  implementation: str | None = "xla",
  dropout_rate: float = 0.0,
  dropout_key: jax.Array | None = None,
) -> tuple[jax.Array, KVCache | None]:
  """Causal self-attention of a sequence, or of a chunk decoded through the KV cache.

  q (B, T, H, hd); k, v (B, T, Hkv, hd). Without a cache: plain causal attention over the T slots (training,
  teacher forcing). With a cache: the chunk sits at slots start..start+T-1 of ``layer``; its k, v are written
  there and every query attends to the cached slots [0, window) up to its own (``window`` static, default all).
  Returns ((B, T, H, hd), the updated cache or None).
  """
  if cache is None:
    return attend(
      q, k, v, causal=True, implementation=implementation, dropout_rate=dropout_rate, dropout_key=dropout_key
    ), None
  window = cache.slots if window is None else window
  cache, k, v = cache.update(layer, start, k, v, window)
  return attend_cached(q, k.astype(q.dtype), v.astype(q.dtype), slot_mask(start, q.shape[1], window)), cache
