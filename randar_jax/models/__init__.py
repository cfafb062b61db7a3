"""Model families, by the name stored in every checkpoint's config (``config['family']``)."""

from __future__ import annotations

from typing import Any, Mapping

from flax import nnx

from randar_jax.models.rar import RAR, RARConfig
from randar_jax.models.randar import RandAR, RandARConfig

FAMILIES: dict[str, tuple[type, type[nnx.Module]]] = {
    "randar": (RandARConfig, RandAR),
    "rar": (RARConfig, RAR),
}


def config_from_dict(values: Mapping[str, Any]):
  """The typed config for a checkpoint's config dict (dispatch on its 'family')."""
  family = values.get("family")
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
  return FAMILIES[family][0].from_dict(values)


def build(config, seed: int = 0) -> nnx.Module:
  """A freshly initialised model for a typed config (call under sharding.model_context for sharded params)."""
  family = config.to_dict()["family"]
  return FAMILIES[family][1](config, rngs=nnx.Rngs(seed))
