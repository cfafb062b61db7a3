"""MaskGIT VQGAN state dict (``maskgit-vqgan-imagenet-f16-256.bin``, a raw ``state_dict()``) -> Flax params.

Module names are identical on both sides (``tokenizers/vq_maskgit.py``), so the key map is per leaf:

| PyTorch key                                   | Flax leaf                                  | transform        |
|-----------------------------------------------|--------------------------------------------|------------------|
| ``<module>.weight`` of a Conv2dSame (O, I, kh, kw) | ``<module>/kernel`` (kh, kw, I, O)    | OIHW -> HWIO     |
| ``<module>.bias`` (where the original has one, see below) | ``<module>/bias``                 | copy             |
| ``<norm>.weight`` / ``<norm>.bias`` (GroupNorm) | ``<norm>/scale`` / ``<norm>/bias``        | copy             |
| ``quantize.embedding.weight`` (V, D)          | ``quantize/embedding`` (V, D)              | copy             |

Modules: ``encoder.{conv_in, down.{i}.block.{j}, mid.{j}, norm_out, conv_out}``, ``quantize``,
``decoder.{conv_in, mid.{j}, up.{i}.{block.{j}, upsample_conv}, norm_out, conv_out}``; residual blocks
``norm1, conv1, norm2, conv2[, nin_shortcut (out, out, 1, 1)]``. Biases only on ``encoder.conv_out``,
``decoder.conv_in``, ``decoder.conv_out`` and ``upsample_conv``. The file holds no buffers.
"""

from __future__ import annotations

from randar_jax.convert.core import ConversionError, TensorSource, count_children
from randar_jax.tokenizers.vq_maskgit import MaskGITVQConfig

IGNORE: tuple[str, ...] = ()


def is_vq_maskgit(keys: list[str]) -> bool:
  return (
    "quantize.embedding.weight" in keys
    and "encoder.down.0.block.0.conv1.weight" in keys
    and "quant_conv.weight" not in keys
  )


def infer_config(source: TensorSource) -> MaskGITVQConfig:
  """Channel plan, depth and codebook from the tensor shapes."""
  keys = source.keys()
  if not is_vq_maskgit(keys):
    raise ConversionError(f"{source.path} is not a MaskGIT VQGAN checkpoint (no encoder.down / quantize.embedding)")
  ch = source.shape("encoder.conv_in.weight")[0]
  levels = count_children(keys, "encoder.down.")
  widths = [source.shape(f"encoder.down.{i}.block.0.conv2.weight")[0] for i in range(levels)]
  if any(w % ch for w in widths):
    raise ConversionError(f"{source.path}: level widths {widths} are not multiples of hidden_channels={ch}")
  num_embeddings, dim = source.shape("quantize.embedding.weight")
  return MaskGITVQConfig(
    hidden_channels=ch,
    channel_mult=tuple(w // ch for w in widths),
    num_res_blocks=count_children(keys, "encoder.down.0.block."),
    z_channels=source.shape("encoder.conv_out.weight")[0],
    num_embeddings=num_embeddings,
    embedding_dim=dim,
    image_channels=source.shape("encoder.conv_in.weight")[1],
  )
