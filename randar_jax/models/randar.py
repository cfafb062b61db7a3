"""RandAR: a decoder-only transformer that generates VQ image tokens in any order (Pang et al., CVPR 2025).

Faithful to ``RandAR/model/randar_gpt.py`` (see ``docs/randar.md``): LLaMA pre-norm blocks (RMSNorm,
SwiGLU, no biases), 2D RoPE on q/k, a class token whose RoPE rows are zero, and *position-instruction tokens*:
one shared vector rotated per head by the RoPE of the cell to generate next. The training sequence is

    [cls, p_0, x_0, p_1, x_1, ..., p_{N-1}, x_{N-1}]     p_k: instruction for cell order[k], x_k: its token

with plain causal attention; logits at the p_k slots predict the tokens. Usage:

    cfg = RandARConfig.variant('L', tokenizer='llamagen')
    with sharding.model_context():
      model = RandAR(cfg, rngs=nnx.Rngs(0))
    logits = model(tokens, labels, order)                  # (B, N, V), generation order
    loss, logits = model.loss(tokens, labels, order, dropout_rng=key)

Layers are stacked on a leading axis (``nnx.vmap`` at creation) and applied with ``lax.scan`` (optionally
rematerialised). The same ``run_layers`` serves teacher-forced training and KV-cached decoding. The LLaMA pieces
(``Attention``, ``Block``, the config properties) live in ``models/llama.py``, shared with LlamaGen.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from randar_jax.models import rope
from randar_jax.models.layers import dropout, normal, param
from randar_jax.models.llama import LlamaBackbone, LlamaConfig, layer_slot_flops

# Published sizes (RandAR configs/randar/*.yaml; XXL = LlamaGen GPT-XXL shape, no public weights).
VARIANTS: dict[str, dict[str, int]] = {
  "tiny": dict(dim=128, n_layer=2, n_head=4),
  "B": dict(dim=768, n_layer=12, n_head=12),
  "L": dict(dim=1024, n_layer=24, n_head=16),
  "XL": dict(dim=1280, n_layer=36, n_head=20),
  "XXL": dict(dim=1536, n_layer=48, n_head=24),
}
TOKENIZER_VOCAB = {"llamagen": 16384, "maskgit": 1024}


@dataclasses.dataclass(frozen=True)
class RandARConfig(LlamaConfig):
  """Architecture and numerics of a RandAR transformer. Defaults are RandAR-L with the LlamaGen tokenizer."""

  FAMILY = "randar"
  TORCH_ARGS = "RandAR constructor arguments"
  vocab_size: int = 16384
  dim: int = 1024
  n_layer: int = 24
  n_head: int = 16
  n_kv_head: int | None = None  # None: plain multi-head attention
  multiple_of: int = 256  # SwiGLU hidden rounding
  ffn_dim_multiplier: float | None = None
  grid_size: int = 16  # tokens per side; the sequence has grid_size**2 image tokens
  num_classes: int = 1000
  class_dropout_prob: float = 0.1  # > 0 adds the null-class row used for CFG
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  token_dropout: float = 0.1  # on image-token embeddings only
  resid_dropout: float = 0.1  # after the attention output projection
  ffn_dropout: float = 0.1  # after w2
  dtype: str = "float32"  # compute dtype; parameters, norms, RoPE, logits stay float32
  remat: bool = True  # rematerialise each block in the backward pass
  remat_policy: str = "nothing_saveable"  # a jax.checkpoint_policies name
  scan_layers: bool = True  # training: one lax.scan over the blocks (False: a Python loop, faster for small models)
  attention_impl: str | None = "xla"  # 'xla' | 'cudnn' | None (JAX picks)

  def __post_init__(self):
    self.check_llama()

  @classmethod
  def variant(cls, name: str, tokenizer: str = "llamagen", **overrides: Any) -> RandARConfig:
    """A published size ('tiny', 'B', 'L', 'XL', 'XXL') with a tokenizer vocabulary ('llamagen' | 'maskgit')."""
    if name not in VARIANTS:
      raise ValueError(f"unknown RandAR variant {name!r}; choose from {sorted(VARIANTS)}")
    if tokenizer not in TOKENIZER_VOCAB:
      raise ValueError(f"unknown tokenizer {tokenizer!r}; choose from {sorted(TOKENIZER_VOCAB)}")
    return cls(**{"vocab_size": TOKENIZER_VOCAB[tokenizer], **VARIANTS[name], **overrides})


class RandAR(LlamaBackbone, nnx.Module):
  """The RandAR transformer: the LLaMA backbone plus the position-instruction vector. Parameter names follow the
  PyTorch state dict (see convert/randar.py)."""

  def add_embeddings(self, cfg: RandARConfig, rngs: nnx.Rngs) -> None:
    self.pos_instruct_embeddings = param(rngs, normal(0.02), (1, cfg.dim), (None, "embed"))

  # ---- the interleaved sequence -------------------------------------------------------------------------------

  def instruction_tokens(self, cells: jax.Array, table: np.ndarray | None = None) -> jax.Array:
    """Position-instruction tokens for raster cells (B, N) -> (B, N, D) float32: the shared vector, per head,
    rotated by each cell's RoPE (it is rotated again inside attention, as in the original)."""
    cfg = self.config
    rows = rope.gather_rows(self.rope_table() if table is None else table, cells)
    shared = self.pos_instruct_embeddings[...].reshape(1, 1, cfg.n_head, cfg.head_dim)
    tokens = rope.apply_rope(jnp.broadcast_to(shared, cells.shape + shared.shape[2:]), rows)
    return tokens.reshape(cells.shape + (cfg.dim,))

  def training_sequence(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    *,
    include_last: bool = False,
    dropout_rng: jax.Array | None = None,
    ordered: bool = False,
  ) -> tuple[jax.Array, jax.Array]:
    """Builds [cls, p_0, x_0, ..., p_{N-1}(, x_{N-1})] and the RoPE cell of every slot (-1 for cls).

    tokens (B, N) in raster order (or already in generation order if ``ordered``, as the data pipeline
    emits them); order (B, N) raster cell of each generation step. The last image token predicts nothing,
    so it is left out unless ``include_last`` (length 2N instead of 2N + 1).
    Returns x (B, S, D) float32 and cells (B, S) int32.
    """
    label_key, token_key = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
    batch, n = order.shape
    cls = self.class_embeddings(labels, label_key)[:, None]
    image = self.tok_embeddings[...][tokens if ordered else jnp.take_along_axis(tokens, order, axis=1)]
    image = dropout(image, self.config.token_dropout, token_key)
    pairs = jnp.stack([self.instruction_tokens(order), image], axis=2).reshape(batch, 2 * n, -1)
    cells = jnp.repeat(order, 2, axis=1)
    if not include_last:
      pairs, cells = pairs[:, :-1], cells[:, :-1]
    x = jnp.concatenate([cls, pairs], axis=1)
    cells = jnp.concatenate([jnp.full((batch, 1), -1, cells.dtype), cells], axis=1)
    return x, cells.astype(jnp.int32)

  def __call__(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    *,
    dropout_rng: jax.Array | None = None,
    return_hidden: bool = False,
    ordered: bool = False,
  ):
    """Teacher-forced logits (B, N, V) in generation order: logits[b, k] predicts tokens[b, order[b, k]].

    tokens (B, N) raster (generation order if ``ordered``); labels (B,) class ids (num_classes = null);
    order (B, N) a permutation per row.
    ``dropout_rng`` turns on training-time dropouts (label, token, residual, FFN). With ``return_hidden``
    also returns the per-layer residual streams (L, B, S, D) over the full 2N + 1 slots.
    """
    x, cells = self.training_sequence(
      tokens, labels, order, include_last=return_hidden, dropout_rng=dropout_rng, ordered=ordered
    )
    layer_rng = jax.random.fold_in(dropout_rng, 1) if dropout_rng is not None else None
    h, _, hidden = self.run_layers(x, cells, dropout_rng=layer_rng, return_hidden=return_hidden)
    logits = self.head(h[:, 1::2][:, : order.shape[1]])  # the instruction slots 1, 3, ..., 2N - 1
    return (logits, hidden) if return_hidden else logits


def forward_flops(cfg: RandARConfig) -> float:
  """Matmul FLOPs of one teacher-forced example: S = 2N slots (the last image token is dropped), attention over
  the full S x S square as the XLA kernel computes it, the head on the N instruction slots:
  L * (S * 2 (D (H + 2 Hkv) hd + H hd D + 3 D F) + 4 S^2 H hd) + 2 N D V."""
  n = cfg.num_tokens
  s = 2 * n
  layers = cfg.n_layer * (s * layer_slot_flops(cfg) + 4 * s * s * cfg.n_head * cfg.head_dim)
  return float(layers + 2 * n * cfg.dim * cfg.vocab_size)
