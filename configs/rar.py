"""RAR, class-conditional ImageNet 256x256 with the MaskGIT VQGAN (1d-tokenizer configs/training/generator/rar.yaml,
sizes from README_RAR.md; recipe: shared/spec/rar.md section 6).

  randar-jax convert rar_l.bin ckpt/rar_l --config configs/rar.py:variant=L
  randar-jax sample ckpt/rar_l --out samples --classes 0-9        # raster, per-size guidance / temperature

Arguments (comma-separated): variant = tiny | B | L | XL | XXL (24x768, 24x1024, 32x1280, 40x1408; 16 heads),
dtype = float32 | bfloat16 (compute dtype; parameters stay float32; the original trains in bf16 mixed precision),
anneal_start / anneal_end = the randomness-annealing steps (the paper's ablation table 2 in optimizer steps;
0,0 = raster only), batch_size, total_steps.

Recipe fields (shared schema with the training code):
  config.optimizer  AdamW: lr (peak), b1, b2, eps, weight_decay (masked by model.weight_decay_mask()), grad_clip
  config.schedule   warmup_steps (linear from init_lr), then cosine from lr to end_lr at total_steps
  config.orders     data.orders.OrderPolicy fields: order (with prob r(step)), fallback (otherwise), anneal =
                    (start, end) (r = 1 before start, linear to 0 at end): OrderPolicy(**config.orders.to_dict())
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.rar import RARConfig


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="L", dtype="float32", anneal_start=125_000, anneal_end=187_500, batch_size=2048,
                  total_steps=250_000)
  config = ml_collections.ConfigDict()
  config.seed = 42
  config.model = RARConfig.variant(arg.variant, dtype=arg.dtype).to_dict()
  # Mesh axes (data, fsdp, tensor); -1 takes the remaining devices. See randar_jax/sharding.py for the rules.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  config.batch_size = arg.batch_size          # global; 2048 = 64 per GPU x 32 GPUs
  config.total_steps = arg.total_steps        # 250k steps x 2048 = 400 ImageNet epochs
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", lr=4e-4, b1=0.9, b2=0.96, eps=1e-8, weight_decay=0.03, grad_clip=1.0))
  config.schedule = ml_collections.ConfigDict(dict(
      name="warmup_cosine", init_lr=0.0, warmup_steps=62_500, end_lr=1e-5))
  # OrderPolicy(**config.orders.to_dict()): per example, `order` with probability r(step), else `fallback`
  config.orders = ml_collections.ConfigDict(dict(
      order="random", fallback="raster", anneal=(arg.anneal_start, arg.anneal_end)))
  return config
