"""Image sets for evaluation, read and written in batches: ADM ``.npz`` sample files and folders of images.

    images = open_images('samples.npz')            # ADM format: 'arr_0' uint8 (N, H, W, 3); or a folder of PNGs
    len(images), images.shape                      # N, (H, W, C)
    for batch in images.batches(64):               # uint8 (<= 64, H, W, C); the file is streamed, never loaded whole
      ...
    with AdmNpzWriter('samples.npz', count=50000, shape=(256, 256, 3)) as out:   # what the ADM evaluator reads
      out.write(batch)                             # appended to arr_0 as it comes; 'labels' etc. via extra=

Reading streams the ``arr_0.npy`` member out of the zip (stored or deflated), so a 50k x 256 x 256 x 3 file
(9.8 GB) costs one batch of memory. Folders hold image files (sorted by name, e.g. ``{i:06d}.png`` as RandAR's
``sample_c2i.py`` writes them), all of one size; grey images stay one-channel, everything else is read as RGB.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from randar_jax.data.extract import IMAGE_EXTENSIONS, _is_image
from randar_jax.utils.files import atomic_path, remove


class NpzImages:
  """``arr_0`` (or ``key``) of an ``.npz``: uint8 (N, H, W, C), streamed batch by batch."""

  def __init__(self, path: str | os.PathLike, key: str = "arr_0"):
    self.path, self.key = os.fspath(path), key
    try:
      with zipfile.ZipFile(self.path) as z, z.open(f"{key}.npy") as f:
        self._header(f)
    except KeyError:
      raise ValueError(f"{self.path} has no {key!r} array; ADM sample files hold uint8 images as 'arr_0'") from None
    except (zipfile.BadZipFile, OSError) as e:
      raise ValueError(f"{self.path} is not a readable .npz file (truncated or corrupt?): {e}") from None

  def _header(self, f) -> None:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
      raise ValueError(f"{self.path}: unsupported .npy format version {version} for {self.key}")
    shape, fortran, dtype = read(f)
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3) or fortran:
      raise ValueError(f"{self.path}: {self.key} must be uint8 images (N, H, W, 3) in C order, got {dtype} {shape}")
    self._count, self.shape = shape[0], tuple(shape[1:])

  def __len__(self) -> int:
    return self._count

  def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Images [start, stop) in batches of ``batch_size`` (the last may be shorter)."""
    stop = len(self) if stop is None else min(stop, len(self))
    size = int(np.prod(self.shape))
    with zipfile.ZipFile(self.path) as z, z.open(f"{self.key}.npy") as f:
      self._header(f)
      _skip(f, start * size)
      for first in range(start, stop, batch_size):
        n = min(batch_size, stop - first)
        data = f.read(n * size)
        if len(data) != n * size:
          raise ValueError(f"{self.path} is truncated: {self.key} ends before image {first + len(data) // size}")
        yield np.frombuffer(data, np.uint8).reshape((n,) + self.shape)


def _skip(f, nbytes: int) -> None:
  while nbytes > 0:
    chunk = f.read(min(nbytes, 1 << 24))
    if not chunk:
      raise ValueError("unexpected end of the image array")
    nbytes -= len(chunk)


class FolderImages:
  """Image files directly inside a folder, sorted by name, of one size."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self.files = sorted(os.path.join(self.path, f) for f in os.listdir(self.path) if _is_image(f))
    if not self.files:
      raise ValueError(f"{self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    self.shape = _read(self.files[0]).shape

  def __len__(self) -> int:
    return len(self.files)

  def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    files = self.files[start:stop]
    for first in range(0, len(files), batch_size):
      images = [_read(p) for p in files[first : first + batch_size]]
      bad = [p for p, im in zip(files[first:], images) if im.shape != self.shape]
      if bad:
        raise ValueError(
          f"{bad[0]} is {_read(bad[0]).shape[:2]}, but {self.files[0]} is {self.shape[:2]}; "
          f"all samples must have one size"
        )
      yield np.stack(images)


def _read(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image.load()
      grey = image.mode in ("1", "L", "I", "I;16", "F")
      array = np.asarray(image.convert("L" if grey else "RGB"))
  except OSError as e:
    raise ValueError(f"cannot read image {path}: {e}") from None
  return array[..., None] if grey else array


class ImageSets:
  """Several image sets read one after the other (e.g. the per-process parts of a multi-host run)."""

  def __init__(self, parts: Sequence[NpzImages | FolderImages]):
    shapes = {p.shape for p in parts}
    if len(shapes) != 1:
      raise ValueError(f"the sample sets differ in image shape: {sorted(shapes)}")
    self.parts, self.shape = list(parts), parts[0].shape

  def __len__(self) -> int:
    return sum(len(p) for p in self.parts)

  def batches(self, batch_size: int) -> Iterator[np.ndarray]:
    for part in self.parts:
      yield from part.batches(batch_size)


def open_images(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> ImageSets:
  """One or more ``.npz`` files (``arr_0``) and / or folders of images."""
  paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
  parts = []
  for path in paths:
    if os.path.isdir(path):
      parts.append(FolderImages(path))
    elif os.path.isfile(path) and os.fspath(path).endswith(".npz"):
      parts.append(NpzImages(path))
    elif os.path.exists(path):
      raise ValueError(f"{path}: expected an .npz with 'arr_0' images or a folder of images")
    else:
      raise FileNotFoundError(f"no such sample file or folder: {path}")
  if not parts:
    raise ValueError("no sample files given")
  return ImageSets(parts)


class NpzWriter:
  """An ``.npz`` written member by member, each member streamed in parts (stored, zip64), so no array has to be in
  memory whole. Members carry a fixed timestamp: the same arrays always give the same bytes (a resumed run
  reproduces an uninterrupted one exactly). The file appears under its name only once closed (``atomic_path``);
  ``abort`` (or an error inside ``with``) leaves nothing behind.

      with NpzWriter('tokens.npz') as out:
        with out.member('tokens', (n, 16, 16), np.int32) as write:
          for part in parts:
            write(part)                      # rows of the array, in order
        out.array('labels', labels)
  """

  DATE = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no wall-clock time in the file

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    self._atomic = atomic_path(self.path)
    self._atomic_tmp = self._atomic.__enter__()
    self._zip = zipfile.ZipFile(self._atomic_tmp, "w", zipfile.ZIP_STORED, allowZip64=True)

  @contextlib.contextmanager
  def member(self, name: str, shape: Sequence[int], dtype) -> Iterator[Callable[[np.ndarray], None]]:
    """Yields ``write(part)``: parts are rows of the (shape, dtype) array, in order; all of them must come."""
    shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
    expected, written = shape[0], 0
    info = zipfile.ZipInfo(f"{name}.npy", date_time=self.DATE)
    with self._zip.open(info, "w", force_zip64=True) as f:
      header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
      np.lib.format.write_array_header_1_0(f, header)

      def write(part: np.ndarray) -> None:
        nonlocal written
        part = np.ascontiguousarray(part, dtype)
        if part.shape[1:] != shape[1:] or written + len(part) > expected:
          raise ValueError(f"{name}: expected rows {shape[1:]} (at most {expected - written} more), got {part.shape}")
        f.write(part.tobytes())
        written += len(part)

      yield write
      if written != expected:
        raise ValueError(f"{self.path}: {written} of the announced {expected} rows of {name!r} were written")

  def array(self, name: str, value: np.ndarray) -> None:
    value = np.asarray(value)
    with self.member(name, value.shape if value.ndim else (1,), value.dtype) as write:
      write(value.reshape(-1, *value.shape[1:]) if value.ndim else value.reshape(1))

  def close(self) -> str:
    self._zip.close()
    self._atomic.__exit__(None, None, None)
    return self.path

  def abort(self) -> None:
    """Drops the partial file (idempotent)."""
    if self._zip.fp is None and not os.path.exists(self._atomic_tmp):
      return
    self._zip.close()
    remove(self._atomic_tmp)

  def __enter__(self) -> NpzWriter:
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is None:
      self.close()
    else:
      self.abort()


class AdmNpzWriter:
  """Writes ``arr_0`` = uint8 (count, H, W, 3) batch by batch into an ``.npz`` (:class:`NpzWriter`), plus
  ``extra`` arrays at the end. Grey images (shape (H, W, 1)) are written as RGB, as the ADM evaluator and the
  Inception read them. The file appears under its name only once all ``count`` images are in: an interrupted run
  leaves no half-written sample file behind."""

  def __init__(self, path: str | os.PathLike, count: int, shape: Sequence[int], **extra: np.ndarray):
    shape = tuple(shape)
    self.grey = shape[-1:] == (1,)
    self.shape = shape[:-1] + (3,) if self.grey else shape
    self.path, self.count, self.extra = os.fspath(path), int(count), extra
    self.written = 0
    self._npz = NpzWriter(self.path)
    self._member = self._npz.member("arr_0", (self.count,) + self.shape, np.uint8)
    self._write = self._member.__enter__()

  def write(self, images) -> None:
    images = np.asarray(images)
    if self.grey and images.shape[-1:] == (1,):
      images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8 or images.shape[1:] != self.shape:
      raise ValueError(
        f"expected uint8 images (n, {', '.join(map(str, self.shape))}), got {images.dtype} {images.shape}"
      )
    if self.written + len(images) > self.count:
      raise ValueError(f"more than the announced {self.count} images")
    self._write(images)
    self.written += len(images)

  def close(self) -> str:
    try:
      self._member.__exit__(None, None, None)
      for name, value in self.extra.items():
        self._npz.array(name, value)
    except BaseException:
      self._npz.abort()
      raise
    return self._npz.close()

  def __enter__(self) -> AdmNpzWriter:
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is None:
      self.close()
    else:  # an error mid-way: drop the partial file
      with contextlib.suppress(Exception):
        self._member.__exit__(kind, value, traceback)
      self._npz.abort()
