"""Model families, by the name stored in every checkpoint's config (``config['family']``).

    config_class, model_class = family('vq_llamagen')
    model = build(config_from_dict(checkpoint.read_config(directory)))
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from flax import nnx

from randar_jax.models.llamagen import LlamaGen, LlamaGenConfig
from randar_jax.models.rar import RAR, RARConfig
from randar_jax.models.randar import RandAR, RandARConfig

FAMILIES: dict[str, tuple[type, type[nnx.Module]]] = {
    "randar": (RandARConfig, RandAR),
    "rar": (RARConfig, RAR),
    "llamagen": (LlamaGenConfig, LlamaGen),
}
# Families defined outside this package, as (module, config class, model class). Their modules import
# randar_jax.models.layers themselves, so they are imported on first lookup: importing them here would be circular.
EXTERNAL_FAMILIES: dict[str, tuple[str, str, str]] = {
    "vq_llamagen": ("randar_jax.tokenizers.vq_llamagen", "LlamaGenVQConfig", "VQLlamaGen"),
    "vq_maskgit": ("randar_jax.tokenizers.vq_maskgit", "MaskGITVQConfig", "VQMaskGIT"),
    "inception_fid": ("randar_jax.eval.inception", "InceptionConfig", "InceptionV3"),
}


def family(name: str) -> tuple[type, type[nnx.Module]]:
  """(config class, model class) of a family ('randar', 'vq_llamagen', ...)."""
  if name not in FAMILIES and name in EXTERNAL_FAMILIES:
    module, config_class, model_class = EXTERNAL_FAMILIES[name]
    module = importlib.import_module(module)
    FAMILIES[name] = (getattr(module, config_class), getattr(module, model_class))
  if name not in FAMILIES:
    raise ValueError(f"unknown model family {name!r}; known: {sorted({*FAMILIES, *EXTERNAL_FAMILIES})}")
  return FAMILIES[name]


def config_from_dict(values: Mapping[str, Any]):
  """The typed config for a checkpoint's config dict (dispatch on its 'family')."""
  return family(values.get("family"))[0].from_dict(values)


def build(config, seed: int = 0) -> nnx.Module:
  """A freshly initialised model for a typed config (call under sharding.model_context for sharded params)."""
  return family(config.to_dict()["family"])[1](config, rngs=nnx.Rngs(seed))
