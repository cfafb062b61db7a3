"""The config story: ml_collections for run configs (files loaded by path, big_vision style) and frozen
dataclasses for model, optimizer and search configs, all read back through one strict ``from_dict``.

    config = load_config('randar:variant=XL,tokenizer=maskgit')     # a packaged recipe (or a path to a .py file)
    optim = OptimConfig.from_dict(config.optim)                                 # typed, unknown keys refused

    @dataclasses.dataclass(frozen=True)
    class RARConfig(FamilyConfig):             # a model config: to_dict() adds 'family', checkpoints store it
      FAMILY = "rar"
      dim: int = 1024

A config file defines ``get_config(arg: str | None) -> ConfigDict``; ``parse_arg`` turns ``'a=1,b=x,flag'`` into a
ConfigDict typed by the defaults given in the file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import ml_collections


class FrozenConfig:
  """Mixin for frozen config dataclasses: ``to_dict`` and a strict ``from_dict`` (unknown keys are errors;
  lists from JSON become tuples)."""

  LABEL: ClassVar[str | None] = None  # how errors name the config (default: the class name)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]):
    """From a dict, a ConfigDict or a checkpoint's JSON."""
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names - cls._extra_keys(values)
    if unknown:
      raise ValueError(f"unknown {cls._label()} config keys {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

  @classmethod
  def _extra_keys(cls, values: Mapping[str, Any]) -> set[str]:
    return set()

  @classmethod
  def _label(cls) -> str:
    return cls.LABEL or cls.__name__


class FamilyConfig(FrozenConfig):
  """A model config that names its family: ``to_dict()`` includes ``'family'`` (what every checkpoint stores
  and :mod:`randar_jax.families` dispatches on); ``from_dict`` refuses another family's dict."""

  FAMILY: ClassVar[str]  # 'randar', 'rar', 'llamagen', 'vq_llamagen', ...

  def to_dict(self) -> dict[str, Any]:
    return {"family": self.FAMILY, **dataclasses.asdict(self)}

  @classmethod
  def from_original(cls, doc: Mapping[str, Any]):
    """From a JSON document of the original model's constructor arguments (bare, or laid out as the fixtures and
    manifests keep them: see :func:`original_args`). Families whose original takes something else override it."""
    from_torch_args = getattr(cls, "from_torch_args", None)
    if from_torch_args is None:
      raise ValueError(f"a {cls._label()} model has no constructor arguments to read: convert infers its config")
    return from_torch_args(original_args(doc))

  @classmethod
  def _extra_keys(cls, values: Mapping[str, Any]) -> set[str]:
    if values.get("family", cls.FAMILY) != cls.FAMILY:
      raise ValueError(f"a {values['family']!r} config is not a {cls.FAMILY} config")
    return {"family"}

  @classmethod
  def _label(cls) -> str:
    return cls.FAMILY


ORIGINAL_ARGS = ("constructor_args", "config")  # where a fixture's or manifest's JSON keeps the original's arguments


def original_args(doc: Mapping[str, Any]) -> Mapping[str, Any]:
  """The original constructor's arguments in a JSON document: the document itself, or its ``constructor_args``
  (RandAR, LlamaGen, the tokenizers) or ``config`` (RAR's OmegaConf dict) entry."""
  return next((doc[k] for k in ORIGINAL_ARGS if isinstance(doc.get(k), Mapping)), doc)


def load_original(spec: str) -> dict[str, Any]:
  """``args.json[:key=value,...]`` -> the JSON document with each override set in its arguments. Dotted keys reach
  nested sections (RAR: ``model.generator.hidden_size=768``); values are JSON (``4``, ``0.1``, ``null``,
  ``[1,2]``), anything else a string."""
  path, _, overrides = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  try:
    with open(path) as f:
      doc = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None
  args = original_args(doc)
  for item in filter(None, re.split(r",(?![^\[]*\])", overrides)):  # commas inside [...] belong to the value
    key, eq, value = item.partition("=")
    if not eq:
      raise ValueError(f"config override {item!r} is not key=value")
    *sections, leaf = key.split(".")
    node = args
    for section in sections:
      if not isinstance(node.get(section), dict):
        raise ValueError(f"{path} has no section {section!r} for the override {key!r}")
      node = node[section]
    try:
      node[leaf] = json.loads(value)
    except json.JSONDecodeError:
      node[leaf] = value
  return doc


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``'key=value,flag'`` against typed defaults; a bare ``flag`` means True. Unknown keys are an error."""
  result = ml_collections.ConfigDict(dict(defaults))
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not _:
      result[key] = True
    elif isinstance(default, bool):
      result[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      result[key] = value
    else:
      result[key] = type(default)(value)
  return result


PACKAGED = pathlib.Path(__file__).parent / "configs"  # the recipes shipped with the package


def config_path(spec: str) -> str:
  """``path/to/file.py[:arg]`` or a packaged recipe's name (``randar``, ``randar_jax.configs.randar``, or the
  checkout path ``configs/randar.py`` it had before) -> ``existing/file.py[:arg]``, from any directory."""
  path, colon, arg = spec.partition(":")
  if not os.path.isfile(path):
    name = path.removeprefix("randar_jax.configs.").removeprefix("configs/").removesuffix(".py")
    if "/" in name or os.sep in name or not (PACKAGED / f"{name}.py").is_file():
      known = sorted(p.stem for p in PACKAGED.glob("[!_]*.py"))
      raise FileNotFoundError(f"config file not found: {path} (a .py file with get_config(), or one of {known})")
    path = str(PACKAGED / f"{name}.py")
  return path + colon + arg


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` from ``path/to/file.py[:arg]`` or ``recipe[:arg]`` (see :func:`config_path`)."""
  path, _, arg = config_path(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config()")
  return module.get_config(arg or None)
