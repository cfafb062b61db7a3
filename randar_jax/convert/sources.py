"""Readers for checkpoint files that never execute code from the file.

``.safetensors`` is read with the safetensors library (memory-mapped, one tensor at a time; bfloat16 included);
``torch.save`` archives (``.pt``, ``.pth``, ``.bin``) with the restricted reader in :mod:`.torch_pickle`.
"""

from __future__ import annotations

import os

import numpy as np
from safetensors import SafetensorError, safe_open

from randar_jax.convert.core import ConversionError, Shape, TensorSource
from randar_jax.convert.torch_pickle import TorchSource


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
    self._keys = dict.fromkeys(self._file.keys())  # ordered, O(1) membership

  def keys(self) -> list[str]:
    return list(self._keys)

  def _slice(self, key: str):
    if key not in self._keys:
      raise KeyError(key)  # as every TensorSource does for a missing key
    return self._file.get_slice(key)

  def shape(self, key: str) -> Shape:
    return tuple(self._slice(key).get_shape())

  def dtype(self, key: str) -> str:
    return self._slice(key).get_dtype()

  def get(self, key: str) -> np.ndarray:
    try:
      return self._file.get_tensor(key)
    except SafetensorError as e:
      raise ConversionError(f"{self.path}: cannot read tensor {key!r} (truncated or corrupt file?): {e}") from None


READERS = {".safetensors": SafetensorsSource, ".pt": TorchSource, ".pth": TorchSource, ".bin": TorchSource}


def open_source(path: str | os.PathLike) -> TensorSource:
  """Opens a checkpoint by extension: .safetensors, or a torch.save archive (.pt / .pth / .bin)."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  if suffix not in READERS:
    raise ConversionError(f"unsupported checkpoint format {suffix!r} for {path}; expected one of {sorted(READERS)}")
  return READERS[suffix](path)
