"""Reads ``torch.save`` checkpoints (.pt / .pth / .bin) without PyTorch and without running code from the file.

A ``torch.save`` file (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` pickles the object, with each
tensor's bytes in ``<name>/data/<key>``. A pickle can call any importable function while it loads, so this
reader unpickles with an allow-list: tensors are rebuilt by our own functions from
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` records, storages by their dtype tags
(``torch.FloatStorage`` ...), containers as ``collections.OrderedDict``; any other global (``os.system``,
``builtins.eval``, ``argparse.Namespace``, ...) stops the load with :class:`ConversionError` before anything is
called. Nothing from torch is imported. Tensor data is read lazily, one tensor at a time.

    source = TorchSource('vq_ds16_c2i.pt')     # {'model': state_dict} is unwrapped, as RandAR does
    source.keys(), source.shape(key), source.get(key)   # -> np.ndarray
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

from randar_jax.convert.core import ConversionError, Shape

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands in for ``torch.<X>Storage``: only a dtype tag in a storage record."""
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
  key: str
  dtype: np.dtype
  numel: int


@dataclasses.dataclass(frozen=True)
class _Tensor:
  """A tensor record: where its elements live; read by :meth:`TorchSource.get`."""
  storage: _Storage
  offset: int
  shape: Shape
  stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> _Tensor:
  del requires_grad, hooks, metadata  # autograd bookkeeping
  if not isinstance(storage, _Storage):
    raise ConversionError(f"malformed tensor record: storage is a {type(storage).__name__}")
  return _Tensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None) -> _Tensor:
  del requires_grad, hooks
  if not isinstance(data, _Tensor):
    raise ConversionError(f"malformed parameter record: data is a {type(data).__name__}")
  return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the allow-listed globals above; every other one raises before it could be called."""

  def __init__(self, data: bytes, path: str):
    super().__init__(io.BytesIO(data))
    self.path = path

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    raise ConversionError(
        f"{self.path}: refusing to load: its pickle asks for {module}.{name}, which is not part of a plain "
        f"state dict of tensors (it could run code). Only tensors, dicts and numbers are read; if you trust "
        f"the file, re-save just its state dict (torch.save(model.state_dict(), ...)) or as .safetensors")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
      raise ConversionError(f"{self.path}: unsupported storage record {pid!r:.80}")
    _, storage_type, key, _, numel = pid
    return _Storage(str(key), storage_type.dtype, int(numel))


class TorchSource:
  """A ``torch.save`` zip checkpoint as a :class:`~randar_jax.convert.core.TensorSource`.

  The state dict is the pickled dict itself or, as in LlamaGen's releases, its ``'model'`` entry.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise ConversionError(f"no such checkpoint file: {self.path}")
    if not zipfile.is_zipfile(self.path):
      raise ConversionError(f"{self.path} is not a torch.save zip archive (a legacy pre-1.6 torch file, a bare "
                            f"pickle, or truncated); re-save it with a current torch or as .safetensors")
    try:
      self._zip = zipfile.ZipFile(self.path)
      pickles = [n for n in self._zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
      if len(pickles) != 1:
        raise ConversionError(f"{self.path}: expected one <name>/data.pkl in the archive, found {pickles}")
      self._prefix = pickles[0][: -len("data.pkl")]
      obj = _RestrictedUnpickler(self._zip.read(pickles[0]), self.path).load()
      self._little = self._read_text("byteorder", "little") == "little"
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
      if isinstance(e, ConversionError):
        raise
      raise ConversionError(f"{self.path} is not a readable torch checkpoint (truncated or corrupt?): {e}") from None
    self._tensors = self._state_dict(obj)

  def _read_text(self, name: str, default: str) -> str:
    try:
      return self._zip.read(self._prefix + name).decode().strip()
    except KeyError:
      return default

  def _state_dict(self, obj) -> dict[str, _Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
      obj = obj["model"]
    if not isinstance(obj, dict):
      raise ConversionError(f"{self.path} holds a {type(obj).__name__}, not a state dict")
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, _Tensor))]
    if bad:
      raise ConversionError(f"{self.path}: state dict entries that are not tensors: {bad[:5]}")
    return dict(obj)

  def keys(self) -> list[str]:
    return list(self._tensors)

  def shape(self, key: str) -> Shape:
    return self._tensors[key].shape

  def dtype(self, key: str) -> str:
    return self._tensors[key].storage.dtype.name

  def get(self, key: str) -> np.ndarray:
    """The tensor as a NumPy array (a copy), after checking that it lies inside its storage."""
    t = self._tensors[key]
    dtype = t.storage.dtype.newbyteorder("<" if self._little else ">")
    try:
      raw = self._zip.read(f"{self._prefix}data/{t.storage.key}")
    except (KeyError, zipfile.BadZipFile, EOFError) as e:
      raise ConversionError(f"{self.path}: cannot read tensor {key!r} (truncated or corrupt file?): {e}") from None
    if len(raw) < t.storage.numel * dtype.itemsize:
      raise ConversionError(f"{self.path}: storage of {key!r} is truncated")
    flat = np.frombuffer(raw, dtype, count=t.storage.numel)
    end = t.offset + (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) if math.prod(t.shape) else 0)
    if t.offset < 0 or len(t.stride) != len(t.shape) or any(s < 0 for s in t.stride) or end > t.storage.numel:
      raise ConversionError(f"{self.path}: tensor {key!r} {t.shape} / stride {t.stride} at offset {t.offset} "
                            f"reaches outside its storage of {t.storage.numel} elements")
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.shape, [s * dtype.itemsize for s in t.stride])
    return np.array(view, dtype=dtype.newbyteorder("="))
