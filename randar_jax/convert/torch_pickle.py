"""Reads ``torch.save`` checkpoints (.pt / .pth / .bin) without PyTorch and without running code from the file.

A ``torch.save`` file (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` pickles the object, with each
tensor's bytes in ``<name>/data/<key>``. Older files (torch < 1.6, or ``_use_new_zipfile_serialization=False``,
e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``) are one stream: pickles of a magic number, the
protocol version and system info, then the object, then the list of storage keys, then each storage as an int64
element count followed by its bytes. A pickle can call any importable function while it loads, so this
reader unpickles with an allow-list: tensors are rebuilt by our own functions from
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` records, storages by their dtype tags
(``torch.FloatStorage`` ...), containers as ``collections.OrderedDict``, and the ``argparse.Namespace`` that
LlamaGen's training scripts save next to the weights (``{"model": sd, "optimizer": ..., "steps": ..., "args":
Namespace}``) as an inert attribute holder of ours (never argparse's class, nothing of it is called); any other
global (``os.system``, ``builtins.eval``, ...) stops the load with :class:`ConversionError` before anything is
called. Nothing from torch is imported. Tensor data is read lazily, one tensor at a time.

    source = TorchSource('vq_ds16_c2i.pt')     # {'model': state_dict} is unwrapped, as RandAR / LlamaGen do
    source.keys(), source.shape(key), source.get(key)   # -> np.ndarray
"""

from __future__ import annotations

import collections
import dataclasses
import io
import math
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from randar_jax.convert.core import ConversionError, Shape

_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
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


class _Namespace:
  """Stands in for ``argparse.Namespace`` (the training arguments LlamaGen saves with its checkpoints): a plain
  attribute holder; the pickle's BUILD fills ``__dict__``. It is never part of the state dict that is read."""

  def __init__(self, **kwargs):
    self.__dict__.update(kwargs)


_ALLOWED = {
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("argparse", "Namespace"): _Namespace,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("collections", "OrderedDict"): collections.OrderedDict,
}


_LEGACY_MAGIC, _LEGACY_PROTOCOL = 0x1950A86A20F9469CFC6C, 1001
_LEGACY_HEADER = pickle.dumps(_LEGACY_MAGIC, protocol=2)  # how torch's legacy writer starts every file


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the allow-listed globals above; every other one raises before it could be called."""

  def __init__(self, file: io.BufferedIOBase, path: str):
    super().__init__(file)
    self.path = path
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    raise ConversionError(
      f"{self.path}: refusing to load: its pickle asks for {module}.{name}, which is not part of a plain "
      f"state dict of tensors (it could run code). Only tensors, dicts and numbers are read; if you trust "
      f"the file, re-save just its state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
    )

  def persistent_load(self, pid):
    # zip format: ('storage', type, key, location, numel); legacy: the same plus view metadata (None)
    if not (
      isinstance(pid, tuple)
      and len(pid) in (5, 6)
      and pid[0] == "storage"
      and isinstance(pid[1], _StorageType)
      and pid[5:] in ((), (None,))
    ):
      raise ConversionError(f"{self.path}: unsupported storage record {pid!r:.80}")
    storage = _Storage(str(pid[2]), pid[1].dtype, int(pid[4]))
    self.storages[storage.key] = storage
    return storage


def _extent(t: _Tensor) -> int:
  """Elements of its storage a tensor view spans from the start: offset + 1 + the last element's index."""
  return t.offset + (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride)) if math.prod(t.shape) else 0)


class TorchSource:
  """A ``torch.save`` checkpoint (zip or legacy format) as a :class:`~randar_jax.convert.core.TensorSource`.

  The state dict is the pickled dict itself (a raw / FSDP state dict) or, as in LlamaGen's DDP releases, its
  ``'model'`` entry (``'module'`` or ``'state_dict'`` otherwise, as LlamaGen's ``sample_c2i.py`` accepts); the
  other entries (optimizer, steps, args) are unpickled inertly and never read.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    if not os.path.isfile(self.path):
      raise ConversionError(f"no such checkpoint file: {self.path}")
    try:
      obj = self._open_zip() if zipfile.is_zipfile(self.path) else self._open_legacy()
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError, struct.error) as e:
      if isinstance(e, ConversionError):
        raise
      raise ConversionError(f"{self.path} is not a readable torch checkpoint (truncated or corrupt?): {e}") from None
    self._tensors = self._state_dict(obj)
    for key, tensor in self._tensors.items():  # every record checked before any tensor's bytes are read
      self._check_record(key, tensor)

  def _open_zip(self):
    self._zip = zipfile.ZipFile(self.path)
    pickles = [n for n in self._zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise ConversionError(f"{self.path}: expected one <name>/data.pkl in the archive, found {pickles}")
    self._prefix = pickles[0][: -len("data.pkl")]
    obj = _RestrictedUnpickler(io.BytesIO(self._zip.read(pickles[0])), self.path).load()
    self._little = self._read_text("byteorder", "little") == "little"
    return obj

  def _open_legacy(self):
    """Parses the legacy stream's pickles and records where each storage's bytes start (read lazily later)."""
    self._zip, self._offsets = None, {}
    with open(self.path, "rb") as f:
      load = lambda: _RestrictedUnpickler(f, self.path)  # noqa: E731
      if f.read(len(_LEGACY_HEADER)) != _LEGACY_HEADER:  # checked before anything is unpickled
        raise ConversionError(
          f"{self.path} is not a torch.save zip archive nor a legacy torch.save file (a bare "
          f"pickle, or truncated?); re-save it with a current torch or as .safetensors"
        )
      if load().load() != _LEGACY_PROTOCOL:
        raise ConversionError(f"{self.path}: unsupported legacy torch protocol version")
      info = load().load()
      self._little = not isinstance(info, dict) or info.get("little_endian", True)
      unpickler = load()
      obj = unpickler.load()
      keys = load().load()
      order = "<" if self._little else ">"
      for key in keys:
        storage = unpickler.storages.get(str(key))
        count = struct.unpack(order + "q", f.read(8))[0]
        if storage is None or count != storage.numel:
          raise ConversionError(f"{self.path}: storage {key!r} is not the one the pickle describes (corrupt file?)")
        self._offsets[storage.key] = f.tell()
        f.seek(count * storage.dtype.itemsize, os.SEEK_CUR)
      if f.tell() > os.path.getsize(self.path):
        raise ConversionError(f"{self.path} is truncated: its storages end past the end of the file")
    return obj

  def _check_record(self, key: str, t: _Tensor) -> None:
    """The tensor lies inside its storage, and (zip format) the storage is in the archive with exactly the declared
    number of bytes, stored uncompressed; so a record claiming a huge storage fails here, nothing read."""
    if t.offset < 0 or len(t.stride) != len(t.shape) or any(s < 0 for s in t.stride) or any(n < 0 for n in t.shape):
      raise ConversionError(f"{self.path}: tensor {key!r} has a malformed record {t.shape} / stride {t.stride}")
    if _extent(t) > t.storage.numel:
      raise ConversionError(
        f"{self.path}: tensor {key!r} {t.shape} / stride {t.stride} at offset {t.offset} "
        f"reaches outside its storage of {t.storage.numel} elements"
      )
    if self._zip is None:
      return
    try:
      entry = self._zip.getinfo(f"{self._prefix}data/{t.storage.key}")
    except KeyError:
      raise ConversionError(f"{self.path}: the storage of tensor {key!r} is missing from the archive") from None
    size = t.storage.numel * t.storage.dtype.itemsize
    if entry.file_size != size or entry.compress_type != zipfile.ZIP_STORED:
      raise ConversionError(
        f"{self.path}: tensor {key!r} declares a storage of {size:,} bytes but the archive holds "
        f"{entry.file_size:,}{'' if entry.compress_type == zipfile.ZIP_STORED else ' (compressed)'} "
        f"(truncated or corrupt file?)"
      )

  def _storage_bytes(self, storage: _Storage, size: int) -> bytes:
    if self._zip is not None:
      with self._zip.open(f"{self._prefix}data/{storage.key}") as f:
        return f.read(size)
    with open(self.path, "rb") as f:
      f.seek(self._offsets[storage.key])
      return f.read(size)

  def _read_text(self, name: str, default: str) -> str:
    try:
      return self._zip.read(self._prefix + name).decode().strip()
    except KeyError:
      return default

  def _state_dict(self, obj) -> dict[str, _Tensor]:
    if isinstance(obj, dict):
      obj = next((obj[k] for k in ("model", "module", "state_dict") if isinstance(obj.get(k), dict)), obj)
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
    end = _extent(t)  # only the elements up to the view's last one are read (checked against the storage at open)
    try:
      raw = self._storage_bytes(t.storage, end * dtype.itemsize)
    except (KeyError, zipfile.BadZipFile, EOFError) as e:
      raise ConversionError(f"{self.path}: cannot read tensor {key!r} (truncated or corrupt file?): {e}") from None
    if len(raw) < end * dtype.itemsize:
      raise ConversionError(f"{self.path}: storage of {key!r} is truncated")
    flat = np.frombuffer(raw, dtype, count=end)
    view = np.lib.stride_tricks.as_strided(flat[t.offset :], t.shape, [s * dtype.itemsize for s in t.stride])
    return np.array(view, dtype=dtype.newbyteorder("="))
