"""Configs that name their model family: the dict round trip every checkpoint's config goes through.

    @dataclasses.dataclass(frozen=True)
    class RARConfig(FamilyConfig):
      FAMILY = "rar"
      dim: int = 1024

    RARConfig.from_dict({'family': 'rar', 'dim': 768})  ->  RARConfig(dim=768);  .to_dict() -> {'family': 'rar', ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping


class FamilyConfig:
  """Mixin for frozen config dataclasses: ``to_dict`` with the family name and a strict ``from_dict``."""
  FAMILY: ClassVar[str]   # the name stored in checkpoints ('randar', 'rar', 'vq_llamagen', ...)

  def to_dict(self) -> dict[str, Any]:
    return {"family": self.FAMILY, **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]):
    """From a plain dict (a ConfigDict's ``to_dict()`` or a checkpoint's JSON, where tuples come back as lists);
    unknown keys and another family are errors."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names - {"family"}
    if unknown:
      raise ValueError(f"unknown {cls.FAMILY} config keys {sorted(unknown)}; known: {sorted(names)}")
    if values.get("family", cls.FAMILY) != cls.FAMILY:
      raise ValueError(f"a {values['family']!r} config is not a {cls.FAMILY} config")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})
