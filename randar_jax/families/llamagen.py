"""LlamaGen (Sun et al. 2024): the class-conditional raster GPT that RandAR starts from, one token per step."""

from randar_jax.convert import llamagen as rules
from randar_jax.convert.core import Converter
from randar_jax.decode import llamagen as decode
from randar_jax.families.base import Family
from randar_jax.models import llamagen as model

SPEC = Family(
  name="llamagen",
  kind="generator",
  config=model.LlamaGenConfig,
  model=model.LlamaGen,
  converter=Converter(rules.is_llamagen, rules.infer_config, rules.RULES, rules.IGNORE),
  generate=decode.generate,
  default_settings=decode.default_settings,
  parallel=False,
  forward_flops=model.forward_flops,
)
