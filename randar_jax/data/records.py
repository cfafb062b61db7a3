"""Pre-tokenised datasets on disk: ArrayRecord shards of latent codes, written resumably, read randomly.

    write_shards('codes/', meta, num_items=N, shard_size=1000, make_shard=fn)   # fn(start, stop) -> records, report
    src = CodeShards('codes/')               # len(src); src[i] -> {'codes': (num_aug, h*w) int32, 'label', 'index'}
    src.grid, src.vocab_size, src.num_aug

Layout of a codes directory:

    codes.json                               what was extracted: grid, vocab_size, num_aug, dtype, shards, source...
    codes-00003-of-00128.array_record        one record per image (group_size 1: cheap random access)
    codes-00003-of-00128.json                that shard's sidecar: records written, sha256 of the shard file,
                                             inputs skipped (with reasons)

A record is a 28-byte little-endian header (magic ``RJC1``, dtype code, num_aug, h, w, label, source index) followed
by the codes, int16 when the vocabulary fits (LlamaGen's 16384 does), else int32, raster order per augmentation.
Shards are global slices of the input (shard k = items [k*S, (k+1)*S)), so any process count writes the same files.
Each shard is written under a temporary name and renamed when complete: a shard file that exists is finished, and
a re-run skips it once it matches its sidecar (record count and checksum), and writes it again otherwise (a
truncated or bit-flipped shard); a crash leaves at most a ``.tmp`` file that the next run overwrites. Read errors
name the shard and the record (:class:`RecordError`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

FORMAT = "randar_jax.codes/1"
META = "codes.json"
_HEADER = struct.Struct("<4sBBHHHqq")  # magic, dtype, pad, num_aug, h, w, label, index
_MAGIC = b"RJC1"
_DTYPES = {0: np.dtype("<i2"), 1: np.dtype("<i4")}
_DTYPE_CODES = {v.name: k for k, v in _DTYPES.items()}


def code_dtype(vocab_size: int) -> np.dtype:
  """The smallest signed dtype that holds the codes (int16 up to 32767 codes)."""
  return _DTYPES[0] if vocab_size <= np.iinfo(np.int16).max + 1 else _DTYPES[1]


def encode_record(codes: np.ndarray, label: int, index: int, grid: tuple[int, int], dtype: np.dtype) -> bytes:
  """codes (num_aug, h*w) or (num_aug, h, w) -> bytes."""
  codes = np.asarray(codes).reshape(codes.shape[0], -1)
  if codes.shape[1] != grid[0] * grid[1]:
    raise ValueError(f"codes of shape {codes.shape} do not fit the grid {grid}")
  header = _HEADER.pack(_MAGIC, _DTYPE_CODES[np.dtype(dtype).name], 0, codes.shape[0], *grid, int(label), int(index))
  return header + codes.astype(dtype).tobytes()


def decode_record(data: bytes) -> dict[str, Any]:
  """bytes -> {'codes': int32 (num_aug, h*w), 'label': int32, 'index': int64}."""
  if len(data) < _HEADER.size or data[:4] != _MAGIC:
    raise ValueError("not a randar_jax codes record (bad magic); was the shard written by another tool?")
  _, code, _, num_aug, h, w, label, index = _HEADER.unpack_from(data)
  codes = np.frombuffer(data, _DTYPES[code], count=num_aug * h * w, offset=_HEADER.size)
  return {"codes": codes.reshape(num_aug, h * w).astype(np.int32), "label": np.int32(label), "index": np.int64(index)}


def shard_name(k: int, num_shards: int) -> str:
  return f"codes-{k:05d}-of-{num_shards:05d}.array_record"


def _write_json(path: str, value: Any) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


class RecordError(ValueError):
  """A record that cannot be read, named by its shard file and its index in that shard."""


def file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def sidecar_path(shard_path: str) -> str:
  return shard_path[: -len(".array_record")] + ".json"


def shard_problem(path: str) -> str | None:
  """Why a finished shard does not match its sidecar (record count, checksum), or None when it does."""
  from array_record.python import array_record_module

  try:
    sidecar = json.load(open(sidecar_path(path)))
  except (OSError, ValueError) as e:
    return f"unreadable sidecar ({type(e).__name__})"
  if "sha256" in sidecar and file_sha256(path) != sidecar["sha256"]:
    return "checksum differs from its sidecar"
  try:
    reader = array_record_module.ArrayRecordReader(path)
    count = reader.num_records()
    reader.close()
  except Exception as e:  # noqa: BLE001 - any reader failure is a damaged file
    return f"unreadable ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
  if count != sidecar.get("records"):
    return f"{count} records, its sidecar says {sidecar.get('records')}"
  return None


def _unreadable(path: str) -> bool:
  from array_record.python import array_record_module

  try:
    array_record_module.ArrayRecordReader(path).close()
    return False
  except Exception:  # noqa: BLE001
    return True


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
  path = os.path.join(directory, META)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{directory} is not a codes directory (no {META}); create one with randar-jax extract")
  meta = json.load(open(path))
  if meta.get("format") != FORMAT:
    raise ValueError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


def _check_meta(directory: str, meta: Mapping[str, Any]) -> None:
  """Writes codes.json, or checks that an existing one describes the same extraction (resume safety)."""
  path = os.path.join(directory, META)
  if os.path.isfile(path):
    old = read_meta(directory)
    diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
    if diff:
      raise ValueError(f"{directory} holds a different extraction (differs in {diff}); use a new output directory")
  else:
    _write_json(path, dict(meta))


def shard_ranges(num_items: int, shard_size: int) -> list[tuple[int, int]]:
  return [(s, min(s + shard_size, num_items)) for s in range(0, num_items, shard_size)]


def write_shards(
  directory: str | os.PathLike,
  meta: Mapping[str, Any],
  *,
  num_items: int,
  shard_size: int,
  make_shard: Callable[[int, int], tuple[Iterable[bytes], dict]],
  process_index: int = 0,
  process_count: int = 1,
) -> list[str]:
  """Writes this process's unfinished shards (k % process_count == process_index); returns the shards written.

  ``make_shard(start, stop)`` returns (encoded records, report dict) for items [start, stop). ``meta`` (grid,
  vocab_size, num_aug, ...) goes to codes.json, completed with the format, shard size and number of shards.
  """
  from array_record.python import array_record_module

  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  ranges = shard_ranges(num_items, shard_size)
  _check_meta(
    directory, {**meta, "format": FORMAT, "num_items": num_items, "shard_size": shard_size, "num_shards": len(ranges)}
  )
  written = []
  for k in range(process_index, len(ranges), process_count):
    path = os.path.join(directory, shard_name(k, len(ranges)))
    if os.path.exists(path):
      problem = shard_problem(path)
      if problem is None:
        continue
      print(f"{path}: {problem}; writing it again", file=sys.stderr, flush=True)
    tmp = f"{path}.tmp"
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
      records, report = make_shard(*ranges[k])
      count = 0
      for record in records:
        writer.write(record)
        count += 1
    finally:
      writer.close()
    sidecar = {**report, "records": count, "items": list(ranges[k]), "sha256": file_sha256(tmp)}
    _write_json(sidecar_path(path), sidecar)
    os.replace(tmp, path)  # last: the shard counts as finished only once complete
    written.append(path)
  return written


class CodeShards:
  """Random-access source over a codes directory: ``src[i]`` -> {'codes', 'label', 'index'} (see decode_record)."""

  def __init__(self, directory: str | os.PathLike):
    import grain

    self.directory = os.fspath(directory)
    self.meta = read_meta(self.directory)
    n = self.meta["num_shards"]
    paths = [os.path.join(self.directory, shard_name(k, n)) for k in range(n)]
    missing = [os.path.basename(p) for p in paths if not os.path.exists(p)]
    if missing:
      raise ValueError(
        f"{self.directory}: {len(missing)} of {n} shards are missing ({missing[:3]}...); the "
        f"extraction is unfinished: re-run the same command to complete it"
      )
    stray = set(glob.glob(os.path.join(self.directory, "*.array_record"))) - set(paths)
    if stray:
      raise ValueError(f"{self.directory}: shards {sorted(stray)[:3]} do not belong to this extraction")
    try:
      self._source = grain.sources.ArrayRecordDataSource(paths)
    except Exception as e:  # noqa: BLE001 - the reader names no file: find the damaged shard
      bad = next((p for p in paths if _unreadable(p)), None)
      if bad is None:
        raise
      raise RecordError(
        f"{self.directory}: shard {os.path.basename(bad)} cannot be read ({type(e).__name__}: {e}); re-run the "
        f"command that wrote it (extract / import-codes) to write it again"
      ) from e
    self._names = [os.path.basename(p) for p in paths]
    counts = []
    for p in paths:
      try:
        counts.append(int(json.load(open(sidecar_path(p)))["records"]))
      except (OSError, ValueError, KeyError):
        counts = None
        break
    self._starts = None if counts is None else np.cumsum([0, *counts])
    self.grid = tuple(self.meta["grid"])
    self.vocab_size = int(self.meta["vocab_size"])
    self.num_aug = int(self.meta["num_aug"])

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    try:
      return decode_record(self._source[i])
    except Exception as e:  # noqa: BLE001 - name the file and record; the cause stays chained
      raise RecordError(f"{self.directory}: cannot read {self.locate(i)}: {type(e).__name__}: {e}") from e

  def locate(self, i: int) -> str:
    """'codes-00003-of-00128.array_record record 17' for global record ``i`` (from the shards' sidecars)."""
    if self._starts is None or not 0 <= i < self._starts[-1]:
      return f"record {i}"
    k = int(np.searchsorted(self._starts, i, side="right")) - 1
    return f"{self._names[k]} record {i - int(self._starts[k])}"

  def __repr__(self) -> str:
    return f"CodeShards({self.directory!r}, {len(self)} records, grid {self.grid}, {self.num_aug} aug)"


class ArraySource:
  """In-memory random-access source: codes (N, num_aug, h*w or h, w) int, labels (N,). Same records as CodeShards."""

  def __init__(
    self,
    codes: np.ndarray,
    labels: np.ndarray,
    grid: tuple[int, int] | int,
    vocab_size: int,
    indices: np.ndarray | None = None,
  ):
    from randar_jax.data.orders import grid_shape

    self.grid = grid_shape(grid)
    codes = np.asarray(codes)
    if codes.ndim < 3 or codes.shape[0] != len(labels):
      raise ValueError(f"codes must be (N, num_aug, tokens...) with N = len(labels) = {len(labels)}, got {codes.shape}")
    self.codes = codes.reshape(codes.shape[0], codes.shape[1], -1).astype(np.int32)
    if self.codes.shape[2] != self.grid[0] * self.grid[1]:
      raise ValueError(f"codes with {self.codes.shape[2]} tokens do not fit the grid {self.grid}")
    self.labels = np.asarray(labels, np.int32)
    self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, np.int64)
    self.vocab_size, self.num_aug = int(vocab_size), self.codes.shape[1]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict[str, Any]:
    return {"codes": self.codes[i], "label": self.labels[i], "index": self.indices[i]}


class TfdsCodes:
  """A ``tfds.data_source`` of pre-tokenised codes as a source: features 'codes' (num_aug, h, w) and 'label'."""

  def __init__(self, data_source, vocab_size: int | None = None):
    self._source = data_source
    first = data_source[0]
    if "codes" not in first or "label" not in first:
      raise ValueError(f"a TFDS codes dataset needs 'codes' and 'label' features, found {sorted(first)}")
    shape = np.shape(first["codes"])
    if len(shape) != 3:
      raise ValueError(f"TFDS 'codes' must be (num_aug, h, w), got {shape}")
    self.num_aug, self.grid, self.vocab_size = shape[0], tuple(shape[1:]), vocab_size

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    r = self._source[i]
    return {
      "codes": np.asarray(r["codes"], np.int32).reshape(self.num_aug, -1),
      "label": np.int32(r["label"]),
      "index": np.int64(r.get("index", i)),
    }


def write_source(
  directory: str | os.PathLike,
  source,
  *,
  shard_size: int = 10000,
  description: Mapping[str, Any] | None = None,
  process_index: int = 0,
  process_count: int = 1,
) -> list[str]:
  """Writes any codes source (``grid``, ``vocab_size``, ``num_aug``; ``src[i]`` records) as ArrayRecord shards."""
  grid, dtype = tuple(source.grid), code_dtype(source.vocab_size)
  meta = {
    "grid": list(grid),
    "vocab_size": int(source.vocab_size),
    "num_aug": int(source.num_aug),
    "dtype": dtype.name,
    **(description or {}),
  }

  def make_shard(start: int, stop: int):
    items = (source[i] for i in range(start, stop))
    return (encode_record(r["codes"], r["label"], r["index"], grid, dtype) for r in items), {"skipped": []}

  return write_shards(
    directory,
    meta,
    num_items=len(source),
    shard_size=shard_size,
    make_shard=make_shard,
    process_index=process_index,
    process_count=process_count,
  )
