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
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from randar_jax.models import rope
from randar_jax.models.attention import KVCache, self_attention
from randar_jax.models.generator import Generator, GeneratorConfig
from randar_jax.models.layers import (
  RMSNorm,
  SwiGLU,
  drop_labels,
  dropout,
  find_multiple,
  normal,
  param,
  scan_blocks,
  zeros,
)


class LlamaConfig(GeneratorConfig):
  """Mixin for frozen config dataclasses with LLaMA fields (dim, n_head, n_kv_head, multiple_of,
  ffn_dim_multiplier, num_classes, class_dropout_prob, rope_base, norm_eps, dtype, attention_impl, ...)."""

  TORCH_ARGS: ClassVar[str]  # how errors name the original constructor's arguments

  @classmethod
  def from_torch_args(cls, args: Mapping[str, Any], **overrides: Any):
    """From the original constructor's keyword arguments (LlamaGen ``ModelArgs`` / ``RandARTransformer``; a
    fixture's or manifest's constructor_args). Settings this port does not reproduce are refused, by name."""
    grid = math.isqrt(int(args["block_size"]))
    checks = {
      "block_size a square number of tokens": grid * grid == int(args["block_size"]),
      "cls_token_num == 1 (other values are broken for c2i in the original: the RoPE rows shift, quirk L9)": (
        args.get("cls_token_num", 1) == 1
      ),
      "model_type == 'c2i' (text-conditional t2i is not ported)": args.get("model_type", "c2i") == "c2i",
      "attn_dropout_p == 0": args.get("attn_dropout_p", 0.0) == 0.0,
      "drop_path_rate == 0": args.get("drop_path_rate", 0.0) == 0.0,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
      raise ValueError(f"unsupported {cls.TORCH_ARGS}: need {'; '.join(failed)}")
    return cls(
      vocab_size=args["vocab_size"],
      dim=args["dim"],
      n_layer=args["n_layer"],
      n_head=args["n_head"],
      n_kv_head=args.get("n_kv_head"),
      multiple_of=args.get("multiple_of", 256),
      ffn_dim_multiplier=args.get("ffn_dim_multiplier"),
      grid_size=grid,
      num_classes=args.get("num_classes", 1000),
      class_dropout_prob=args.get("class_dropout_prob", 0.1),
      rope_base=float(args.get("rope_base", 10000)),
      norm_eps=args.get("norm_eps", 1e-5),
      token_dropout=args.get("token_dropout_p", 0.1),
      resid_dropout=args.get("resid_dropout_p", 0.1),
      ffn_dropout=args.get("ffn_dropout_p", 0.1),
      **overrides,
    )

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


class LlamaBackbone(Generator):
  """Mixin for the LLaMA generators (RandAR, LlamaGen): class and token embeddings, the stacked blocks, the final
  norm and the head, created in the originals' order (so a seed gives the same weights as before the split);
  each family builds its own input sequence. Parameter names follow the PyTorch state dicts."""

  STACKED = "layers"

  def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.cls_embedding = param(rngs, normal(0.02), (cfg.class_rows, cfg.dim), ("classes", "embed"))
    self.tok_embeddings = param(rngs, normal(0.02), (cfg.vocab_size, cfg.dim), ("vocab", "embed"))
    self.add_embeddings(cfg, rngs)
    self.layers = make_layers(cfg, rngs)
    self.norm = RMSNorm(cfg.dim, cfg.norm_eps, rngs=rngs)
    self.output = param(rngs, zeros, (cfg.dim, cfg.vocab_size), ("embed", "vocab"))  # zero-init head

  def add_embeddings(self, cfg: LlamaConfig, rngs: nnx.Rngs) -> None:
    """A family's own input parameters, created after the embedding tables (RandAR: the instruction vector)."""

  def rope_table(self) -> np.ndarray:
    """The model's 2D RoPE table (grid_size**2, head_dim / 2, 2), without the class row (``freqs_cis[1:]``)."""
    cfg = self.config
    return rope_table(cfg.grid_size, cfg.head_dim, float(cfg.rope_base))

  def class_embeddings(self, labels: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
    """Class rows (B, D); during training each label becomes the null class with prob class_dropout_prob."""
    if dropout_key is not None and self.config.class_dropout_prob > 0:
      labels = drop_labels(labels, self.config.class_dropout_prob, self.config.null_class, dropout_key)
    return self.cls_embedding[...][labels]

  def run_layers(
    self,
    x: jax.Array,
    cells: jax.Array,
    *,
    table: np.ndarray | None = None,
    cache: KVCache | None = None,
    start: jax.Array | None = None,
    window: int | None = None,
    dropout_rng: jax.Array | None = None,
    return_hidden: bool = False,
  ):
    """Runs every block over x (B, S, D) whose slots have RoPE cells (B, S) (-1 = class token), rotated with
    ``table`` (default: the model's own).

    Without a cache: causal attention over the S slots. With a cache: the slots are start..start+S-1 and
    attend to every cached slot <= their own; ``window`` (static) bounds the slots read (default: all).
    Returns (h (B, S, D) float32, cache, hidden (L, B, S, D) | None).
    """
    cfg = self.config
    rows = rope.gather_rows(self.rope_table() if table is None else table, cells)

    def apply(block, h, cache, layer, key):
      return block(h, rows, cfg, cache=cache, layer=layer, start=start, window=window, dropout_key=key)

    return scan_blocks(
      self.layers,
      cfg.n_layer,
      x,
      apply,
      cache=cache,
      dropout_rng=dropout_rng,
      remat=cfg.remat,
      remat_policy=cfg.remat_policy,
      return_hidden=return_hidden,
      scan=cfg.scan_layers,
    )

  def head(self, h: jax.Array) -> jax.Array:
    """Final RMSNorm and output projection; float32 logits (..., V)."""
    dtype = jnp.dtype(self.config.dtype)
    return (self.norm(h).astype(dtype) @ self.output[...].astype(dtype)).astype(jnp.float32)

  def decays(self, name: str, rank: int) -> bool:
    """Both originals' rule: every tensor with ndim >= 2 decays (the embedding tables and RandAR's (1, D)
    instruction vector included); RMSNorm scales do not."""
    return rank >= 2


def layer_slot_flops(cfg) -> int:
  """Matmul FLOPs of one sequence slot through one LLaMA layer (projections + SwiGLU, no attention scores)."""
  d, hd = cfg.dim, cfg.head_dim
  return 2 * (d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d + 3 * d * cfg.ffn_hidden)
