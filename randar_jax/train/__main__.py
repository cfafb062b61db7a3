"""``python -m randar_jax.train --config randar:runlocal --workdir DIR`` (see randar_jax/train/main.py)."""

from randar_jax.train.main import run

run()
