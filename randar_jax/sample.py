"""FID-scale sampling (``randar-jax sample``): streamed to disk in shards, resumable, spread over processes,
reproducible by sample index.

    run(model, tokenizer, labels, 'runs/fid', Job(seed=0, shard_size=256), batch_size=64, record={...}, **settings)

Sample i is drawn with the key ``fold_in(key(seed), i)`` (:func:`randar_jax.decode.batched.sample_keys`), so its
order and tokens do not depend on the batch size, the number of processes or where a run resumed. The work is cut
into shards of ``shard_size`` consecutive indices; shard k belongs to process ``k % process_count``. While the
device decodes batch b + 1 (JAX dispatches asynchronously), a writer thread turns batch b into pixels (the
tokenizer's decoder runs batched on the device too), fills shard buffers and writes each finished shard
atomically. Host memory is a few batches and at most two shards, whatever the number of samples.

Layout of ``out`` (process 0 writes the manifest and the final files; every process writes its own shards):

    manifest.json          what the samples depend on; a re-run with other settings is refused
    shards/000012.npz      finished shards: indices, labels, tokens, orders[, images] (deleted once assembled)
    png/0207/000012.png    with --png: one file per sample in per-class folders (the originals' layout)
    tokens.npz             tokens (N, g, g), orders (N, g*g), labels (N,)
    grid.png               rows are classes (the first --grid-rows classes), up to 8 samples each
    samples.npz            ADM format: arr_0 uint8 (N, H, W, C), labels (N,); written last: its presence = done

A killed run re-run with the same arguments redoes only unfinished shards; the final files are assembled by
streaming the shards in index order with fixed zip timestamps, so they are byte-identical to an uninterrupted
run's. Under ``jax.distributed`` the output folder must be shared by all processes (as the originals' torchrun
sample folder is).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import threading
import zipfile
from typing import Any

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from randar_jax.decode import batched
from randar_jax.eval.cfg_search import on_lead
from randar_jax.eval.samples import AdmNpzWriter, NpzWriter
from randar_jax.utils import images as images_lib
from randar_jax.utils.files import atomic_path, remove

SHARD_SIZE = 256  # samples per shard: the unit of resumption (about 50 MB of 256 x 256 RGB images)
GRID_COLUMNS = 8  # samples per class row in grid.png


@dataclasses.dataclass(frozen=True)
class Job:
  """What the outputs depend on besides the model and the decode settings: the sample index -> label map, the
  seed, the shard size and whether PNG files are written."""

  labels: np.ndarray  # (N,) class of sample i
  seed: int = 0
  shard_size: int = SHARD_SIZE
  png: bool = False

  def __post_init__(self):
    if self.shard_size < 1:
      raise ValueError(f"--shard-size must be >= 1, got {self.shard_size}")
    if len(self.labels) < 1:
      raise ValueError("nothing to sample: no labels")

  @property
  def num_shards(self) -> int:
    return -(-len(self.labels) // self.shard_size)

  def shard(self, k: int) -> np.ndarray:
    """The sample indices of shard k."""
    return np.arange(k * self.shard_size, min((k + 1) * self.shard_size, len(self.labels)))

  def record(self) -> dict[str, Any]:
    return {
      "num_samples": len(self.labels),
      "labels_sha256": hashlib.sha256(np.asarray(self.labels, np.int32).tobytes()).hexdigest(),
      "seed": self.seed,
      "shard_size": self.shard_size,
      "png": self.png,
    }


def settings_record(settings) -> dict[str, Any]:
  """A DecodeSettings as JSON values (for the manifest)."""
  return json.loads(json.dumps(dataclasses.asdict(settings)))


def check_manifest(out: str, record: dict[str, Any]) -> None:
  """Creates ``out/manifest.json``, or refuses (one line) if the one there was written with other settings.
  Every process stops if process 0 refuses."""
  on_lead(_check_manifest, out, record)


def _check_manifest(out: str, record: dict[str, Any]) -> None:
  path = os.path.join(out, "manifest.json")
  if os.path.isfile(path):
    try:
      with open(path) as f:
        stored = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"cannot read {path} ({e}); delete {out} or use another --out") from None
    changed = {k: (stored.get(k), v) for k, v in {**stored, **record}.items() if stored.get(k) != record.get(k)}
    if changed:
      names = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
      raise ValueError(
        f"{out} holds samples made with other settings ({names}); re-run with those or use another --out"
      )
    return
  os.makedirs(out, exist_ok=True)
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(record, f, indent=1)


def _shard_path(out: str, k: int) -> str:
  return os.path.join(out, "shards", f"{k:06d}.npz")


def _finished(out: str, job: Job, k: int) -> bool:
  """Whether shard k is on disk and whole; a damaged one is set aside (renamed ``*.damaged``) and redone."""
  path = _shard_path(out, k)
  if not os.path.exists(path):
    return False
  try:
    with np.load(path) as shard:
      if np.array_equal(shard["indices"], job.shard(k)) and np.array_equal(shard["labels"], job.labels[job.shard(k)]):
        return True
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
    pass
  os.replace(path, path + ".damaged")
  print(f"{path} is damaged or from another run: set aside as {path}.damaged and sampled again")
  return False


def run(
  model,
  tokenizer,
  out: str,
  job: Job,
  *,
  batch_size: int,
  record: dict[str, Any],
  grid_rows: int = 10,
  grid_scale: int = 1,
  progress: bool = True,
  **decode_kwargs,
) -> str | None:
  """Samples ``job`` into ``out`` (or continues it); returns the main output's path on process 0, None
  elsewhere. ``record`` (model, tokenizer, decode settings, ...) joins ``job.record()`` in the manifest;
  ``decode_kwargs`` go to the family's generate."""
  check_manifest(out, {**record, **job.record()})
  final = os.path.join(out, "samples.npz" if tokenizer is not None else "tokens.npz")
  if _agree_flag(os.path.isfile(final)):
    if jax.process_index() == 0:
      print(f"{final} is complete (delete it to assemble again)")
    return final if jax.process_index() == 0 else None
  p, count = jax.process_index(), jax.process_count()
  mine = [k for k in range(p, job.num_shards, count)]
  todo = [k for k in mine if not _finished(out, job, k)]
  if len(todo) < len(mine) and p == 0:
    print(f"resuming: {len(mine) - len(todo)} of {len(mine)} shards of this process already sampled")
  if todo:
    _sample_shards(model, tokenizer, out, job, todo, batch_size, progress and p == 0, decode_kwargs)
  if count > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("randar_jax sample: shards written")
  return on_lead(assemble, out, job, tokenizer is not None, grid_rows, grid_scale, model.config.vocab_size)


def _agree_flag(flag: bool) -> bool:
  """Process 0's flag on every process."""
  from randar_jax.eval.cfg_search import _agree

  return bool(_agree(np.array([flag if jax.process_index() == 0 else False]))[0])


def _sample_shards(model, tokenizer, out: str, job: Job, shards: list[int], batch_size: int, progress: bool, kwargs):
  """Decodes the samples of ``shards`` in batches; a writer thread overlaps the host work with the decoding."""
  indices = np.concatenate([job.shard(k) for k in shards])
  writer = _ShardWriter(
    out, job, tokenizer, tqdm(total=len(indices), unit="img", desc="sampling", disable=not progress)
  )
  pending: queue.Queue = queue.Queue(maxsize=2)  # bounds host memory: at most two batches wait for the writer
  thread = threading.Thread(target=writer.consume, args=(pending,), daemon=True)
  thread.start()
  try:
    for batch in batched.decode_batches(
      model, job.labels[indices], batch_size=batch_size, seed=job.seed, indices=indices, **kwargs
    ):
      pending.put(batch)
      if writer.error is not None:
        break
  finally:
    pending.put(None)
    thread.join()
    writer.bar.close()
  if writer.error is not None:
    raise writer.error


class _ShardWriter:
  """Host side of sampling, in its own thread: device tokens -> pixels -> shard buffers -> shard files."""

  def __init__(self, out: str, job: Job, tokenizer, bar):
    self.out, self.job, self.tokenizer, self.bar = out, job, tokenizer, bar
    self.buffers: dict[int, dict[str, np.ndarray]] = {}
    self.filled: dict[int, int] = {}
    self.error: BaseException | None = None

  def consume(self, pending: queue.Queue) -> None:
    while (batch := pending.get()) is not None:
      if self.error is None:
        try:
          self.take(batch)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
          self.error = e

  def take(self, batch: batched.Batch) -> None:
    n = len(batch.indices)
    arrays = {"tokens": batch.tokens, "orders": batch.orders}
    if self.tokenizer is not None:
      arrays["images"] = self.tokenizer.decode(batch.tokens)  # the whole padded batch: one compiled shape
    rows = {name: np.asarray(value)[:n] for name, value in arrays.items()}
    rows["indices"], rows["labels"] = batch.indices, batch.labels
    shard_of = batch.indices // self.job.shard_size
    for k in np.unique(shard_of):
      sel = shard_of == k
      if k not in self.buffers:
        size = len(self.job.shard(k))
        self.buffers[k] = {name: np.empty((size,) + v.shape[1:], v.dtype) for name, v in rows.items()}
        self.filled[k] = 0
      at = batch.indices[sel] - k * self.job.shard_size
      for name, value in rows.items():
        self.buffers[k][name][at] = value[sel]
      self.filled[k] += int(sel.sum())
      if self.filled[k] == len(self.job.shard(k)):
        self.write(int(k), self.buffers.pop(k))
    self.bar.update(n)

  def write(self, k: int, shard: dict[str, np.ndarray]) -> None:
    if self.job.png and "images" in shard:  # before the shard file: a finished shard has all its PNGs
      for index, label, image in zip(shard["indices"], shard["labels"], shard["images"]):
        save_png(image, os.path.join(self.out, "png", f"{label:04d}", f"{index:06d}.png"))
    os.makedirs(os.path.join(self.out, "shards"), exist_ok=True)
    with atomic_path(_shard_path(self.out, k)) as tmp, open(tmp, "wb") as f:
      np.savez(f, **shard)


def save_png(image: np.ndarray, path: str) -> None:
  """One uint8 (H, W, C) image as PNG, atomically."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with atomic_path(path) as tmp:
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")


def _shards(out: str, job: Job, name: str):
  """``name`` of every shard, in index order (one shard in memory at a time)."""
  for k in range(job.num_shards):
    with np.load(_shard_path(out, k)) as shard:
      yield shard[name]


def assemble(out: str, job: Job, has_images: bool, grid_rows: int, grid_scale: int, vocab_size: int) -> str:
  """Builds tokens.npz, the class grid and samples.npz from the shards (streamed), then deletes the shards."""
  missing = [k for k in range(job.num_shards) if not os.path.isfile(_shard_path(out, k))]
  if missing:
    raise RuntimeError(f"shards {missing[:5]} of {out} are missing after sampling (did a process fail?)")
  n = len(job.labels)
  with np.load(_shard_path(out, 0)) as shard:
    rows = {name: (shard[name].shape[1:], shard[name].dtype) for name in shard.files}
  with NpzWriter(os.path.join(out, "tokens.npz")) as tokens_npz:
    for name in ("tokens", "orders"):
      with tokens_npz.member(name, (n,) + rows[name][0], rows[name][1]) as write:
        for part in _shards(out, job, name):
          write(part)
    tokens_npz.array("labels", job.labels)
  chosen = grid_indices(job.labels, grid_rows)
  picked = _pick(out, job, chosen, "images" if has_images else "tokens")
  cells = picked if has_images else images_lib.token_map(picked, vocab_size)
  cells = np.concatenate([cells, np.full_like(cells[:1], 255)])  # a blank cell where a class has fewer samples
  cells = cells[np.where(chosen >= 0, np.cumsum(chosen >= 0) - 1, len(cells) - 1)]
  name = "grid.png" if has_images else "tokens.png"
  images_lib.save_grid(cells, os.path.join(out, name), columns=GRID_COLUMNS, scale=grid_scale)
  final = os.path.join(out, "tokens.npz")
  if has_images:
    with AdmNpzWriter(os.path.join(out, "samples.npz"), n, rows["images"][0], labels=job.labels) as writer:
      for part in _shards(out, job, "images"):
        writer.write(part)
    final = writer.path
  remove(os.path.join(out, "shards"))
  print(f"wrote {final} ({n} samples), {os.path.join(out, 'tokens.npz')} and {os.path.join(out, name)}")
  return final


def grid_indices(labels: np.ndarray, rows: int, columns: int = GRID_COLUMNS) -> np.ndarray:
  """(rows' * columns,) sample indices for a grid whose rows are the first ``rows`` classes (in order of first
  appearance), each row that class's first ``columns`` samples; -1 where a class has fewer."""
  _, first = np.unique(labels, return_index=True)
  classes = labels[np.sort(first)][:rows]
  out = np.full((len(classes), columns), -1)
  for r, c in enumerate(classes):
    found = np.flatnonzero(labels == c)[:columns]
    out[r, : len(found)] = found
  return out.reshape(-1)


def _pick(out: str, job: Job, indices: np.ndarray, name: str) -> np.ndarray:
  """``name`` rows of the given sample indices (>= 0), read from the shards that hold them."""
  wanted = indices[indices >= 0]
  rows = {}
  for k in np.unique(wanted // job.shard_size):
    with np.load(_shard_path(out, k)) as shard:
      values = shard[name]
      for i in wanted[wanted // job.shard_size == k]:
        rows[int(i)] = values[i - k * job.shard_size]
  return np.stack([rows[int(i)] for i in wanted])
