"""RandAR state dict (``RandARTransformer.state_dict()``, keys exactly as released, no prefix) -> Flax params.

| PyTorch key                               | Flax leaf                         | transform                     |
|-------------------------------------------|-----------------------------------|-------------------------------|
| cls_embedding.embedding_table.weight      | cls_embedding (rows, D)           | copy (row num_classes = null) |
| tok_embeddings.weight                     | tok_embeddings (V, D)             | copy                          |
| pos_instruct_embeddings (1, D)            | pos_instruct_embeddings (1, D)    | copy (kept 2-D)               |
| layers.{i}.attention.wqkv.weight (3D, D)  | layers/attention/w{q,k,v}[i]      | transpose, split [q|k|v]      |
| layers.{i}.attention.wo.weight (D, D)     | layers/attention/wo[i] (H, hd, D) | transpose, split heads        |
| layers.{i}.feed_forward.w{1,3}.weight     | layers/feed_forward/w{1,3}[i]     | transpose                     |
| layers.{i}.feed_forward.w2.weight         | layers/feed_forward/w2[i]         | transpose                     |
| layers.{i}.{attention,ffn}_norm.weight    | layers/{attention,ffn}_norm/scale | copy                          |
| norm.weight / output.weight               | norm/scale / output (D, V)        | copy / transpose              |

``layers.{i}.attention.kv_cache.*`` buffers (present after the original ran ``generate``) are ignored.
"""

from __future__ import annotations

from randar_jax.convert.core import ConversionError, Rule, TensorSource, copy, count_children, linear, linear_in_heads
from randar_jax.models.randar import TOKENIZER_VOCAB, VARIANTS, RandARConfig

RULES = (
  Rule("cls_embedding.embedding_table.weight", ("cls_embedding",), copy),
  Rule("tok_embeddings.weight", ("tok_embeddings",), copy),
  Rule("pos_instruct_embeddings", ("pos_instruct_embeddings",), copy),
  Rule("layers.{i}.attention_norm.weight", ("layers/attention_norm/scale",), copy),
  Rule(
    "layers.{i}.attention.wqkv.weight", ("layers/attention/wq", "layers/attention/wk", "layers/attention/wv"), linear
  ),
  Rule("layers.{i}.attention.wo.weight", ("layers/attention/wo",), linear_in_heads),
  Rule("layers.{i}.ffn_norm.weight", ("layers/ffn_norm/scale",), copy),
  Rule("layers.{i}.feed_forward.w1.weight", ("layers/feed_forward/w1",), linear),
  Rule("layers.{i}.feed_forward.w3.weight", ("layers/feed_forward/w3",), linear),
  Rule("layers.{i}.feed_forward.w2.weight", ("layers/feed_forward/w2",), linear),
  Rule("norm.weight", ("norm/scale",), copy),
  Rule("output.weight", ("output",), linear),
)
IGNORE = (r"layers\.\d+\.attention\.kv_cache\.(k|v)_cache\Z",)


def is_randar(keys: list[str]) -> bool:
  return "pos_instruct_embeddings" in keys and "tok_embeddings.weight" in keys


def infer_config(source: TensorSource, **overrides) -> RandARConfig:
  """Recognises a published RandAR size from the tensor shapes (head_dim 64, 16x16 grid, null-class row).

  Raises ConversionError when the shapes match no published variant: pass an explicit config then.
  """
  keys = source.keys()
  if not is_randar(keys):
    raise ConversionError(f"{source.path} is not a RandAR checkpoint (no pos_instruct_embeddings / tok_embeddings)")
  vocab, dim = source.shape("tok_embeddings.weight")
  n_layer = count_children(keys, "layers.")
  class_rows = source.shape("cls_embedding.embedding_table.weight")[0]
  for name, sizes in VARIANTS.items():
    if sizes["dim"] == dim and sizes["n_layer"] == n_layer and vocab in TOKENIZER_VOCAB.values():
      tokenizer = next(t for t, v in TOKENIZER_VOCAB.items() if v == vocab)
      return RandARConfig.variant(name, tokenizer, num_classes=class_rows - 1, **overrides)
  raise ConversionError(
    f"{source.path}: dim={dim}, layers={n_layer}, vocab={vocab} match no published RandAR size "
    f"({', '.join(f'{k}: {v}' for k, v in VARIANTS.items())}); pass --config with the model's architecture"
  )
