"""LlamaGen c2i GPT state dict (``Transformer.state_dict()`` of ``autoregressive/models/gpt.py``, bare keys as
released in ``c2i_{B,L}_{256,384}.pt``, ``c2i_XL_384.pt``, ``c2i_{XXL,3B}_384.pt``) -> Flax params.

The keys are RandAR's transformer keys without ``pos_instruct_embeddings`` (RandAR copied this model), so the
rules are RandAR's (``convert/randar.py``, table there) minus that one. Ignored: the
``layers.{i}.attention.kv_cache.{k,v}_cache`` buffers a model carries after ``generate()`` (quirk L8) and a stray
``freqs_cis`` entry (some files / the vLLM serving code store the RoPE table; the GPT class neither stores nor
reads it; we rebuild it). Containers: DDP releases are ``{"model": sd, "optimizer", "steps", "args"}`` and
FSDP releases (XXL, 3B) the raw state dict; ``sources.open_source`` reads both without running code.

The image size is not in the state dict (``c2i_B_256.pt`` and ``c2i_B_384.pt`` have identical keys and shapes):
``infer_config`` picks each size's released one (256 px for B / L, 384 px for XL / XXL / 3B); pass ``--config``
(e.g. ``llamagen:variant=B,image_size=384``) for the other.
"""

from __future__ import annotations

from randar_jax.convert import randar
from randar_jax.convert.core import ConversionError, TensorSource, count_children
from randar_jax.models.llamagen import RELEASED_IMAGE_SIZE, VARIANTS, LlamaGenConfig

RULES = tuple(rule for rule in randar.RULES if rule.source != "pos_instruct_embeddings")
IGNORE = (*randar.IGNORE, r"freqs_cis\Z")


def is_llamagen(keys: list[str]) -> bool:
  return (
    "tok_embeddings.weight" in keys
    and "cls_embedding.embedding_table.weight" in keys
    and "pos_instruct_embeddings" not in keys
  )


def infer_config(source: TensorSource, **overrides) -> LlamaGenConfig:
  """Recognises a released GPT size (B, L, XL, XXL, 3B; multi-head attention, SwiGLU rounded to 256) from the
  tensor shapes; the grid is the size's released image size / 16 (see the module doc).

  Raises ConversionError when the shapes match no released size: pass an explicit config then.
  """
  keys = source.keys()
  if not is_llamagen(keys):
    raise ConversionError(
      f"{source.path} is not a LlamaGen GPT checkpoint (no tok_embeddings / cls_embedding, "
      f"or RandAR's pos_instruct_embeddings)"
    )
  vocab, dim = source.shape("tok_embeddings.weight")
  n_layer = count_children(keys, "layers.")
  class_rows = source.shape("cls_embedding.embedding_table.weight")[0]
  qkv_rows = source.shape("layers.0.attention.wqkv.weight")[0]
  ffn = source.shape("layers.0.feed_forward.w1.weight")[0]
  for name, sizes in VARIANTS.items():
    if name == "tiny" or sizes["dim"] != dim or sizes["n_layer"] != n_layer:
      continue
    config = LlamaGenConfig.variant(name, vocab_size=vocab, num_classes=class_rows - 1, **overrides)
    if qkv_rows == 3 * dim and ffn == config.ffn_hidden:
      return config
  released = ", ".join(
    f"{k}: {v['dim']}x{v['n_layer']} ({RELEASED_IMAGE_SIZE[k]} px)" for k, v in VARIANTS.items() if k != "tiny"
  )
  raise ConversionError(
    f"{source.path}: dim={dim}, layers={n_layer}, wqkv rows={qkv_rows}, SwiGLU hidden={ffn} match no released "
    f"LlamaGen GPT size ({released}); pass --config with the model's architecture"
  )
