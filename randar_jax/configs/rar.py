"""RAR, class-conditional ImageNet 256x256 with the MaskGIT VQGAN (1d-tokenizer configs/training/generator/rar.yaml,
sizes from README_RAR.md; recipe: docs/rar.md section 6).

  randar-jax train --config rar:variant=L,target=gpu,dtype=bfloat16 --workdir runs/rar_l
  randar-jax train --config rar:runlocal --workdir /tmp/rar_local            # CPU, minutes
  randar-jax convert rar_l.bin ckpt/rar_l --config rar:variant=L
  randar-jax sample ckpt/rar_l --out samples --classes 0-9        # raster, per-size guidance / temperature

Arguments (comma-separated): variant = tiny | B | L | XL | XXL (24x768, 24x1024, 32x1280, 40x1408; 16 heads),
dtype = float32 | bfloat16 (compute dtype; parameters stay float32; the original trains in bf16 mixed precision),
anneal_start / anneal_end = the randomness-annealing steps (the paper's ablation table 2 in optimizer steps),
batch_size, total_steps, target = cpu | gpu | tpu (mesh), data = a codes directory | tfds:NAME | synthetic,
runlocal (tiny model, synthetic data, 300 steps). Schema: randar_jax/train/config.py (shared with RandAR).
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.rar import RARConfig
from randar_jax.train.config import recipe, shrink_for_cpu

MESHES = {"cpu": {}, "gpu": {}, "tpu": {"XL": dict(fsdp=4), "XXL": dict(fsdp=4)}}  # see randar_jax/configs/randar.py


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(
    arg,
    variant="L",
    dtype="float32",
    anneal_start=125_000,
    anneal_end=187_500,
    batch_size=2048,
    total_steps=250_000,
    target="cpu",
    data="",
    runlocal=False,
  )
  # docs/rar.md 6.3: AdamW lr 4e-4, betas (0.9, 0.96), wd 0.03 (the model's name-rule mask), clip 1.0, linear warm-up
  # over 62.5k steps then cosine to an absolute 1e-5 at 250k; no skip rule. Batch 2048 = 64 per GPU x 32 GPUs;
  # 250k steps x 2048 = 400 ImageNet epochs. Orders: random with probability r(step), annealed 1 -> 0, else raster.
  config = recipe(
    RARConfig.variant(arg.variant, dtype=arg.dtype).to_dict(),
    seed=42,
    total_steps=arg.total_steps,
    batch_size=arg.batch_size,
    mesh=MESHES[arg.target].get(arg.variant, {}),
    optim=dict(
      lr=4e-4,
      b1=0.9,
      b2=0.96,
      weight_decay=0.03,
      schedule="cosine",
      warmup_steps=62_500,
      end_lr=1e-5,
      clip_norm=1.0,
      skip_threshold=None,
      fused_tensors="",
    ),
    data=arg.data or "codes/imagenet-maskgit-ten-crop-256",
    order=dict(order="random", fallback="raster", anneal=(arg.anneal_start, arg.anneal_end)),
  )
  if arg.runlocal:
    shrink_for_cpu(
      config, RARConfig.variant("tiny", vocab_size=256, grid_size=8, num_classes=10, remat=False).to_dict()
    )
    config.data.order.anneal = (100, 200)
  return config
