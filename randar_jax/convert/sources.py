"""Readers for checkpoint files that never execute code from the file.

``.safetensors`` is read with the safetensors library (memory-mapped, one tensor at a time; bfloat16 included).
"""

from __future__ import annotations

import os

import numpy as np
from safetensors import SafetensorError, safe_open

from randar_jax.convert.core import ConversionError, Shape


class SafetensorsSource:
  """A ``.safetensors`` file as a :class:`~randar_jax.convert.core.TensorSource`."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise ConversionError(f"no such checkpoint file: {self.path}")
    try:
      self._file = safe_open(self.path, framework="numpy")
    except SafetensorError as e:
      raise ConversionError(f"{self.path} is not a readable .safetensors file (truncated or corrupt?): {e}") from None
    self._keys = list(self._file.keys())

  def keys(self) -> list[str]:
    return list(self._keys)

  def shape(self, key: str) -> Shape:
    return tuple(self._file.get_slice(key).get_shape())

  def dtype(self, key: str) -> str:
    return self._file.get_slice(key).get_dtype()

  def get(self, key: str) -> np.ndarray:
    try:
      return self._file.get_tensor(key)
    except SafetensorError as e:
      raise ConversionError(f"{self.path}: cannot read tensor {key!r} (truncated or corrupt file?): {e}") from None


def open_source(path: str | os.PathLike) -> SafetensorsSource:
  """Opens a checkpoint by extension. Supported: .safetensors."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix == ".safetensors":
    return SafetensorsSource(path)
  raise ConversionError(f"unsupported checkpoint format {suffix!r} for {path}; expected .safetensors")
