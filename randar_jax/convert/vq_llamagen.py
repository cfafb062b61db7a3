"""LlamaGen VQ state dict (``VQModel.state_dict()``: ``vq_ds16_c2i.pt`` holds it under ``'model'``) -> Flax params.

Module names are identical on both sides (``tokenizers/vq_llamagen.py``), so the key map is per leaf:

| PyTorch key                                   | Flax leaf                                  | transform        |
|-----------------------------------------------|--------------------------------------------|------------------|
| ``<module>.weight`` of a Conv2d (O, I, kh, kw) | ``<module>/kernel`` (kh, kw, I, O)         | OIHW -> HWIO     |
| ``<module>.bias``                             | ``<module>/bias``                          | copy             |
| ``<norm>.weight`` / ``<norm>.bias`` (GroupNorm) | ``<norm>/scale`` / ``<norm>/bias``        | copy             |
| ``quantize.embedding.weight`` (V, D)          | ``quantize/embedding`` (V, D)              | copy (unnormalised) |

Modules: ``encoder.{conv_in, conv_blocks.{i}.{res.{j}, attn.{j}, downsample.conv}, mid.{0,1,2}, norm_out,
conv_out}``, ``quant_conv``, ``quantize``, ``post_quant_conv``, ``decoder.{conv_in, mid.{0,1,2},
conv_blocks.{i}.{res.{j}, attn.{j}, upsample.conv}, norm_out, conv_out}``; residual blocks ``norm1, conv1,
norm2, conv2[, nin_shortcut]``, attention blocks ``norm, q, k, v, proj_out``. The usage-statistics buffer
``quantize.codebook_used`` is ignored.
"""

from __future__ import annotations

from randar_jax.convert.core import ConversionError, TensorSource, count_children
from randar_jax.tokenizers.vq_llamagen import LlamaGenVQConfig

IGNORE = (r"quantize\.codebook_used\Z",)


def is_vq_llamagen(keys: list[str]) -> bool:
  return "quant_conv.weight" in keys and "encoder.conv_blocks.0.res.0.conv1.weight" in keys


def infer_config(source: TensorSource) -> LlamaGenVQConfig:
  """Channel plan, codebook and latent sizes from the tensor shapes. ``codebook_l2_norm`` cannot be seen in
  the weights: it is True, as in every released LlamaGen VQ model."""
  keys = source.keys()
  if not is_vq_llamagen(keys):
    raise ConversionError(f"{source.path} is not a LlamaGen VQ checkpoint (no quant_conv / encoder.conv_blocks)")
  ch = source.shape("encoder.conv_in.weight")[0]

  def mult(side: str, level: int) -> int:
    width = source.shape(f"{side}.conv_blocks.{level}.res.0.conv2.weight")[0]
    if width % ch:
      raise ConversionError(f"{source.path}: {side} level {level} width {width} is not a multiple of ch={ch}")
    return width // ch

  levels, decoder_levels = count_children(keys, "encoder.conv_blocks."), count_children(keys, "decoder.conv_blocks.")
  codebook_size, dim = source.shape("quantize.embedding.weight")
  return LlamaGenVQConfig(
    codebook_size=codebook_size,
    codebook_embed_dim=dim,
    ch=ch,
    encoder_ch_mult=tuple(mult("encoder", i) for i in range(levels)),
    decoder_ch_mult=tuple(mult("decoder", i) for i in reversed(range(decoder_levels))),
    z_channels=source.shape("encoder.conv_out.weight")[0],
    num_res_blocks=count_children(keys, "encoder.conv_blocks.0.res."),
    image_channels=source.shape("encoder.conv_in.weight")[1],
  )
