"""randar_jax: RandAR and RAR random-order autoregressive image generators in JAX / Flax NNX."""

__version__ = "0.1.0"
