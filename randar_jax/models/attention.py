"""Attention: one entry point for every kernel, and the preallocated KV cache shared by all decoders.

``attend`` is the only place that calls an attention kernel. ``implementation`` selects XLA (default, runs
everywhere), ``'cudnn'`` (flash attention on NVIDIA GPUs) or ``None`` (let JAX choose); a Pallas/splash kernel
slots in here too. Decoding always uses XLA with an explicit slot mask.

The cache is laid out layer-first, ``(layers, batch, kv_heads, slots, head_dim)``: layers first to match the
scanned parameter layout, heads before slots so each (batch, head) block is one contiguous matrix for the
attention matmuls (no transposes of the cache). It is updated in place with ``dynamic_update_slice``, and a
decode step reads only a static *window* of leading slots (the slots its queries can see).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


AXES = ("layers", "batch", "kv_heads", "cache_slots", "head_dim")  # logical axes of KVCache.k / .v


class KVCache(NamedTuple):
  """Keys and values for every layer: each (layers, batch, kv_heads, slots, head_dim)."""
  k: jax.Array
  v: jax.Array

  @classmethod
  def zeros(cls, layers: int, batch: int, slots: int, kv_heads: int, head_dim: int,
            dtype: jnp.dtype = jnp.float32) -> "KVCache":
    shape = (layers, batch, kv_heads, slots, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

  @property
  def slots(self) -> int:
    return self.k.shape[3]

  def update(self, layer: jax.Array, start: jax.Array, k: jax.Array, v: jax.Array, window: int
             ) -> tuple["KVCache", jax.Array, jax.Array]:
    """Writes a chunk k, v (batch, chunk, kv_heads, head_dim) at slot ``start`` of ``layer``.

    Returns the new cache and that layer's keys and values in slots [0, window): (batch, kv_heads, window,
    head_dim). Note: ``dynamic_update_slice`` clamps an out-of-range start; callers size the cache so the
    chunk always fits (the decode plan asserts it).
    """
    index = (layer, 0, 0, start, 0)
    new_k = jax.lax.dynamic_update_slice(self.k, k.swapaxes(1, 2)[None].astype(self.k.dtype), index)
    new_v = jax.lax.dynamic_update_slice(self.v, v.swapaxes(1, 2)[None].astype(self.v.dtype), index)
    read = lambda c: jax.lax.dynamic_slice_in_dim(c, layer, 1, axis=0)[0, :, :, :window]  # noqa: E731
    return KVCache(new_k, new_v), read(new_k), read(new_v)


def slot_mask(start: jax.Array, chunk: int, slots: int) -> jax.Array:
  """Causal-by-slot mask (chunk, slots): query at slot ``start + i`` sees keys at slots <= its own."""
  query_slots = start + jnp.arange(chunk)
  return jnp.arange(slots)[None, :] <= query_slots[:, None]


def attend_cached(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Attention of a chunk against cached slots. q (B, T, H, hd); k, v (B, Hkv, S, hd); mask (T, S) bool.

  Returns (B, T, H, hd). Scores and softmax in float32; grouped-query heads share k/v (head h -> h // G).
  """
  batch, chunk, heads, head_dim = q.shape
  groups = heads // k.shape[1]
  q = q.reshape(batch, chunk, k.shape[1], groups, head_dim).transpose(0, 2, 3, 1, 4)  # (B, Hkv, G, T, hd)
  scores = jnp.einsum("bkgtd,bksd->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(
      jnp.float32(head_dim))
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bksd->bkgtd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)
  return out.transpose(0, 3, 1, 2, 4).reshape(batch, chunk, heads, head_dim)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None, causal: bool = False,
           implementation: str | None = "xla") -> jax.Array:
  """Softmax attention with scale head_dim**-0.5. q (B, T, H, hd); k, v (B, S, Hkv, hd) with H % Hkv == 0.

  Returns (B, T, H, hd). ``mask`` is boolean, broadcastable to (B, H, T, S), True where attention is allowed.
  """
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=implementation)
