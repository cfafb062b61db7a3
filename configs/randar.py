"""RandAR, class-conditional ImageNet 256x256 (after RandAR configs/randar/randar_*_{llamagen,maskgit}.yaml).

  randar-jax convert randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors ckpt/randar_l \
      --config configs/randar.py:variant=L,tokenizer=llamagen

Arguments (comma-separated): variant = tiny | B | L | XL | XXL (L 0.3B: 24x1024, XL 0.7B: 36x1280,
XXL 1.4B: 48x1536; head_dim 64), tokenizer = llamagen (16384 codes) | maskgit (1024 codes),
dtype = float32 | bfloat16 (compute dtype; parameters stay float32).
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.randar import RandARConfig


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="L", tokenizer="llamagen", dtype="float32")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = RandARConfig.variant(arg.variant, arg.tokenizer, dtype=arg.dtype).to_dict()
  # Mesh axes (data, fsdp, tensor); -1 takes the remaining devices. See randar_jax/sharding.py for the rules.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  return config
