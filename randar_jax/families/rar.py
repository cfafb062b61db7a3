"""RAR (Yu et al. 2024): target-aware positions, randomness annealing to raster order, one token per step."""

from randar_jax.convert import rar as rules
from randar_jax.convert.core import Converter
from randar_jax.decode import rar as decode
from randar_jax.families.base import Family
from randar_jax.models import rar as model

SPEC = Family(
  name="rar",
  kind="generator",
  config=model.RARConfig,
  model=model.RAR,
  converter=Converter(rules.is_rar, rules.infer_config, rules.RULES, rules.IGNORE),
  generate=decode.generate,
  default_settings=decode.default_settings,
  parallel=False,
  forward_flops=model.forward_flops,
)
