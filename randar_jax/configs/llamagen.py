"""LlamaGen class-conditional GPT, ImageNet 256 / 384 with the LlamaGen VQ tokenizer (FoundationVision/LlamaGen
``autoregressive/train/train_c2i.py``; sizes from ``autoregressive/models/gpt.py`` GPT_models).

  randar-jax train --config llamagen:variant=B,target=gpu,dtype=bfloat16 --workdir runs/gpt_b
  randar-jax train --config llamagen:runlocal --workdir /tmp/llamagen_local      # CPU, minutes
  randar-jax convert c2i_XL_384.pt ckpt/gpt_xl                        # size inferred (384 px for XL)
  randar-jax convert c2i_B_384.pt ckpt/gpt_b_384 --config llamagen:variant=B,image_size=384
  randar-jax sample ckpt/gpt_xl --out samples --classes 0-9 --cfg 1.75        # sample_c2i.py defaults otherwise

Arguments (comma-separated): variant = tiny | B | L | XL | XXL | 3B (768x12, 1024x24, 1280x36, 1536x48, 3200x24;
head_dim 64, 3B 100), image_size = 256 | 384 (default: the size's release, 256 for B / L, 384 for XL / XXL / 3B;
the grid is image_size / 16), dtype = float32 | bfloat16 (compute dtype; parameters stay float32; the original
trains with --mixed-precision bf16), batch_size, total_steps, target = cpu | gpu | tpu (mesh),
data = a codes directory | tfds:NAME | synthetic, runlocal (tiny model, synthetic data, 300 steps).
Schema: randar_jax/train/config.py (shared with RandAR and RAR).
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.llamagen import RELEASED_IMAGE_SIZE, LlamaGenConfig
from randar_jax.train.config import recipe, shrink_for_cpu

MESHES = {
  "cpu": {},
  "gpu": {"XXL": dict(fsdp=8), "3B": dict(fsdp=8)},  # XXL / 3B: FSDP, as the release
  "tpu": {"XL": dict(fsdp=4), "XXL": dict(fsdp=8), "3B": dict(fsdp=8)},
}
IMAGENET_TRAIN = 1_281_167


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(
    arg,
    variant="B",
    image_size=0,
    dtype="float32",
    batch_size=256,
    total_steps=0,
    target="cpu",
    data="",
    runlocal=False,
  )
  image_size = arg.image_size or RELEASED_IMAGE_SIZE[arg.variant]
  # train_c2i.py: AdamW lr 1e-4, betas (0.9, 0.95), wd 5e-2 on params with ndim >= 2 (configure_optimizers), grad
  # clip 1.0, constant lr without warm-up, no skip rule; global batch 256 for 300 epochs (drop_last: 5004 steps
  # per epoch); --dropout-p 0.1 (resid + ffn), --token-dropout-p 0.1, class dropout 0.1 (L12: the model's
  # defaults); raster order only; checkpoints every 5k (--ckpt-every).
  steps = arg.total_steps or 300 * (IMAGENET_TRAIN // arg.batch_size)
  config = recipe(
    LlamaGenConfig.variant(arg.variant, image_size=image_size, dtype=arg.dtype).to_dict(),
    seed=0,
    total_steps=steps,
    batch_size=arg.batch_size,
    mesh=MESHES[arg.target].get(arg.variant, {}),
    optim=dict(
      lr=1e-4,
      b1=0.9,
      b2=0.95,
      weight_decay=5e-2,
      schedule="constant",
      warmup_steps=0,
      clip_norm=1.0,
      skip_threshold=None,
      fused_tensors="wq+wk+wv",
    ),
    data=arg.data or f"codes/imagenet-llamagen-ten-crop-{image_size}",
    order=dict(order="raster"),
  )
  if arg.runlocal:
    shrink_for_cpu(
      config,
      LlamaGenConfig.variant(
        "tiny", vocab_size=256, grid_size=8, num_classes=10, multiple_of=32, remat=False
      ).to_dict(),
    )
    config.data.order.order = "raster"
  return config
