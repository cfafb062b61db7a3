"""LlamaGen's class-conditional GPT (Sun et al. 2024, ``FoundationVision/LlamaGen`` ``autoregressive/models/gpt.py``).

The LLaMA backbone of RandAR (``models/llama.py``: RMSNorm, SwiGLU, GQA, 2D RoPE, class token with zero RoPE
rows) without position-instruction tokens: plain next-token prediction in raster order. The training sequence is

    [cls, x_0, x_1, ..., x_{N-2}]        slot 0: class token (RoPE row zero), slot p+1: x_p rotated by cell p

and the logits at slot k predict x_k (the last token is never an input). Usage:

    cfg = LlamaGenConfig.variant('XL')                     # GPT-XL, 384 px (24x24 grid) as released
    model = LlamaGen(cfg, rngs=nnx.Rngs(0))
    logits = model(tokens, labels, order)                  # (B, N, V); order = raster (the only trained order)
    loss, logits = model.loss(tokens, labels, order, dropout_rng=key)

``order`` is accepted for the shared ``Generator`` contract and used (slot k+1 holds x_{order[k]} rotated by
cell order[k]); with the raster order this is exactly the original. Quirks of the original (fixture README, L1-L12)
reproduced here: token dropout hits the class token too (L3, it follows the concatenation); the class token's
q/k vanish through zero RoPE rows (L4); the loss is the mean over all N positions. Consciously fixed: GQA works
in cached decoding (L7, ``decode/llamagen.py``); ``cls_token_num != 1`` is refused (L9).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.models.layers import dropout
from randar_jax.models.llama import LlamaBackbone, LlamaConfig, layer_slot_flops

# gpt.py GPT_models (GPT-3B is listed under text-conditional there but is the c2i 3B release); 'tiny' for tests.
VARIANTS: dict[str, dict[str, int]] = {
  "tiny": dict(dim=128, n_layer=2, n_head=4),
  "B": dict(dim=768, n_layer=12, n_head=12),
  "L": dict(dim=1024, n_layer=24, n_head=16),
  "XL": dict(dim=1280, n_layer=36, n_head=20),
  "XXL": dict(dim=1536, n_layer=48, n_head=24),
  "3B": dict(dim=3200, n_layer=24, n_head=32),  # head_dim 100
}
# Image size of each size's released checkpoint (c2i_B_384 / c2i_L_384 also exist: pass grid_size=24). The
# state dict does not depend on it (RoPE is not stored), so a converter cannot infer it.
RELEASED_IMAGE_SIZE = {"tiny": 128, "B": 256, "L": 256, "XL": 384, "XXL": 384, "3B": 384}
DOWNSAMPLE = 16  # the LlamaGen VQ tokenizer (vq_ds16_c2i)


@dataclasses.dataclass(frozen=True)
class LlamaGenConfig(LlamaConfig):
  """Architecture and numerics of a LlamaGen c2i GPT. Defaults are GPT-B at 256 px (ModelArgs' defaults for
  the training settings: dropouts 0.1, class dropout 0.1)."""

  FAMILY = "llamagen"
  TORCH_ARGS = "LlamaGen ModelArgs"
  vocab_size: int = 16384
  dim: int = 768
  n_layer: int = 12
  n_head: int = 12
  n_kv_head: int | None = None  # None: plain multi-head attention (every release)
  multiple_of: int = 256  # SwiGLU hidden rounding
  ffn_dim_multiplier: float | None = None
  grid_size: int = 16  # tokens per side (image_size / 16)
  num_classes: int = 1000
  class_dropout_prob: float = 0.1  # > 0 adds the null-class row used for CFG
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  token_dropout: float = 0.1  # after [cls, tokens] is concatenated: hits the class token too (L3)
  resid_dropout: float = 0.1  # after the attention output projection
  ffn_dropout: float = 0.1  # after w2
  dtype: str = "float32"  # compute dtype; parameters, norms, RoPE, logits stay float32
  remat: bool = True  # rematerialise each block in the backward pass
  remat_policy: str = "nothing_saveable"  # a jax.checkpoint_policies name
  scan_layers: bool = True  # training: one lax.scan over the blocks (False: a Python loop, faster for small models)
  attention_impl: str | None = "xla"  # 'xla' | 'cudnn' | None (JAX picks)

  def __post_init__(self):
    self.check_llama()

  @property
  def variant_name(self) -> str | None:
    """The released size with this architecture, if any ('B', 'L', 'XL', 'XXL', '3B'; 'tiny')."""
    shape = dict(dim=self.dim, n_layer=self.n_layer, n_head=self.n_head)
    return next((name for name, sizes in VARIANTS.items() if sizes == shape), None)

  @classmethod
  def variant(cls, name: str, *, image_size: int | None = None, **overrides: Any) -> LlamaGenConfig:
    """A released size ('B', 'L', 'XL', 'XXL', '3B') or 'tiny'. ``image_size`` (256 | 384) defaults to the size's
    release (256 for B / L, 384 for XL / XXL / 3B); ``grid_size`` in overrides wins over it."""
    if name not in VARIANTS:
      raise ValueError(f"unknown LlamaGen variant {name!r}; choose from {sorted(VARIANTS)}")
    size = RELEASED_IMAGE_SIZE[name] if image_size is None else int(image_size)
    if size % DOWNSAMPLE:
      raise ValueError(f"image_size must be a multiple of {DOWNSAMPLE} (the VQ downsampling), got {size}")
    return cls(**{"grid_size": size // DOWNSAMPLE, **VARIANTS[name], **overrides})


def forward_flops(cfg: LlamaGenConfig) -> float:
  """Model FLOPs of one teacher-forced example (S = N slots: cls + N - 1 tokens), the MFU convention of
  ``train/metrics.py``: L * (S * 2 (D (H + 2 Hkv) hd + H hd D + 3 D F) + 4 S^2 H hd) + 2 N D V."""
  s = cfg.num_tokens
  layers = cfg.n_layer * (s * layer_slot_flops(cfg) + 4 * s * s * cfg.n_head * cfg.head_dim)
  return float(layers + 2 * s * cfg.dim * cfg.vocab_size)


class LlamaGen(LlamaBackbone, nnx.Module):
  """The LlamaGen c2i Transformer: the LLaMA backbone with the original's init (Linear / Embedding N(0, 0.02),
  output zeros, RMSNorm ones; L12). Parameter names follow the PyTorch state dict (see convert/llamagen.py)."""

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
    """Builds [cls, x_{order[0]}, ..., x_{order[N-2]}(, x_{order[N-1]})] and each slot's RoPE cell (-1 for cls).

    tokens (B, N) raster (generation order if ``ordered``); order (B, N). The last token predicts nothing, so
    it is left out unless ``include_last``. Token dropout follows the concatenation, as in the original (L3).
    Returns x (B, S, D) float32 and cells (B, S) int32, S = N (N + 1 with ``include_last``).
    """
    label_key, token_key = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
    batch, n = order.shape
    keep = n if include_last else n - 1
    in_order = tokens if ordered else jnp.take_along_axis(tokens, order, axis=1)
    x = jnp.concatenate(
      [self.class_embeddings(labels, label_key)[:, None], self.tok_embeddings[...][in_order[:, :keep]]], axis=1
    )
    x = dropout(x, self.config.token_dropout, token_key)
    cells = jnp.concatenate([jnp.full((batch, 1), -1, order.dtype), order[:, :keep]], axis=1)
    return x, cells.astype(jnp.int32)

  def __call__(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    *,
    dropout_rng: jax.Array | None = None,
    ordered: bool = False,
    return_hidden: bool = False,
  ):
    """Teacher-forced logits (B, N, V) in generation order: logits[b, k] predicts tokens[b, order[b, k]].

    tokens (B, N) raster (generation order if ``ordered``); labels (B,) class ids (num_classes = null);
    order (B, N), the raster order for every released model. ``dropout_rng`` turns on the training dropouts
    (label, token, residual, FFN). With ``return_hidden`` also returns the per-layer residual streams (L, B, N, D).
    """
    x, cells = self.training_sequence(tokens, labels, order, dropout_rng=dropout_rng, ordered=ordered)
    layer_rng = jax.random.fold_in(dropout_rng, 1) if dropout_rng is not None else None
    h, _, hidden = self.run_layers(x, cells, dropout_rng=layer_rng, return_hidden=return_hidden)
    logits = self.head(h)
    return (logits, hidden) if return_hidden else logits

  def weighted_loss(
    self,
    tokens: jax.Array,
    labels: jax.Array,
    order: jax.Array,
    valid: jax.Array,
    *,
    dropout_rng: jax.Array | None = None,
    ordered: bool = False,
  ) -> jax.Array:
    """The original's ``valid=`` loss (t2i script only): sum_b valid_b * sum_k ce_bk / max(N * sum_b valid_b, 1).
    valid (B,) 0/1 weights per example."""
    logits = self(tokens, labels, order, dropout_rng=dropout_rng, ordered=ordered)
    targets = tokens if ordered else jnp.take_along_axis(tokens, order, axis=1)
    ce = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    weights = jnp.broadcast_to(valid.astype(jnp.float32)[:, None], ce.shape)
    return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)
