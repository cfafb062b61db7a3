"""randar_jax: RandAR and RAR random-order autoregressive image generators in JAX / Flax NNX.

model = randar_jax.load_pretrained('randar-l')     # a released checkpoint by name (randar_jax.hub.CATALOGUE)
"""

__version__ = "0.1.0"


def load_pretrained(name: str, **overrides):
  """The released model ``name`` (downloaded and converted on first use, see :mod:`randar_jax.hub`) or a
  checkpoint directory, restored by ``checkpoint.load_model`` (``overrides``: e.g. ``dtype='bfloat16'``)."""
  from randar_jax import checkpoint, hub

  return checkpoint.load_model(hub.resolve(name), **overrides)
