"""randar_jax: RandAR, RAR and LlamaGen in JAX / Flax NNX.

pip install .                      # into any environment: compatible ranges, an installed jax / numpy is kept
pip install -r requirements.txt -e .   # the exact, tested lock (what the README commands and CI use)
"""

import pathlib

from setuptools import find_packages, setup

here = pathlib.Path(__file__).parent

# What the package imports, as ranges: from the tested versions (requirements.txt pins them) up to the next release
# line that may break the APIs used (0.x: two minor lines; others: the next major).
INSTALL_REQUIRES = [
  "jax>=0.10.2,<0.12",
  "flax>=0.12.8,<0.14",
  "optax>=0.2.8,<0.4",
  "orbax-checkpoint>=0.12.8,<0.14",
  "grain>=0.2.18,<0.4",
  "array-record>=0.8,<0.10",
  "ml-collections>=1.1,<2",
  "ml-dtypes>=0.5,<0.9",
  "tensorflow-datasets>=4.9.10,<5",
  "safetensors>=0.8,<0.10",
  "huggingface-hub>=2.4,<3",
  "numpy>=2.4,<3",
  "pillow>=12,<14",
  "tqdm>=4.66,<5",
  "absl-py>=2.1,<3",
  "matplotlib>=3.9,<4",
  "tensorboardX>=2.6,<3",
  "scikit-learn>=1.5,<2",
]
TEST_REQUIRES = [
  "pytest>=9,<10",
  "pytest-xdist>=3.6,<4",
  "scipy>=1.13,<2",
  "nbclient>=0.10,<1",
  "nbformat>=5.10,<6",
  "ipykernel>=6,<8",
]

setup(
  name="randar_jax",
  version="0.1.0",
  description="Random-order autoregressive image generation (RandAR, RAR, LlamaGen) in JAX/Flax NNX",
  long_description=(here / "README.md").read_text(),
  long_description_content_type="text/markdown",
  python_requires=">=3.11",
  packages=find_packages(include=["randar_jax", "randar_jax.*"]),
  install_requires=INSTALL_REQUIRES,
  extras_require={
    "torch": ["torch>=2.13,<3"],
    "test": TEST_REQUIRES,
    "app": ["gradio>=6.31,<7"],  # the editing page (exact pins, with the browser-test driver: requirements-app.txt)
  },
  entry_points={"console_scripts": ["randar-jax=randar_jax.cli:main"]},
)
