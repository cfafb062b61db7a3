"""Latent-code extraction: images -> augmented crops -> tokenizer codes -> ArrayRecord shards (see records.py).

    randar-jax extract train/ codes/ --tokenizer ckpt/llamagen_vq16          # folder of class sub-folders
    randar-jax extract tfds:imagenet2012 codes/ --tokenizer ckpt/vq --data-dir ~/tensorflow_datasets
    randar-jax extract ILSVRC2012_img_train.tar codes/ --tokenizer ckpt/vq --aug ten-crop
    randar-jax import-codes imagenet-llamagen-adm-256_codes/ codes/ --vocab-size 16384   # RandAR's .npy folders

In Python: ``extract(open_images('train/'), tokenizer, 'codes/')`` with any object of the ``Tokenizer`` protocol.

Inputs (``open_images``): ``tfds:NAME`` (``tfds.data_source``, needs an array_record build), a TFDS build directory
(holding dataset_info.json, e.g. one written by ``tfds_folder.build``), a folder of class sub-folders (label = index
of the sorted class name, as RandAR's ImageNet tar loader) or a tar of ``class/image`` members or of per-class tars
(ImageNet's train.tar layout). Items are numbered in sorted (class, file) order; the number is stored as ``index``.

Augmentations (docs/randar.md §8): ``adm`` = ADM centre crop, stored [original, horizontal flip] (RandAR's released
checkpoints); ``ten-crop`` = ADM centre crop to 1.1x, then torchvision TenCrop (LlamaGen; RAR's released data).
Crops are decoded by a thread pool while the previous batch is being encoded by one jitted function (fixed batch,
so it compiles once). Process p of P writes shards k with k % P == p; finished shards that match their sidecar
(record count, SHA-256) are skipped on a re-run, damaged ones written again.
A corrupt image is reported by its path and skipped (``on_error='skip'``, listed in the shard's report and printed)
or stops the run (``'fail'``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import io
import os
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from randar_jax import sharding
from randar_jax.data import records
from randar_jax.tokenizers.preprocess import center_crop_arr, load_image, ten_crop

AUGMENTATIONS = {"adm": 2, "ten-crop": 10}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class CorruptInput(ValueError):
  """An input item that cannot be read; the message names it."""


class ImageSource(Protocol):
  """Random access to labelled images: ``read(i)`` -> (PIL RGB image, label); ``name(i)`` says where it is."""

  def __len__(self) -> int: ...
  def read(self, i: int) -> tuple[Image.Image, int]: ...
  def name(self, i: int) -> str: ...


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


class FolderImages:
  """``root/{class}/{image}``; classes sorted by name, label = class position, images sorted within a class."""

  def __init__(self, root: str | os.PathLike):
    self.root = os.fspath(root)
    self.classes = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
    self.paths, self.labels = [], []
    for label, c in enumerate(self.classes):
      files = sorted(f for f in os.listdir(os.path.join(self.root, c)) if _is_image(f))
      self.paths += [os.path.join(self.root, c, f) for f in files]
      self.labels += [label] * len(files)
    if not self.paths:
      raise ValueError(
        f"{self.root} holds no images in class sub-folders (root/CLASS/IMAGE, extensions {IMAGE_EXTENSIONS})"
      )

  def __len__(self) -> int:
    return len(self.paths)

  def name(self, i: int) -> str:
    return self.paths[i]

  def read(self, i: int) -> tuple[Image.Image, int]:
    return load_image(self.paths[i]), self.labels[i]


class TarImages:
  """An uncompressed tar of ``class/image`` members, or of ``class.tar`` members holding that class's images.

  The members are indexed once (offsets), then read with ``os.pread`` (random access, thread-safe).
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    entries = []  # (class, member name, absolute data offset, size)
    with tarfile.open(self.path, "r:") as outer:  # 'r:' refuses compressed tars, which cannot be read randomly
      for m in outer:
        if m.isfile() and m.name.endswith(".tar"):
          with tarfile.open(fileobj=outer.extractfile(m), mode="r:") as inner:
            cls = os.path.splitext(os.path.basename(m.name))[0]
            entries += [
              (cls, f"{m.name}/{n.name}", m.offset_data + n.offset_data, n.size)
              for n in inner
              if n.isfile() and _is_image(n.name)
            ]
        elif m.isfile() and _is_image(m.name) and "/" in m.name.strip("/"):
          entries.append((m.name.strip("/").split("/")[-2], m.name, m.offset_data, m.size))
    if not entries:
      raise ValueError(f"{self.path} holds no class/image members nor per-class tars of images")
    entries.sort(key=lambda e: (e[0], e[1]))
    self.classes = sorted({e[0] for e in entries})
    index = {c: i for i, c in enumerate(self.classes)}
    self.entries = [(index[c], name, offset, size) for c, name, offset, size in entries]
    self._fd = os.open(self.path, os.O_RDONLY)

  def __del__(self):
    if getattr(self, "_fd", None) is not None:
      os.close(self._fd)

  def __len__(self) -> int:
    return len(self.entries)

  def name(self, i: int) -> str:
    return f"{self.path}:{self.entries[i][1]}"

  def read(self, i: int) -> tuple[Image.Image, int]:
    label, _, offset, size = self.entries[i]
    return load_image(io.BytesIO(os.pread(self._fd, size, offset))), label


class TfdsImages:
  """A TFDS image-classification data source (features 'image' uint8 HWC and 'label')."""

  def __init__(self, data_source, name: str):
    self._source, self._name = data_source, name

  def __len__(self) -> int:
    return len(self._source)

  def name(self, i: int) -> str:
    return f"{self._name}[{i}]"

  def read(self, i: int) -> tuple[Image.Image, int]:
    record = self._source[i]
    image = np.asarray(record["image"])
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    return Image.fromarray(image).convert("RGB"), int(record["label"])


def open_images(spec: str, split: str = "train", data_dir: str | None = None) -> ImageSource:
  """Image source from ``tfds:NAME``, a TFDS build directory, a class-folder tree or a .tar file."""
  if spec.startswith("tfds:") or os.path.isfile(os.path.join(spec, "dataset_info.json")):
    import tensorflow_datasets as tfds  # works without TensorFlow for array_record builds

    if spec.startswith("tfds:"):
      name = spec[len("tfds:") :]
      return TfdsImages(tfds.data_source(name, split=split, data_dir=data_dir), f"tfds:{name}/{split}")
    return TfdsImages(tfds.builder_from_directory(spec).as_data_source(split), f"{spec}/{split}")
  if os.path.isdir(spec):
    return FolderImages(spec)
  if os.path.isfile(spec) and spec.endswith(".tar"):
    return TarImages(spec)
  if os.path.isfile(spec):
    raise ValueError(f"{spec}: unsupported input (expected tfds:NAME, a directory or an uncompressed .tar)")
  raise FileNotFoundError(f"no input at {spec}")


def augment(image: Image.Image, mode: str, image_size: int) -> np.ndarray:
  """PIL image -> uint8 (num_aug, image_size, image_size, 3), in the originals' stored order."""
  if mode == "adm":
    crop = center_crop_arr(image, image_size)
    return np.stack([crop, crop[:, ::-1]])
  if mode == "ten-crop":
    return np.stack(ten_crop(Image.fromarray(center_crop_arr(image, int(image_size * 1.1))), image_size))
  raise ValueError(f"unknown augmentation {mode!r}; choose one of {sorted(AUGMENTATIONS)}")


class BatchEncoder:
  """Jitted ``tokenizer.encode`` for a fixed number of crops (short batches are zero-padded: one compile).

  NNX tokenizers are split into (graphdef, state) so the weights are arguments, not constants baked into the
  program. Crops are sharded over the local devices when they divide the batch.
  """

  def __init__(self, tokenizer, batch: int):
    from flax import nnx

    self.batch = batch
    if isinstance(tokenizer, nnx.Module):
      graphdef, state = nnx.split(tokenizer)
      encode = jax.jit(lambda state, x: nnx.merge(graphdef, state).encode(x))
      self._encode = lambda x: encode(state, x)
    else:
      self._encode = jax.jit(tokenizer.encode)
    mesh = sharding.build_mesh(devices=jax.local_devices())  # the mesh the CLI loads the tokenizer onto
    self._sharding = sharding.named_sharding(mesh, ("batch",)) if batch % mesh.size == 0 else None

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    """uint8 (n <= batch, H, W, C) -> int32 (n, h, w)."""
    n = len(crops)
    padded = np.zeros((self.batch, *crops.shape[1:]), np.uint8)
    padded[:n] = crops
    x = jax.device_put(padded, self._sharding) if self._sharding is not None else padded
    return np.asarray(self._encode(x))[:n]


@dataclasses.dataclass
class _Failure:
  reason: str


def _in_flight(
  pool: concurrent.futures.Executor, fn: Callable[[int], Any], items: Sequence[int], batch: int, ahead: int = 2
) -> Iterator[list[tuple[int, Any]]]:
  """Batches of (item, fn(item) or _Failure), computed by the pool ``ahead`` batches in advance."""

  def safe(i):
    try:
      return fn(i)
    except Exception as e:  # noqa: BLE001  (any decode error of a third-party file; reported with its name)
      return _Failure(f"{type(e).__name__}: {e}")

  chunks = [items[s : s + batch] for s in range(0, len(items), batch)]
  queue = [[(i, pool.submit(safe, i)) for i in chunk] for chunk in chunks[:ahead]]
  for k in range(len(chunks)):
    if k + ahead < len(chunks):
      queue.append([(i, pool.submit(safe, i)) for i in chunks[k + ahead]])
    yield [(i, f.result()) for i, f in queue.pop(0)]


def _handle_failure(name: str, failure: _Failure, on_error: str, report: dict, bar: tqdm) -> None:
  if on_error == "fail":
    raise CorruptInput(
      f"cannot read {name}: {failure.reason} (re-run with --on-error skip to skip such files; finished shards are kept)"
    )
  report["skipped"].append([name, failure.reason])
  bar.write(f"skipping unreadable input {name}: {failure.reason}", file=sys.stderr)


def _pending_items(directory: str, num_items: int, shard_size: int, process_index: int, process_count: int) -> int:
  ranges = records.shard_ranges(num_items, shard_size)
  return sum(
    b - a
    for k, (a, b) in enumerate(ranges)
    if k % process_count == process_index
    and not os.path.exists(os.path.join(directory, records.shard_name(k, len(ranges))))
  )


def extract(
  images: ImageSource,
  tokenizer,
  out: str | os.PathLike,
  *,
  aug: str = "adm",
  image_size: int = 256,
  batch_size: int = 64,
  shard_size: int = 1000,
  on_error: str = "skip",
  process_index: int = 0,
  process_count: int = 1,
  workers: int = 8,
  progress: bool = True,
  description: dict | None = None,
) -> list[str]:
  """Encodes every image of ``images`` (this process's shards) into ``out``; returns the shard files written.

  ``batch_size`` counts images (the tokenizer sees batch_size * num_aug crops). ``description`` (e.g. the input
  and tokenizer paths) is stored in codes.json, and a re-run into the same directory must match it.
  """
  if on_error not in ("skip", "fail"):
    raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
  num_aug = AUGMENTATIONS.get(aug)
  if num_aug is None:
    raise ValueError(f"unknown augmentation {aug!r}; choose one of {sorted(AUGMENTATIONS)}")
  if image_size % tokenizer.downsample:
    raise ValueError(
      f"image size {image_size} is not a multiple of the tokenizer's downsampling {tokenizer.downsample}"
    )
  grid = (image_size // tokenizer.downsample,) * 2
  dtype = records.code_dtype(tokenizer.vocab_size)
  meta = {
    "grid": list(grid),
    "vocab_size": int(tokenizer.vocab_size),
    "num_aug": num_aug,
    "aug": aug,
    "image_size": image_size,
    "dtype": dtype.name,
    **(description or {}),
  }
  out = os.fspath(out)
  encode = BatchEncoder(tokenizer, batch_size * num_aug)
  todo = _pending_items(out, len(images), shard_size, process_index, process_count)

  def load(i):
    image, label = images.read(i)
    return augment(image, aug, image_size), label

  with (
    concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool,
    tqdm(total=todo, unit="img", desc=f"extract {process_index}/{process_count}", disable=not progress) as bar,
  ):

    def make_shard(start: int, stop: int):
      report = {"skipped": []}

      def encoded():
        for batch in _in_flight(pool, load, range(start, stop), batch_size):
          good = []
          for i, result in batch:
            if isinstance(result, _Failure):
              _handle_failure(images.name(i), result, on_error, report, bar)
            else:
              good.append((i, *result))
          if good:
            codes = encode(np.concatenate([crops for _, crops, _ in good])).reshape(len(good), num_aug, -1)
            for (i, _, label), c in zip(good, codes):
              yield records.encode_record(c, label, i, grid, dtype)
          bar.update(len(batch))

      return encoded(), report

    return records.write_shards(
      out,
      meta,
      num_items=len(images),
      shard_size=shard_size,
      make_shard=make_shard,
      process_index=process_index,
      process_count=process_count,
    )


def import_randar_codes(
  root: str | os.PathLike,
  out: str | os.PathLike,
  *,
  vocab_size: int,
  shard_size: int = 10000,
  on_error: str = "fail",
  process_index: int = 0,
  process_count: int = 1,
  progress: bool = True,
) -> list[str]:
  """RandAR's published codes (``root/{label}/{index}.npy``, int (num_aug, h*w) raster) -> ArrayRecord shards.

  Labels are the integer folder names and ``index`` the integer file stem; items are sorted by (label, index).
  ``.npy`` files are read with ``allow_pickle=False``. The grid must be square (256 tokens -> 16 x 16).
  """
  root = os.fspath(root)
  files = sorted(
    (int(os.path.basename(os.path.dirname(p))), int(os.path.basename(p)[:-4]), p)
    for p in glob.glob(os.path.join(root, "*", "*.npy"))
    if os.path.basename(os.path.dirname(p)).isdigit() and os.path.basename(p)[:-4].isdigit()
  )
  if not files:
    raise FileNotFoundError(f"{root} holds no {{label}}/{{index}}.npy code files")
  try:
    first = np.load(files[0][2], allow_pickle=False)
  except (OSError, ValueError) as e:
    raise CorruptInput(f"cannot read {files[0][2]}, the file that defines the codes' shape: {e}") from None
  if first.ndim != 2 or round(first.shape[1] ** 0.5) ** 2 != first.shape[1]:
    raise ValueError(f"{files[0][2]}: expected codes (num_aug, h*w) on a square grid, got {first.shape}")
  side = round(first.shape[1] ** 0.5)
  grid, shape, dtype = (side, side), first.shape, records.code_dtype(vocab_size)
  aug = {v: k for k, v in AUGMENTATIONS.items()}.get(shape[0], f"{shape[0]} augmentations")
  meta = {
    "grid": list(grid),
    "vocab_size": int(vocab_size),
    "num_aug": shape[0],
    "aug": aug,
    "dtype": dtype.name,
    "source": os.path.abspath(root),
    "imported_from": "RandAR .npy code folders",
  }
  todo = _pending_items(os.fspath(out), len(files), shard_size, process_index, process_count)

  def load(item):
    label, index, path = item
    codes = np.load(path, allow_pickle=False)
    if codes.shape != shape:
      return _Failure(f"codes of shape {codes.shape}, expected {shape}")
    if codes.min() < 0 or codes.max() >= vocab_size:
      return _Failure(f"codes outside [0, {vocab_size})")
    return records.encode_record(codes, label, index, grid, dtype)

  with tqdm(total=todo, unit="img", desc="import", disable=not progress) as bar:

    def make_shard(start: int, stop: int):
      report = {"skipped": []}

      def encoded():
        for item in files[start:stop]:
          try:
            result = load(item)
          except (OSError, ValueError) as e:
            result = _Failure(f"{type(e).__name__}: {e}")
          if isinstance(result, _Failure):
            _handle_failure(item[2], result, on_error, report, bar)
          else:
            yield result
          bar.update(1)

      return encoded(), report

    return records.write_shards(
      out,
      meta,
      num_items=len(files),
      shard_size=shard_size,
      make_shard=make_shard,
      process_index=process_index,
      process_count=process_count,
    )
