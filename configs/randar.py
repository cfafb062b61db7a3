"""RandAR, class-conditional ImageNet 256x256 (after RandAR configs/randar/randar_*_{llamagen,maskgit}.yaml).

  python launch/train.py --config configs/randar.py:variant=L,target=gpu,dtype=bfloat16 --workdir runs/randar_l
  python launch/train.py --config configs/randar.py:runlocal --workdir /tmp/randar_local      # CPU, minutes
  randar-jax convert randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors ckpt/randar_l \
      --config configs/randar.py:variant=L,tokenizer=llamagen

Arguments (comma-separated): variant = tiny | B | L | XL | XXL (L 0.3B: 24x1024, XL 0.7B: 36x1280,
XXL 1.4B: 48x1536; head_dim 64), tokenizer = llamagen (16384 codes) | maskgit (1024 codes),
dtype = float32 | bfloat16 (compute dtype; parameters stay float32), target = cpu | gpu | tpu (mesh),
data = a codes directory | tfds:NAME | synthetic (default: codes/imagenet-<tokenizer>-adm-256),
runlocal (tiny model, synthetic data, 300 steps: a CPU smoke run). Any field: --config.optim.lr=1e-4.
"""

import ml_collections

from randar_jax.config_io import parse_arg
from randar_jax.models.randar import RandARConfig

# Mesh (data, fsdp, tensor) per target and size; -1 takes the remaining devices. FSDP where the float32
# parameters + Adam moments (16 bytes / parameter) crowd the memory of one chip.
MESHES = {
    "cpu": {},
    "gpu": {"XXL": dict(fsdp=8)},                      # 8x H100 80GB: L/XL fit data-parallel
    "tpu": {"XL": dict(fsdp=4), "XXL": dict(fsdp=8)},  # v4 / v5p (32 / 95 GB HBM per chip)
}


def get_config(arg=None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, variant="L", tokenizer="llamagen", dtype="float32", target="cpu", data="", runlocal=False)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = RandARConfig.variant(arg.variant, arg.tokenizer, dtype=arg.dtype).to_dict()
  # Mesh axes (data, fsdp, tensor); see randar_jax/sharding.py for the logical-axis rules.
  config.mesh = dict(data=-1, fsdp=1, tensor=1, **MESHES[arg.target].get(arg.variant, {}))

  # RandAR recipe (randar.md section 7): 360k iterations of 1024, AdamW (0.9, 0.95), wd 0.05 on ndim >= 2,
  # lr 4e-4 with 50k warm-up then cosine to 5%, clip 1.0, skip rule (norm sum >= 10 after iteration 100).
  config.total_steps = 360_000
  config.batch_size = 1024
  config.optim = dict(lr=4e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, schedule="cosine",
                      warmup_steps=50_000, end_lr_ratio=0.05, end_lr=None, clip_norm=1.0, skip_threshold=10.0,
                      skip_after=100, fused_tensors="wq+wk+wv", grad_accum=1, ema_decay=0.0, mu_dtype=None)

  config.data = dict(source=arg.data or f"codes/imagenet-{arg.tokenizer}-adm-256", split="train", data_dir="",
                     order=dict(order="random", anneal=None, fallback="raster"),   # RandAR: always random
                     num_threads=8, prefetch=4, workers=0,
                     synthetic=dict(num_records=100_000, num_aug=2, noise=0.1, seed=0))
  config.tokenizer = ""                 # tokenizer (checkpoint dir or pixels:N) for image grids; "" = token maps

  config.log_every = 100
  config.ckpt_every = 5_000             # the original's --ckpt-every
  config.keep_checkpoints = 2
  config.keep_every = 50_000            # always kept (the original keeps 50k/100k/200k/300k)
  config.sample = dict(every=5_000, num_images=16, kwargs=dict(num_steps=88))
  config.eval = dict(every=0, batches=4, split="validation")
  config.peak_flops = None              # per device, for MFU; None: looked up from the device kind

  if arg.runlocal:
    config.model = RandARConfig.variant("tiny", arg.tokenizer, vocab_size=256, grid_size=8, num_classes=10,
                                        remat=False).to_dict()
    config.mesh = dict(data=-1, fsdp=1, tensor=1)
    config.total_steps, config.batch_size = 300, 32
    config.optim.update(lr=2e-3, warmup_steps=30, skip_after=30)
    config.data.update(source="synthetic", num_threads=2)
    config.data.synthetic.num_records = 4096
    config.log_every, config.ckpt_every, config.keep_every = 10, 100, None
    config.sample.update(every=150, num_images=16, kwargs=dict(num_steps=16))
    config.eval.update(every=100, batches=2)
  return config
