"""RAR: randomized autoregressive visual generation (Yu et al. 2024), a ViT-style generator with adaLN-Zero.

Faithful to ``1d-tokenizer: modeling/rar.py`` (see ``docs/rar.md``). One vocabulary holds the image
codes (0..V-1), a mask token (V, unused), the classes (c -> V + 1 + c) and the null class (V + 1 + C). The
sequence for a generation order o (a permutation of the N raster cells) is

    slot   0        1               2 + i            (i = 0..N-1)
    token  cls      E[cond]         E[x[o[i]]]
    + pos  pos[0]   pos[1]          pos[2 + o[i]]                  (each token carries its own cell)
    + tape 0        tape[2 + o[0]]  tape[2 + o[i+1]] (0 for i = N-1)   (target-aware: the cell it predicts)
    c      E[cond] + time[slot]                                    (per-slot adaLN conditioning)

with causal attention; the output at slot s (1 <= s <= N) predicts x[o[s - 1]]. Blocks are pre-norm
adaLN-Zero (LayerNorm eps 1e-6, QK-LayerNorm per head, GELU(erf) MLP, biases everywhere); the head modulates
a parameter-free LayerNorm with (scale, shift) -- the reverse of the blocks' (shift, scale) order. Usage:

    cfg = RARConfig.variant('L')
    with sharding.model_context():
      model = RAR(cfg, rngs=nnx.Rngs(0))
    logits = model(tokens, labels, order)                    # (B, N, V) in generation order
    loss, logits = model.loss(tokens, labels, order, dropout_rng=key)

``labels`` are class ids 0..C-1, with C (``config.null_class``) the unconditional class. Blocks are stacked
(``nnx.vmap``) and scanned (``layers.scan_blocks``); ``run_layers`` serves training and KV-cached decoding, and
``slot_inputs`` builds the inputs of any slots, so the decoder feeds exactly what training saw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.config_io import original_args
from randar_jax.models.attention import KVCache, self_attention
from randar_jax.models.generator import Generator, GeneratorConfig
from randar_jax.models.layers import (
  Dense,
  LayerNorm,
  drop_labels,
  dropout,
  layer_norm,
  normal,
  param,
  scan_blocks,
  zeros,
)

# Published sizes (1d-tokenizer README_RAR.md; always 16 heads, MLP ratio 4). 'tiny' is for tests and demos.
VARIANTS: dict[str, dict[str, int]] = {
  "tiny": dict(dim=64, n_layer=2, n_head=4, mlp_dim=256),
  "B": dict(dim=768, n_layer=24, n_head=16, mlp_dim=3072),
  "L": dict(dim=1024, n_layer=24, n_head=16, mlp_dim=4096),
  "XL": dict(dim=1280, n_layer=32, n_head=16, mlp_dim=5120),
  "XXL": dict(dim=1408, n_layer=40, n_head=16, mlp_dim=6144),
}
POS_EXTRA_ROWS, TIME_EXTRA_ROWS = 1024, 100  # the original's table sizes: N + 1024 and N + 100 rows
# 1d-tokenizer utils/train_utils.py create_optimizer: substrings that exclude a parameter from weight decay
NO_DECAY_SUBSTRINGS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


@dataclasses.dataclass(frozen=True)
class RARConfig(GeneratorConfig):
  """Architecture and numerics of a RAR generator. Defaults are RAR-L with the MaskGIT VQGAN (1024 codes)."""

  FAMILY = "rar"
  vocab_size: int = 1024  # image codes (the MaskGIT VQGAN codebook)
  dim: int = 1024
  n_layer: int = 24
  n_head: int = 16
  mlp_dim: int = 4096
  grid_size: int = 16  # tokens per side (image_seq_len = grid_size**2)
  num_classes: int = 1000
  class_dropout_prob: float = 0.1  # label dropout to the null class during training
  dropout: float = 0.1  # after the attention projection, after GELU and after fc2
  attn_dropout: float = 0.1  # on attention probabilities
  norm_eps: float = 1e-6
  dtype: str = "float32"  # compute dtype; parameters, norms, residual stream, logits stay float32
  remat: bool = True
  remat_policy: str = "nothing_saveable"
  scan_layers: bool = True  # training: one lax.scan over the blocks (False: a Python loop, faster for small models)
  attention_impl: str | None = "xla"  # 'xla' | 'cudnn' | None (JAX picks); training with attn dropout uses XLA

  def __post_init__(self):
    if min(self.vocab_size, self.dim, self.n_head, self.n_layer, self.mlp_dim, self.grid_size, self.num_classes) < 1:
      raise ValueError(f"every RAR size must be positive: {self}")
    self.check_common()

  @property
  def kv_heads(self) -> int:
    return self.n_head

  @property
  def embedding_rows(self) -> int:
    """Codes, the mask token, the classes and the null class."""
    return self.vocab_size + 1 + self.num_classes + 1

  @property
  def pos_rows(self) -> int:
    """Rows of pos_embed / target_aware_pos_embed as released (N + 1024; only rows < N + 2 are ever read)."""
    return self.num_tokens + POS_EXTRA_ROWS

  @property
  def time_rows(self) -> int:
    """Rows of timesteps_embeddings as released (N + 100; only rows < N + 2 are ever read)."""
    return self.num_tokens + TIME_EXTRA_ROWS

  @property
  def null_class(self) -> int:
    """The class id that means 'unconditional'; its embedding row is the original's none_condition_id."""
    return self.num_classes

  def condition_id(self, labels: jax.Array) -> jax.Array:
    """Class ids (0..C, C = null) -> vocabulary ids (V + 1 + label)."""
    return labels + self.vocab_size + 1

  @property
  def variant_name(self) -> str | None:
    """The published size with this architecture, if any ('B', 'L', ...)."""
    shape = dict(dim=self.dim, n_layer=self.n_layer, n_head=self.n_head, mlp_dim=self.mlp_dim)
    return next((name for name, sizes in VARIANTS.items() if sizes == shape), None)

  @classmethod
  def variant(cls, name: str, **overrides: Any) -> RARConfig:
    """A published size ('B', 'L', 'XL', 'XXL') or 'tiny', with optional field overrides."""
    if name not in VARIANTS:
      raise ValueError(f"unknown RAR variant {name!r}; choose from {sorted(VARIANTS)}")
    return cls(**{**VARIANTS[name], **overrides})

  @classmethod
  def from_original(cls, config: Mapping[str, Any], **overrides: Any) -> RARConfig:
    """From the original OmegaConf dict handed to ``RAR(config)`` (``{'model': {'vq_model', 'generator'}}``),
    e.g. a fixture's or manifest's ``config`` (or the whole fixture / manifest document)."""
    config = original_args(config)
    model = config.get("model", config)
    gen, vq = model["generator"], model["vq_model"]
    grid = math.isqrt(int(gen["image_seq_len"]))
    if grid * grid != int(gen["image_seq_len"]):
      raise ValueError(f"image_seq_len {gen['image_seq_len']} is not a square grid")
    return cls(
      vocab_size=int(vq["codebook_size"]),
      dim=int(gen["hidden_size"]),
      n_layer=int(gen["num_hidden_layers"]),
      n_head=int(gen["num_attention_heads"]),
      mlp_dim=int(gen["intermediate_size"]),
      grid_size=grid,
      num_classes=int(gen["condition_num_classes"]),
      class_dropout_prob=float(gen.get("class_label_dropout", 0.1)),
      dropout=float(gen.get("dropout", 0.1)),
      attn_dropout=float(gen.get("attn_drop", 0.1)),
      **overrides,
    )


class Attention(nnx.Module):
  """Fused qkv with biases (D -> [3][H][hd]), per-head QK-LayerNorm, causal attention, output projection."""

  def __init__(self, cfg: RARConfig, *, rngs: nnx.Rngs):
    init, d, h, hd = normal(0.02), cfg.dim, cfg.n_head, cfg.head_dim
    self.qkv = Dense((d,), (3, h, hd), ("embed", None, "heads", "head_dim"), init=init, rngs=rngs)
    self.q_norm = LayerNorm(hd, cfg.norm_eps, names=("head_dim",), rngs=rngs)
    self.k_norm = LayerNorm(hd, cfg.norm_eps, names=("head_dim",), rngs=rngs)
    self.proj = Dense((h, hd), (d,), ("heads", "head_dim", "embed"), init=init, rngs=rngs)

  def __call__(
    self, x: jax.Array, cfg: RARConfig, cache: KVCache | None, layer, start, window, keys: tuple
  ) -> tuple[jax.Array, KVCache | None]:
    dtype = jnp.dtype(cfg.dtype)
    qkv = self.qkv(x, dtype)  # (B, S, 3, H, hd)
    q, k, v = self.q_norm(qkv[:, :, 0]), self.k_norm(qkv[:, :, 1]), qkv[:, :, 2]
    out, cache = self_attention(
      q,
      k,
      v,
      cache=cache,
      layer=layer,
      start=start,
      window=window,
      implementation=cfg.attention_impl,
      dropout_rate=cfg.attn_dropout,
      dropout_key=keys[0],
    )
    return dropout(self.proj(out, dtype), cfg.dropout, keys[1]), cache


class Mlp(nnx.Module):
  """timm ``Mlp``: fc1 -> GELU (exact erf) -> dropout -> fc2 -> dropout."""

  def __init__(self, cfg: RARConfig, *, rngs: nnx.Rngs):
    self.fc1 = Dense((cfg.dim,), (cfg.mlp_dim,), ("embed", "mlp"), init=normal(0.02), rngs=rngs)
    self.fc2 = Dense((cfg.mlp_dim,), (cfg.dim,), ("mlp", "embed"), init=normal(0.02), rngs=rngs)

  def __call__(self, x: jax.Array, cfg: RARConfig, keys: tuple) -> jax.Array:
    dtype = jnp.dtype(cfg.dtype)
    h = dropout(jax.nn.gelu(self.fc1(x, dtype), approximate=False), cfg.dropout, keys[0])
    return dropout(self.fc2(h, dtype), cfg.dropout, keys[1])


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  return x * (1 + scale) + shift


class Block(nnx.Module):
  """adaLN-Zero pre-norm block; the six modulations (shift, scale, gate) x (attention, MLP) come from c."""

  def __init__(self, cfg: RARConfig, *, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(cfg.dim, cfg.norm_eps, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.norm2 = LayerNorm(cfg.dim, cfg.norm_eps, rngs=rngs)
    self.mlp = Mlp(cfg, rngs=rngs)
    # output axis [shift1|scale1|gate1|shift2|scale2|gate2] as (6, D); zero-initialised (adaLN-Zero)
    self.adaLN_modulation = Dense((cfg.dim,), (6, cfg.dim), ("embed", None, None), init=zeros, rngs=rngs)

  def __call__(
    self,
    x: jax.Array,
    c: jax.Array,
    cfg: RARConfig,
    *,
    cache=None,
    layer=None,
    start=None,
    window=None,
    dropout_key=None,
  ) -> tuple[jax.Array, KVCache | None]:
    keys = tuple(jax.random.split(dropout_key, 4)) if dropout_key is not None else (None,) * 4
    mod = self.adaLN_modulation(jax.nn.silu(c), jnp.dtype(cfg.dtype)).astype(jnp.float32)
    shift1, scale1, gate1, shift2, scale2, gate2 = (mod[..., i, :] for i in range(6))
    h, cache = self.attn(modulate(self.norm1(x), shift1, scale1), cfg, cache, layer, start, window, keys[:2])
    x = x + gate1 * h.astype(jnp.float32)
    h = self.mlp(modulate(self.norm2(x), shift2, scale2), cfg, keys[2:])
    return x + gate2 * h.astype(jnp.float32), cache


class FinalLayer(nnx.Module):
  """``LN_no_affine(x) * (1 + scale) + shift`` with (scale, shift) = Linear(SiLU(c)) -- note the order."""

  def __init__(self, cfg: RARConfig, *, rngs: nnx.Rngs):
    self.adaLN_modulation = Dense((cfg.dim,), (2, cfg.dim), ("embed", None, None), init=zeros, rngs=rngs)

  def __call__(self, x: jax.Array, c: jax.Array, cfg: RARConfig) -> jax.Array:
    mod = self.adaLN_modulation(jax.nn.silu(c), jnp.dtype(cfg.dtype)).astype(jnp.float32)
    return modulate(layer_norm(x, cfg.norm_eps), mod[..., 1, :], mod[..., 0, :])


class RAR(Generator, nnx.Module):
  """The RAR generator. Parameter names follow the PyTorch state dict (see convert/rar.py)."""

  STACKED = "blocks"

  def __init__(self, cfg: RARConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    init = normal(0.02)  # torch trunc_normal_(std=0.02) truncates at +-2 absolute: effectively untruncated
    self.cls_token = param(rngs, zeros, (1, cfg.dim), (None, "embed"))
    self.embeddings = param(rngs, init, (cfg.embedding_rows, cfg.dim), (None, "embed"))
    self.pos_embed = param(rngs, init, (cfg.pos_rows, cfg.dim), (None, "embed"))
    self.target_aware_pos_embed = param(rngs, init, (cfg.pos_rows, cfg.dim), (None, "embed"))
    self.timesteps_embeddings = param(rngs, init, (cfg.time_rows, cfg.dim), (None, "embed"))

    @nnx.split_rngs(splits=cfg.n_layer)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs: nnx.Rngs) -> Block:
      return Block(cfg, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.adaln_before_head = FinalLayer(cfg, rngs=rngs)
    self.lm_head = Dense((cfg.dim,), (cfg.vocab_size,), ("embed", "vocab"), init=init, rngs=rngs)

  # ---- inputs ----------------------------------------------------------------------------------------------

  def slot_inputs(
    self, tokens: jax.Array, labels: jax.Array, order: jax.Array, slots: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Block inputs x and adaLN conditioning c (B, S, D) float32 for absolute sequence slots (S,).

    tokens (B, M) image codes in generation order (slot 2 + i holds tokens[:, i]; M >= the largest such i + 1);
    labels (B,) class ids (null_class = unconditional); order (B, N) the raster cell of each generation step.
    Slots may be traced (the decoder passes start + arange(width)).
    """
    cfg, n = self.config, order.shape[1]
    slots = jnp.asarray(slots, jnp.int32)
    emb = self.embeddings[...]
    cond = emb[cfg.condition_id(labels)][:, None]  # (B, 1, D)
    current = jnp.take(order, jnp.clip(slots - 2, 0, n - 1), axis=1)  # (B, S) own cell
    target = jnp.take(order, jnp.clip(slots - 1, 0, n - 1), axis=1)  # cell it predicts
    image = emb[jnp.take(tokens, jnp.clip(slots - 2, 0, tokens.shape[1] - 1), axis=1)]
    x = jnp.where((slots == 0)[:, None], self.cls_token[...], jnp.where((slots == 1)[:, None], cond, image))
    x = x + self.pos_embed[...][jnp.where(slots >= 2, 2 + current, slots)]
    predicts = ((slots >= 1) & (slots <= n))[:, None]
    x = x + jnp.where(predicts, self.target_aware_pos_embed[...][2 + target], 0.0)
    return x, cond + self.timesteps_embeddings[...][slots]

  # ---- the transformer --------------------------------------------------------------------------------------

  def run_layers(
    self,
    x: jax.Array,
    c: jax.Array,
    *,
    cache: KVCache | None = None,
    start: jax.Array | None = None,
    window: int | None = None,
    dropout_rng: jax.Array | None = None,
    return_hidden: bool = False,
  ):
    """Every block over x (B, S, D) with per-slot conditioning c (B, S, D).

    Without a cache: causal attention over the S slots. With a cache: the slots are start..start+S-1 and
    attend to the cached slots [0, window) up to their own. Returns (h (B, S, D) float32, cache,
    hidden (L, B, S, D) | None).
    """
    cfg = self.config
    c = c.astype(jnp.float32)

    def apply(block, h, cache, layer, key):
      return block(h, c, cfg, cache=cache, layer=layer, start=start, window=window, dropout_key=key)

    return scan_blocks(
      self.blocks,
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

  def head(self, h: jax.Array, c: jax.Array) -> jax.Array:
    """adaLN final layer and lm_head: float32 logits (..., V) over the image codes."""
    dtype = jnp.dtype(self.config.dtype)
    return self.lm_head(self.adaln_before_head(h, c, self.config), dtype).astype(jnp.float32)

  def __call__(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    *,
    dropout_rng: jax.Array | None = None,
    ordered: bool = False,
    include_last: bool = False,
    return_hidden: bool = False,
  ):
    """Teacher-forced logits (B, N, V) in generation order: logits[b, k] predicts tokens[b, order[b, k]].

    tokens (B, N) raster (generation order if ``ordered``, as the data pipeline emits them); labels (B,)
    class ids (null_class = unconditional); order (B, N) a permutation per row. ``dropout_rng`` turns on the
    training dropouts (label, attention, residual). The last image token predicts nothing, so its slot is
    only run with ``include_last`` (then logits are (B, N + 1, V), the last one from that slot) or
    ``return_hidden`` (also returns the per-block residual streams (L, B, N + 2, D) and c (B, N + 2, D)).
    """
    cfg, n = self.config, order.shape[1]
    label_key, layer_key = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
    labels = drop_labels(labels, cfg.class_dropout_prob, cfg.null_class, label_key)
    seq = tokens if ordered else jnp.take_along_axis(tokens, order, axis=1)
    slots = jnp.arange(n + 2 if include_last or return_hidden else n + 1)
    x, c = self.slot_inputs(seq, labels, order, slots)
    h, _, hidden = self.run_layers(x, c, dropout_rng=layer_key, return_hidden=return_hidden)
    end = n + 2 if include_last else n + 1
    logits = self.head(h[:, 1:end], c[:, 1:end])
    return (logits, hidden, c) if return_hidden else logits

  def decays(self, name: str, rank: int) -> bool:
    """RAR's name rule (``create_optimizer`` in 1d-tokenizer): no decay for tensors of rank < 2 or whose name
    contains any of NO_DECAY_SUBSTRINGS (case-sensitive).

    Our leaf names keep the torch names' substrings and ranks >= 2 where torch has them, so the rule gives the
    same sets: decayed cls_token, qkv / proj / fc1 / fc2 / block adaLN kernels and lm_head kernel; not decayed:
    biases, norms, the embedding and positional / time tables, and -- by a string accident of the original
    ("adaln" contains "ln") -- all of adaln_before_head.
    """
    return rank >= 2 and not any(s in name for s in NO_DECAY_SUBSTRINGS)


def forward_flops(cfg: RARConfig) -> float:
  """Matmul FLOPs of one teacher-forced example over S = N + 2 slots [cls, cond, x_0..x_{N-1}]: per layer and
  slot qkv + proj (4 D^2), the MLP (2 D M) and the per-slot adaLN modulation (6 D^2), attention over the full
  S x S square; the head's adaLN (2 D^2) and projection (D V) on the N + 1 predicting slots."""
  d, s = cfg.dim, cfg.num_tokens + 2
  layers = cfg.n_layer * (s * 2 * (4 * d * d + 2 * d * cfg.mlp_dim + 6 * d * d) + 4 * s * s * d)
  return float(layers + 2 * (cfg.num_tokens + 1) * (2 * d * d + d * cfg.vocab_size))
