"""The training input pipeline (Grain): pre-tokenised codes -> batches in the model's language, ready for
``model.loss(**batch)``: tokens in generation order, the order, the labels.

    source = open_source('codes/')                    # CodeShards; or ArraySource / TfdsCodes / SyntheticCodes
    config = PipelineConfig(batch_size=1024, seed=0)  # RandAR; RAR: order=OrderPolicy(anneal=(125_000, 187_500))
    loader = Loader(source, config, mesh)             # global batches, sharded over the mesh's ('data', 'fsdp')
    batch = next(loader)           # {'tokens', 'order': (B, h*w) int32, 'labels': (B,), 'meta': {'index', 'random'}}
    loss, _ = model.loss(**{k: v for k, v in batch.items() if k != "meta"}, ordered=True)
    mngr.save(step, args=ocp.args.Composite(data=loader.save_args(), ...))     # iterator state, per process
    mngr.restore(step, args=ocp.args.Composite(data=loader.restore_args(), ...))

Stages (one global stream, cut into per-process strides):

    source -> shuffle(seed; a new permutation each epoch) -> repeat -> attach stream position g
      -> per-record random map (Philox keyed by (seed, g)): pick one stored augmentation uniformly, draw the order
         for step g // global_batch, permute the tokens into that order
      -> chunks of global_batch / process_count consecutive positions; this process takes chunks
         process_index (mod process_count) -> prefetch threads

Everything random is a function of (seed, g), and the step that RAR's annealing needs is g // global_batch, not
host state: the batches are the same across restarts, prefetch depth and worker count, and process p's batch k
holds stream positions k * global_batch + [p * local, (p+1) * local), so processes see disjoint records and,
concatenated in process order (as ``jax.make_array_from_process_local_data`` lays them out), make exactly the
single-process global batch k, row for row: a run's trajectory does not depend on how many hosts feed it.
Resuming needs the same process count (Grain's state is per process). Emitted per example, under the names
``model.loss`` takes: ``tokens`` (h*w,) codes in generation order, ``order`` (h*w,) the raster cell of each
generated token, ``labels`` (); and under ``meta``: ``index`` (the source's item number) and ``random`` (whether
the policy's order, not its fallback, was used).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np

from randar_jax import sharding
from randar_jax.data.orders import OrderPolicy
from randar_jax.data.records import CodeShards, TfdsCodes


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int  # global batch (all processes)
  seed: int = 0
  order: OrderPolicy = OrderPolicy()  # RandAR: always random; RAR: OrderPolicy(anneal=(start, end))
  shuffle: bool = True
  num_epochs: int | None = None  # None: repeat forever
  num_threads: int = 2  # batches prepared concurrently (threads)
  prefetch: int = 4  # batches buffered ahead
  workers: int = 0  # > 0: Grain worker processes (needs an `if __name__ == '__main__'` guard)


class PickAugAndOrder(grain.transforms.RandomMap):
  """(record, stream position) -> one augmentation's tokens permuted into a freshly drawn generation order."""

  def __init__(self, grid: tuple[int, int], policy: OrderPolicy, global_batch: int):
    self.grid, self.policy, self.global_batch = tuple(grid), policy, global_batch

  def random_map(self, element: tuple[Mapping[str, Any], int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    record, position = element
    codes = record["codes"]
    aug = rng.integers(codes.shape[0]) if codes.shape[0] > 1 else 0
    order, used = self.policy.draw(rng, position // self.global_batch, self.grid)
    return {
      "tokens": codes[aug][order].astype(np.int32),
      "order": order,
      "labels": np.int32(record["label"]),
      "meta": {"index": np.int64(record["index"]), "random": np.bool_(used)},
    }


def _with_position(position: int, record):
  return record, position


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  return (
    jax.process_index() if process_index is None else process_index,
    jax.process_count() if process_count is None else process_count,
  )


def make_dataset(
  source, config: PipelineConfig, process_index: int | None = None, process_count: int | None = None
) -> grain.IterDataset:
  """This process's batches (numpy dicts) as a checkpointable Grain IterDataset (see the module docstring).

  ``source``: random access ``src[i]`` -> {'codes' (num_aug, h*w), 'label', 'index'} and an attribute ``grid``.
  """
  index, count = _process(process_index, process_count)
  if config.batch_size % count:
    raise ValueError(f"global batch {config.batch_size} does not divide over {count} processes")
  if len(source) == 0:
    raise ValueError(f"{source!r} holds no records")
  ds = grain.MapDataset.source(source)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)
  if config.num_epochs != 1:
    ds = ds.repeat(config.num_epochs)
  ds = ds.map_with_index(_with_position)
  ds = ds.random_map(PickAugAndOrder(source.grid, config.order, config.batch_size), seed=(config.seed + 1) % 2**32)
  chunks = ds.batch(config.batch_size // count, drop_remainder=True)  # chunk c: positions [c * local, ...)
  ds = chunks[: len(chunks) // count * count][index::count]  # every process gets as many batches
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.num_threads, prefetch_buffer_size=config.prefetch))
  if config.workers > 0:
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain 0.2.18 reads an absl flag in workers (google/grain#1355)
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.workers))
  return it


def to_global(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Per-process batch -> global jax.Arrays, leading axis sharded over the mesh's batch axes ('data', 'fsdp')."""
  spec = sharding.named_sharding(mesh, ("batch",))
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(spec, v), dict(batch))


class Loader:
  """Iterator of global batches (dict of jax.Array) over a source; checkpointable with Orbax."""

  def __init__(
    self,
    source,
    config: PipelineConfig,
    mesh: jax.sharding.Mesh | None = None,
    *,
    process_index: int | None = None,
    process_count: int | None = None,
  ):
    self.mesh = sharding.build_mesh() if mesh is None else mesh
    parts = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if config.batch_size % parts:
      raise ValueError(f"global batch {config.batch_size} does not divide over the mesh's {parts} batch shards")
    self.source, self.config = source, config
    self.iterator = iter(make_dataset(source, config, process_index, process_count))

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    return to_global(next(self.iterator), self.mesh)

  def save_args(self) -> grain.checkpoint.CheckpointSave:
    """Orbax args that save the iterator state (one JSON file per process)."""
    return grain.checkpoint.CheckpointSave(self.iterator)

  def restore_args(self) -> grain.checkpoint.CheckpointRestore:
    """Orbax args that restore the state into this loader's iterator (in place)."""
    return grain.checkpoint.CheckpointRestore(self.iterator)

  def close(self) -> None:
    if hasattr(self.iterator, "close"):
      self.iterator.close()


def open_source(spec: str, split: str = "train", data_dir: str | None = None, vocab_size: int | None = None):
  """A codes source: a codes directory (``randar-jax extract``), a TFDS build directory or ``tfds:NAME``."""
  if os.path.isfile(os.path.join(spec, "codes.json")):
    return CodeShards(spec)
  import tensorflow_datasets as tfds

  if spec.startswith("tfds:"):
    return TfdsCodes(tfds.data_source(spec[len("tfds:") :], split=split, data_dir=data_dir), vocab_size)
  if os.path.isfile(os.path.join(spec, "dataset_info.json")):
    return TfdsCodes(tfds.builder_from_directory(spec).as_data_source(split), vocab_size)
  raise FileNotFoundError(
    f"no codes at {spec}: expected a directory written by randar-jax extract, a TFDS build directory or tfds:NAME"
  )
