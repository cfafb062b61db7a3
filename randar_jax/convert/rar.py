"""RAR state dict (``RAR.state_dict()`` of 1d-tokenizer, keys exactly as released in ``rar_{b,l,xl,xxl}.bin``) ->
Flax params. 18 tensors per block + 9 (``docs/rar.md`` section 5).

| PyTorch key (i = block)                    | Flax leaf                                 | transform               |
|--------------------------------------------|-------------------------------------------|-------------------------|
| cls_token (1, 1, D)                        | cls_token (1, D)                          | squeeze                 |
| embeddings.weight (V + 1 + C + 1, D)       | embeddings                                | copy                    |
| pos_embed, target_aware_pos_embed          | same names, (N + 1024, D)                 | squeeze, all rows kept  |
| timesteps_embeddings (1, N + 100, D)       | timesteps_embeddings (N + 100, D)         | squeeze, all rows kept  |
| blocks.i.norm{1,2}.{weight,bias}           | blocks/norm{1,2}/{scale,bias}[i]          | copy                    |
| blocks.i.attn.qkv.weight (3D, D) / bias    | blocks/attn/qkv/kernel[i] (D, 3, H, hd)   | transpose, [3][H][hd]   |
| blocks.i.attn.{q,k}_norm.{weight,bias}     | blocks/attn/{q,k}_norm/{scale,bias}[i]    | copy                    |
| blocks.i.attn.proj.weight (D, D) / bias    | blocks/attn/proj/kernel[i] (H, hd, D)     | transpose, split heads  |
| blocks.i.mlp.fc{1,2}.{weight,bias}         | blocks/mlp/fc{1,2}/{kernel,bias}[i]       | transpose / copy        |
| blocks.i.adaLN_modulation.1.weight (6D, D) | blocks/adaLN_modulation/kernel[i] (D,6,D) | transpose, (6, D) out * |
| adaln_before_head.adaLN_modulation.1.*     | adaln_before_head/adaLN_modulation/kernel | transpose, (2, D) out * |
| lm_head.weight (V, D) / bias               | lm_head/kernel (D, V) / bias              | transpose / copy        |

* block output rows [shift1 | scale1 | gate1 | shift2 | scale2 | gate2], head rows [scale | shift] (kernel (D, 2, D)).
Biases of split outputs are reshaped the same way ((3D,) -> (3, H, hd), (6D,) -> (6, D)).

Choice recorded: the oversized position / time tables are kept whole (1280 and 356 rows for N = 256, of which
only the first N + 2 are ever read), so the parameter count equals the original's and a round trip is lossless.
The causal ``attn_mask`` buffer is not persistent and never in the state dict, so nothing is ignored.
The released files are raw torch pickles; ``sources.open_source`` reads them without unpickling code
(``.safetensors`` works as well).
"""

from __future__ import annotations

import math

from randar_jax.convert.core import (
  ConversionError,
  Rule,
  TensorSource,
  copy,
  count_children,
  linear,
  linear_in_heads,
  squeeze,
  vector,
)
from randar_jax.models.rar import POS_EXTRA_ROWS, TIME_EXTRA_ROWS, RARConfig


def _block(source: str, target: str, weight=linear, bias=vector) -> tuple[Rule, Rule]:
  return (
    Rule(f"blocks.{{i}}.{source}.weight", (f"blocks/{target}/kernel",), weight),
    Rule(f"blocks.{{i}}.{source}.bias", (f"blocks/{target}/bias",), bias),
  )


def _norm(source: str, target: str) -> tuple[Rule, Rule]:
  return (Rule(f"{source}.weight", (f"{target}/scale",), copy), Rule(f"{source}.bias", (f"{target}/bias",), copy))


RULES = (
  Rule("cls_token", ("cls_token",), squeeze),
  Rule("embeddings.weight", ("embeddings",), copy),
  Rule("pos_embed", ("pos_embed",), squeeze),
  Rule("target_aware_pos_embed", ("target_aware_pos_embed",), squeeze),
  Rule("timesteps_embeddings", ("timesteps_embeddings",), squeeze),
  *_norm("blocks.{i}.norm1", "blocks/norm1"),
  *_norm("blocks.{i}.norm2", "blocks/norm2"),
  *_block("attn.qkv", "attn/qkv"),
  *_norm("blocks.{i}.attn.q_norm", "blocks/attn/q_norm"),
  *_norm("blocks.{i}.attn.k_norm", "blocks/attn/k_norm"),
  *_block("attn.proj", "attn/proj", weight=linear_in_heads),
  *_block("mlp.fc1", "mlp/fc1"),
  *_block("mlp.fc2", "mlp/fc2"),
  *_block("adaLN_modulation.1", "adaLN_modulation"),
  Rule("adaln_before_head.adaLN_modulation.1.weight", ("adaln_before_head/adaLN_modulation/kernel",), linear),
  Rule("adaln_before_head.adaLN_modulation.1.bias", ("adaln_before_head/adaLN_modulation/bias",), vector),
  Rule("lm_head.weight", ("lm_head/kernel",), linear),
  Rule("lm_head.bias", ("lm_head/bias",), copy),
)
IGNORE: tuple[str, ...] = ()


def is_rar(keys: list[str]) -> bool:
  return "target_aware_pos_embed" in keys and "timesteps_embeddings" in keys


def infer_config(source: TensorSource, **overrides) -> RARConfig:
  """The architecture from the tensor shapes (every RAR size is determined by them); training-only settings
  (dropouts) keep their defaults. Raises ConversionError on shapes no RAR model has."""
  keys = source.keys()
  if not is_rar(keys):
    raise ConversionError(f"{source.path} is not a RAR checkpoint (no target_aware_pos_embed or timesteps_embeddings)")
  needed = (
    "embeddings.weight",
    "pos_embed",
    "timesteps_embeddings",
    "lm_head.weight",
    "blocks.0.attn.q_norm.weight",
    "blocks.0.mlp.fc1.weight",
  )
  missing = [k for k in needed if k not in keys]
  if missing:
    raise ConversionError(f"{source.path}: RAR checkpoint without {missing}")
  rows, dim = source.shape("embeddings.weight")
  vocab = source.shape("lm_head.weight")[0]
  num_tokens = source.shape("pos_embed")[-2] - POS_EXTRA_ROWS
  grid = math.isqrt(max(num_tokens, 0))
  head_dim = source.shape("blocks.0.attn.q_norm.weight")[0]
  n_layer = count_children(keys, "blocks.")
  num_classes = rows - vocab - 2
  problems = [
    msg
    for ok, msg in (
      (grid * grid == num_tokens > 0, f"pos_embed rows - {POS_EXTRA_ROWS} = {num_tokens} is not a square grid"),
      (
        source.shape("timesteps_embeddings")[-2] == num_tokens + TIME_EXTRA_ROWS,
        f"timesteps_embeddings has {source.shape('timesteps_embeddings')[-2]} rows, expected N + {TIME_EXTRA_ROWS}",
      ),
      (head_dim > 0 and dim % head_dim == 0, f"q_norm size {head_dim} does not divide the width {dim}"),
      (num_classes > 0, f"embeddings rows {rows} leave no classes after {vocab} codes + mask + null"),
    )
    if not ok
  ]
  if problems:
    raise ConversionError(f"{source.path}: not a RAR layout: {'; '.join(problems)}")
  return RARConfig(
    vocab_size=vocab,
    dim=dim,
    n_layer=n_layer,
    n_head=dim // head_dim,
    mlp_dim=source.shape("blocks.0.mlp.fc1.weight")[0],
    grid_size=grid,
    num_classes=num_classes,
    **overrides,
  )
