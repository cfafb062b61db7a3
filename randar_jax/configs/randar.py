"""RandAR, class-conditional ImageNet 256x256 (after RandAR configs/randar/randar_*_{llamagen,maskgit}.yaml).

  randar-jax train --config randar:variant=L,target=gpu,dtype=bfloat16 --workdir runs/randar_l
  randar-jax train --config randar:runlocal --workdir /tmp/randar_local      # CPU, minutes
  randar-jax convert randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors ckpt/randar_l \
      --config randar:variant=L,tokenizer=llamagen

Arguments (comma-separated): variant = tiny | B | L | XL | XXL (L 0.3B: 24x1024, XL 0.7B: 36x1280,
XXL 1.4B: 48x1536; head_dim 64), tokenizer = llamagen (16384 codes) | maskgit (1024 codes),
dtype = float32 | bfloat16 (compute dtype; parameters stay float32), target = cpu | gpu | tpu (mesh),
data = a codes directory | tfds:NAME | synthetic (default: codes/imagenet-<tokenizer>-adm-256),
runlocal (tiny model, synthetic data, 300 steps: a CPU smoke run). Schema: randar_jax/train/config.py;
any field: --config.optim.lr=1e-4.
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.randar import RandARConfig
from randar_jax.train.config import recipe, shrink_for_cpu

# Mesh (fsdp over chips) per target and size, where float32 parameters + Adam moments (16 bytes / parameter)
# crowd one chip; the rest of the devices go to 'data'.
MESHES = {
  "cpu": {},
  "gpu": {"XXL": dict(fsdp=8)},  # 8x H100 80GB: L/XL fit data-parallel
  "tpu": {"XL": dict(fsdp=4), "XXL": dict(fsdp=8)},  # v4 / v5p (32 / 95 GB HBM per chip)
}


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="L", tokenizer="llamagen", dtype="float32", target="cpu", data="", runlocal=False)
  # RandAR recipe (docs/randar.md section 7): 360k iterations of 1024, AdamW (0.9, 0.95), wd 0.05 on ndim >= 2,
  # lr 4e-4 with 50k warm-up then cosine to 5%, clip 1.0, skip rule (norm sum >= 10 after iteration 100);
  # checkpoints every 5k (the original's --ckpt-every), 50k/100k/... kept.
  config = recipe(
    RandARConfig.variant(arg.variant, arg.tokenizer, dtype=arg.dtype).to_dict(),
    seed=0,
    total_steps=360_000,
    batch_size=1024,
    mesh=MESHES[arg.target].get(arg.variant, {}),
    optim=dict(
      lr=4e-4,
      b1=0.9,
      b2=0.95,
      weight_decay=0.05,
      schedule="cosine",
      warmup_steps=50_000,
      end_lr_ratio=0.05,
      clip_norm=1.0,
      skip_threshold=10.0,
      skip_after=100,
      fused_tensors="wq+wk+wv",
    ),
    data=arg.data or f"codes/imagenet-{arg.tokenizer}-adm-256",
    order=dict(order="random"),
  )  # always random
  if arg.runlocal:
    shrink_for_cpu(
      config,
      RandARConfig.variant("tiny", arg.tokenizer, vocab_size=256, grid_size=8, num_classes=10, remat=False).to_dict(),
      sample_kwargs=dict(num_steps=16),
    )
  return config
