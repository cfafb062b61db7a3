"""Attention: one entry point for every kernel, and the preallocated KV cache shared by all decoders.

``attend`` is the only place that calls an attention kernel. ``implementation`` selects XLA (default, runs
everywhere), ``'cudnn'`` (flash attention on NVIDIA GPUs) or ``None`` (let JAX choose); a Pallas/splash kernel
slots in here too. Decoding always uses XLA with an explicit slot mask.

The cache is laid out layer-first, ``(layers, batch, slots, kv_heads, head_dim)``, matching the scanned
parameter layout, and is updated in place with ``dynamic_update_slice`` at a write slot.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
  """Keys and values for every layer: each (layers, batch, slots, kv_heads, head_dim)."""
  k: jax.Array
  v: jax.Array

  @classmethod
  def zeros(cls, layers: int, batch: int, slots: int, kv_heads: int, head_dim: int,
            dtype: jnp.dtype = jnp.float32) -> "KVCache":
    shape = (layers, batch, slots, kv_heads, head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

  @property
  def slots(self) -> int:
    return self.k.shape[2]

  def update(self, layer: jax.Array, start: jax.Array, k: jax.Array, v: jax.Array
             ) -> tuple["KVCache", jax.Array, jax.Array]:
    """Writes a chunk k, v (batch, chunk, kv_heads, head_dim) at slot ``start`` of ``layer``.

    Returns the new cache and that layer's full keys and values (batch, slots, kv_heads, head_dim).
    Note: ``dynamic_update_slice`` clamps an out-of-range start; callers size the cache so it never happens.
    """
    index = (layer, 0, start, 0, 0)
    new_k = jax.lax.dynamic_update_slice(self.k, k[None].astype(self.k.dtype), index)
    new_v = jax.lax.dynamic_update_slice(self.v, v[None].astype(self.v.dtype), index)
    return KVCache(new_k, new_v), new_k[layer], new_v[layer]


def slot_mask(start: jax.Array, chunk: int, slots: int) -> jax.Array:
  """Causal-by-slot mask (1, 1, chunk, slots): query at slot ``start + i`` sees keys at slots <= its own."""
  query_slots = start + jnp.arange(chunk)
  return (jnp.arange(slots)[None, :] <= query_slots[:, None])[None, None]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None, causal: bool = False,
           implementation: str | None = "xla") -> jax.Array:
  """Softmax attention with scale head_dim**-0.5. q (B, T, H, hd); k, v (B, S, Hkv, hd) with H % Hkv == 0.

  Returns (B, T, H, hd). ``mask`` is boolean, broadcastable to (B, H, T, S), True where attention is allowed.
  """
  if implementation == "cudnn" and mask is not None:
    implementation = "xla"  # explicit slot masks (decoding) take the XLA path
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation=implementation)
