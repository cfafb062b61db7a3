"""The image tokenizers (LlamaGen VQ-16, MaskGIT VQGAN) and the FID Inception: checkpoint kinds that convert
and load like generators but do not generate."""

from randar_jax.convert import inception_fid, vq_llamagen, vq_maskgit
from randar_jax.convert.core import Converter, module_rules
from randar_jax.eval.inception import InceptionConfig, InceptionV3
from randar_jax.families.base import Family
from randar_jax.tokenizers.vq_llamagen import LlamaGenVQConfig, VQLlamaGen
from randar_jax.tokenizers.vq_maskgit import MaskGITVQConfig, VQMaskGIT

VQ_LLAMAGEN = Family(
  name="vq_llamagen",
  kind="tokenizer",
  config=LlamaGenVQConfig,
  model=VQLlamaGen,
  converter=Converter(vq_llamagen.is_vq_llamagen, vq_llamagen.infer_config, module_rules, vq_llamagen.IGNORE),
)
VQ_MASKGIT = Family(
  name="vq_maskgit",
  kind="tokenizer",
  config=MaskGITVQConfig,
  model=VQMaskGIT,
  converter=Converter(vq_maskgit.is_vq_maskgit, vq_maskgit.infer_config, module_rules, vq_maskgit.IGNORE),
)
INCEPTION_FID = Family(
  name="inception_fid",
  kind="features",
  config=InceptionConfig,
  model=InceptionV3,
  converter=Converter(
    inception_fid.is_inception_fid, inception_fid.infer_config, inception_fid.rules, inception_fid.IGNORE
  ),
)
