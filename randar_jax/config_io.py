"""Loading ml_collections config files by path, big_vision style.

    config = load_config('configs/randar.py:variant=XL,tokenizer=maskgit')

A config file defines ``get_config(arg: str | None) -> ConfigDict``; ``parse_arg`` turns ``'a=1,b=x,flag'`` into a
ConfigDict typed by the defaults given in the file.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections


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


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Runs ``get_config(arg)`` from ``path/to/file.py[:arg]``."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path} (expected e.g. configs/randar.py:variant=L)")
  module_spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} defines no get_config()")
  return module.get_config(arg or None)
