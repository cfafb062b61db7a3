"""randar_jax: RandAR and RAR in JAX / Flax NNX.  pip install -e .  (dependencies pinned in requirements.txt)"""

import pathlib

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent
pins = [
  line.strip()
  for line in (here / "requirements.txt").read_text().splitlines()
  if line.strip() and not line.startswith("#")
]
# Test-only pins (pytest, ruff; the notebook runner and kernel) stay out of install_requires: Colab brings its own
# kernel.
TEST_ONLY = ("pytest", "ruff", "nbclient", "nbformat", "ipykernel")
requirements = [p for p in pins if not p.startswith(TEST_ONLY)]

setup(
  name="randar_jax",
  version="0.1.0",
  description="Random-order autoregressive image generation (RandAR, RAR) in JAX/Flax NNX",
  long_description=(here / "README.md").read_text(),
  long_description_content_type="text/markdown",
  python_requires=">=3.11",
  packages=find_packages(include=["randar_jax", "randar_jax.*"]),
  install_requires=requirements,
  extras_require={
    "torch": ["torch==2.13.0"],
    "test": [p for p in pins if p.startswith(TEST_ONLY)],
    "app": ["gradio>=6.31,<7"],  # the editing page (exact pins, with the browser-test driver: requirements-app.txt)
  },
  entry_points={"console_scripts": ["randar-jax=randar_jax.cli:main"]},
)
