"""Model families, by the name stored in every checkpoint's config (``config['family']``): the one registry.

    spec = families.get('randar')                       # or families.of(config) / families.of(model.config)
    config = families.config_from_dict(checkpoint.read_config(directory))
    model = families.build(config)
    settings = spec.decode_settings(config, steps=32)   # the family's defaults, overridden and checked
    out = spec.generate(model, labels, key, **settings.kwargs())

Adding a family: its model (``models/<name>.py``), converter rules (``convert/<name>.py``), decoder
(``decode/<name>.py``), a spec module here listed in ``SPECS``, a training config (``configs/<name>.py``) and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flax import nnx

from randar_jax.families import llamagen, randar, rar, tokenizers  # noqa: I001 (after base: each spec uses it)
from randar_jax.families.base import Family

SPECS: dict[str, Family] = {
  spec.name: spec
  for spec in (
    randar.SPEC,
    rar.SPEC,
    llamagen.SPEC,
    tokenizers.VQ_LLAMAGEN,
    tokenizers.VQ_MASKGIT,
    tokenizers.INCEPTION_FID,
  )
}


def get(name: str | None) -> Family:
  """The spec of a family name ('randar', 'vq_llamagen', ...)."""
  if name not in SPECS:
    raise ValueError(f"unknown model family {name!r}; known: {sorted(SPECS)}")
  return SPECS[name]


def of(config) -> Family:
  """The spec of a typed config (a model's ``config``)."""
  return get(config.FAMILY)


def names(kind: str | None = None) -> list[str]:
  """Registered family names, optionally of one kind ('generator', 'tokenizer', 'features')."""
  return [name for name, spec in SPECS.items() if kind is None or spec.kind == kind]


def config_from_dict(values: Mapping[str, Any]):
  """The typed config for a checkpoint's config dict (dispatch on its 'family')."""
  return get(values.get("family")).config.from_dict(values)


def build(config, seed: int = 0) -> nnx.Module:
  """A freshly initialised model for a typed config (call under sharding.model_context for sharded params)."""
  return of(config).build(config, seed)


__all__ = ["Family", "SPECS", "build", "config_from_dict", "get", "names", "of"]
