"""RandAR (Pang et al., CVPR 2025): random-order decoding steered by position-instruction tokens, parallel decode."""

from randar_jax.convert import randar as rules
from randar_jax.convert.core import Converter
from randar_jax.decode import randar as decode
from randar_jax.families.base import Family
from randar_jax.models import randar as model

SPEC = Family(
  name="randar",
  kind="generator",
  config=model.RandARConfig,
  model=model.RandAR,
  converter=Converter(rules.is_randar, rules.infer_config, rules.RULES, rules.IGNORE),
  generate=decode.generate,
  default_settings=decode.default_settings,
  parallel=True,
  forward_flops=model.forward_flops,
)
