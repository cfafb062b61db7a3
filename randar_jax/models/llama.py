"""The LLaMA backbone shared by RandAR and LlamaGen's GPT (both from LlamaGen ``autoregressive/models/gpt.py``).

Pre-norm blocks (RMSNorm, SwiGLU, no biases), grouped-query attention with 2D RoPE on q and k, a class-token
embedding table with an optional null-class row for classifier-free guidance. Parameter names follow the
PyTorch state dicts of both families (``layers.{i}.attention.wqkv`` is split into wq / wk / wv, see
``convert/randar.py``), so both converters share their layer rules.

    @dataclasses.dataclass(frozen=True)
    class RandARConfig(LlamaConfig):            # + dim, n_head, n_kv_head, multiple_of, ... fields
      def __post_init__(self):
        self.check_llama()
    block = Block(cfg, rngs=rngs)                # x (B, S, D) float32, rows (B, S, head_dim/2, 2) RoPE per slot
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from randar_jax.models import rope
from randar_jax.models.attention import KVCache, self_attention
from randar_jax.models.generator import GeneratorConfig
from randar_jax.models.layers import RMSNorm, SwiGLU, dropout, find_multiple, normal, param


class LlamaConfig(GeneratorConfig):
  """Mixin for frozen config dataclasses with LLaMA fields (dim, n_head, n_kv_head, multiple_of,
  ffn_dim_multiplier, num_classes, class_dropout_prob, rope_base, norm_eps, dtype, attention_impl, ...)."""

  def check_llama(self) -> None:
    self.check_common()
    if self.n_head % self.kv_heads:
      raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")
    if self.head_dim % 4:
      raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {self.head_dim}")

  @property
  def kv_heads(self) -> int:
    return self.n_kv_head or self.n_head

  @property
  def ffn_hidden(self) -> int:
    hidden = int(2 * 4 * self.dim / 3)
    if self.ffn_dim_multiplier is not None:
      hidden = int(self.ffn_dim_multiplier * hidden)
    return find_multiple(hidden, self.multiple_of)

  @property
  def class_rows(self) -> int:
    return self.num_classes + (1 if self.class_dropout_prob > 0 else 0)

  @property
  def null_class(self) -> int:
    """The class id that means 'unconditional' (classifier-free guidance)."""
    if self.class_dropout_prob <= 0:
      raise ValueError("this model has no null-class row (class_dropout_prob == 0), so it cannot run CFG")
    return self.num_classes


@functools.lru_cache(maxsize=16)
def rope_table(grid_size: int, head_dim: int, base: float) -> np.ndarray:
  """The cached 2D RoPE table (grid_size**2, head_dim / 2, 2), without the class row."""
  return rope.rope_table(grid_size, head_dim, base)


class Attention(nnx.Module):
  """Multi-head (or grouped-query) attention with 2D RoPE; q (D, H, hd), k/v (D, Hkv, hd), o (H, hd, D)."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    init, d, hd = normal(0.02), cfg.dim, cfg.head_dim
    self.wq = param(rngs, init, (d, cfg.n_head, hd), ("embed", "heads", "head_dim"))
    self.wk = param(rngs, init, (d, cfg.kv_heads, hd), ("embed", "kv_heads", "head_dim"))
    self.wv = param(rngs, init, (d, cfg.kv_heads, hd), ("embed", "kv_heads", "head_dim"))
    self.wo = param(rngs, init, (cfg.n_head, hd, d), ("heads", "head_dim", "embed"))

  def __call__(
    self,
    x: jax.Array,
    rows: jax.Array,
    cfg: LlamaConfig,
    cache: KVCache | None,
    layer: jax.Array,
    start: jax.Array | None,
    window: int | None,
  ) -> tuple[jax.Array, KVCache | None]:
    """x (B, S, D); rows (B, S, hd/2, 2) RoPE per slot. With a cache, x sits at slots start..start+S-1 and
    attends to cached slots [0, window) up to its own."""
    dtype = jnp.dtype(cfg.dtype)
    x = x.astype(dtype)
    q = rope.apply_rope(jnp.einsum("bsd,dhk->bshk", x, self.wq[...].astype(dtype)), rows)
    k = rope.apply_rope(jnp.einsum("bsd,dhk->bshk", x, self.wk[...].astype(dtype)), rows)
    v = jnp.einsum("bsd,dhk->bshk", x, self.wv[...].astype(dtype))
    out, cache = self_attention(
      q, k, v, cache=cache, layer=layer, start=start, window=window, implementation=cfg.attention_impl
    )
    return jnp.einsum("bshk,hkd->bsd", out, self.wo[...].astype(dtype)), cache


class Block(nnx.Module):
  """Pre-norm transformer block: x + Attn(RMSNorm(x)), then h + FFN(RMSNorm(h)). Residual stream in float32."""

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps, rngs=rngs)
    self.attention = Attention(cfg, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, rngs=rngs)
    self.feed_forward = SwiGLU(cfg.dim, cfg.ffn_hidden, init=normal(0.02), rngs=rngs)

  def __call__(self, x, rows, cfg: LlamaConfig, *, cache=None, layer=None, start=None, window=None, dropout_key=None):
    keys = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    h, cache = self.attention(self.attention_norm(x), rows, cfg, cache, layer, start, window)
    x = x + dropout(h.astype(jnp.float32), cfg.resid_dropout, keys[0])
    h = self.feed_forward(self.ffn_norm(x), jnp.dtype(cfg.dtype))
    x = x + dropout(h.astype(jnp.float32), cfg.ffn_dropout, keys[1])
    return x, cache


def make_layers(cfg: LlamaConfig, rngs: nnx.Rngs) -> Block:
  """``cfg.n_layer`` blocks stacked on a leading 'layers' axis (for ``layers.scan_blocks``)."""

  @nnx.split_rngs(splits=cfg.n_layer)
  @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def make(rngs: nnx.Rngs) -> Block:
    return Block(cfg, rngs=rngs)

  return make(rngs)


def layer_slot_flops(cfg) -> int:
  """Matmul FLOPs of one sequence slot through one LLaMA layer (projections + SwiGLU, no attention scores)."""
  d, hd = cfg.dim, cfg.head_dim
  return 2 * (d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d + 3 * d * cfg.ffn_hidden)
