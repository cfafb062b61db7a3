"""Grain pipeline: determinism, seeds, Orbax resume, disjoint processes, annealing, ArrayRecord/TFDS sources."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from randar_jax import sharding
from randar_jax.data import orders, records
from randar_jax.data.pipeline import Loader, PipelineConfig, make_dataset, open_source
from randar_jax.data.synthetic import SyntheticCodes

GRID = (4, 6)  # non-square on purpose


@pytest.fixture(scope="module")
def source():
  return SyntheticCodes(300, grid=GRID, vocab_size=50, num_classes=5, num_aug=3, noise=0.2, seed=3)


def take(iterator, n):
  return [jax.tree.map(np.asarray, next(iterator)) for _ in range(n)]


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert jax.tree.structure(x) == jax.tree.structure(y)
    jax.tree.map_with_path(
      lambda path, u, v: np.testing.assert_array_equal(u, v, err_msg=jax.tree_util.keystr(path)), x, y
    )


def test_batches_are_global_sharded_arrays_in_generation_order(source):
  mesh = sharding.build_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  batch = next(Loader(source, PipelineConfig(batch_size=16, seed=0), mesh))
  assert batch["tokens"].shape == batch["order"].shape == (16, 24) and batch["labels"].shape == (16,)
  assert batch["tokens"].dtype == batch["order"].dtype == np.int32
  assert batch["tokens"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  assert len(batch["tokens"].addressable_shards) == 8
  columns = (np.asarray(v) for v in (batch["tokens"], batch["order"], batch["labels"], batch["meta"]["index"]))
  for tokens, positions, label, index in zip(*columns):
    record = source[int(index)]
    np.testing.assert_array_equal(np.sort(positions), np.arange(24))
    raster = np.empty_like(tokens)
    raster[positions] = tokens  # undo the permutation: one of the stored augmentations, in raster order
    assert any(np.array_equal(raster, c) for c in record["codes"]) and label == record["label"]
  with pytest.raises(ValueError, match="does not divide over the mesh"):
    Loader(source, PipelineConfig(batch_size=12), mesh)


def test_deterministic_per_seed(source):
  config = PipelineConfig(batch_size=8, seed=7)
  first = take(Loader(source, config), 4)
  assert_same(first, take(Loader(source, config), 4))
  other = take(Loader(source, PipelineConfig(batch_size=8, seed=8)), 4)
  assert not np.array_equal(first[0]["meta"]["index"], other[0]["meta"]["index"])
  assert not np.array_equal(first[0]["order"], other[0]["order"])
  unshuffled = take(Loader(source, PipelineConfig(batch_size=8, seed=7, shuffle=False)), 8)
  np.testing.assert_array_equal(np.concatenate([b["meta"]["index"] for b in unshuffled]), np.arange(64))
  picked = []  # which stored augmentation each example shows: all three, about equally often
  for b in unshuffled:
    for tokens, positions, index in zip(b["tokens"], b["order"], b["meta"]["index"]):
      raster = np.empty_like(tokens)
      raster[positions] = tokens
      picked.append([np.array_equal(raster, c) for c in source[int(index)]["codes"]].index(True))
  assert set(picked) == {0, 1, 2} and max(np.bincount(picked)) < 40


def test_epochs_cover_the_data_and_reshuffle(source):
  config = PipelineConfig(batch_size=20, seed=1)
  batches = take(iter(make_dataset(source, config, 0, 1)), 30)  # two epochs of 300
  epoch1, epoch2 = (np.concatenate([b["meta"]["index"] for b in batches[i : i + 15]]) for i in (0, 15))
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(300))
  np.testing.assert_array_equal(np.sort(epoch2), np.arange(300))
  assert not np.array_equal(epoch1, epoch2)


def test_checkpoint_restore_resumes_exactly(source, tmp_path):
  config = PipelineConfig(batch_size=8, seed=0, num_threads=2, prefetch=3)
  loader = Loader(source, config)
  take(loader, 5)
  with ocp.CheckpointManager(tmp_path) as mngr:
    mngr.save(5, args=ocp.args.Composite(data=loader.save_args()))
    mngr.wait_until_finished()
  expected = take(loader, 4)
  resumed = Loader(source, config)
  take(resumed, 1)  # a fresh loader that has moved elsewhere
  with ocp.CheckpointManager(tmp_path) as mngr:
    mngr.restore(5, args=ocp.args.Composite(data=resumed.restore_args()))
  assert_same(take(resumed, 4), expected)
  assert_same(take(Loader(source, config), 9)[5:], expected)  # and they are batches 6..9 of an unbroken run


def test_processes_see_disjoint_records_forming_the_global_batch(source):
  config = PipelineConfig(batch_size=16, seed=5)
  whole = iter(make_dataset(source, config, 0, 1))
  parts = [iter(make_dataset(source, config, p, 2)) for p in range(2)]
  for _ in range(6):
    a, b, g = next(parts[0]), next(parts[1]), next(whole)
    assert a["meta"]["index"].shape == (8,) and not set(a["meta"]["index"]) & set(b["meta"]["index"])
    np.testing.assert_array_equal(
      np.concatenate([a["meta"]["index"], b["meta"]["index"]]), g["meta"]["index"]
    )  # row for row
    # the same record at the same stream position gets the same order, whatever the process count
    merged = {
      int(i): p
      for i, p in zip(
        np.concatenate([a["meta"]["index"], b["meta"]["index"]]), np.concatenate([a["order"], b["order"]])
      )
    }
    for i, p in zip(g["meta"]["index"], g["order"]):
      np.testing.assert_array_equal(merged[int(i)], p)


def test_worker_processes_give_the_same_batches(source):
  """Grain worker processes (spawned; about 4 s here) change nothing: randomness is keyed by stream position."""
  config = PipelineConfig(batch_size=8, seed=1)
  expected = take(iter(make_dataset(source, config, 0, 1)), 6)
  it = iter(make_dataset(source, PipelineConfig(batch_size=8, seed=1, workers=2), 0, 1))
  try:
    assert_same(take(it, 6), expected)
  finally:
    it.close()


def test_annealing_gives_the_expected_share_of_random_orders(source):
  start, end, batch = 2, 6, 512
  config = PipelineConfig(batch_size=batch, seed=0, order=orders.OrderPolicy(anneal=(start, end)))
  it = iter(make_dataset(SyntheticCodes(4096, grid=GRID, vocab_size=50), config, 0, 1))
  raster = orders.scan_order("raster", GRID)
  for step in range(9):
    b = next(it)
    r = orders.random_ratio(step, start, end)
    share = b["meta"]["random"].mean()
    assert abs(share - r) <= 4 * np.sqrt(r * (1 - r) / batch) + 1e-9, (step, share, r)  # 4 sigma, exact at 0 and 1
    assert all(np.array_equal(p, raster) for p in b["order"][~b["meta"]["random"]])
    assert sum(np.array_equal(p, raster) for p in b["order"][b["meta"]["random"]]) == 0


def test_array_record_and_tfds_sources_give_the_same_batches(source, tmp_path):
  records.write_source(tmp_path / "codes", source, shard_size=64, description={"source": "synthetic"})
  shards = open_source(str(tmp_path / "codes"))
  assert len(shards) == len(source) and shards.grid == GRID and shards.num_aug == 3
  config = PipelineConfig(batch_size=8, seed=2)
  expected = take(Loader(source, config), 3)
  assert_same(take(Loader(shards, config), 3), expected)

  import tensorflow_datasets as tfds

  class SyntheticTfds(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # defined in a test: no code directory (see randar_jax/data/tfds_folder.py)

    def _info(self):
      return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
          {"codes": tfds.features.Tensor(shape=(3, *GRID), dtype=np.int32), "label": np.int32, "index": np.int64}
        ),
      )

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(len(source)):
        r = source[i]
        yield i, {"codes": r["codes"].reshape(3, *GRID), "label": r["label"], "index": r["index"]}

  builder = SyntheticTfds(data_dir=str(tmp_path / "tfds"), file_format="array_record")
  builder.download_and_prepare()
  tfds_source = open_source(str(builder.data_dir), vocab_size=50)
  assert tfds_source.grid == GRID and len(tfds_source) == len(source)
  # TFDS stores the records in its own order; the batches hold the same kind of data, mapped back by 'index'
  batch = take(Loader(tfds_source, config), 1)[0]
  for tokens, positions, index in zip(batch["tokens"], batch["order"], batch["meta"]["index"]):
    raster = np.empty_like(tokens)
    raster[positions] = tokens
    assert any(np.array_equal(raster, c) for c in source[int(index)]["codes"])


def test_synthetic_source_structure():
  src = SyntheticCodes(50, grid=8, vocab_size=17, num_classes=3, num_aug=2, noise=0.0, seed=0)
  r = src[4]
  template = src.templates[r["label"]]
  np.testing.assert_array_equal(r["codes"][0], template.ravel())
  np.testing.assert_array_equal(r["codes"][1], template[:, ::-1].ravel())
  noisy = SyntheticCodes(2000, grid=8, vocab_size=17, num_classes=3, noise=0.5, seed=0)
  match = np.mean([np.mean(noisy[i]["codes"][0] == noisy.templates[noisy[i]["label"]].ravel()) for i in range(200)])
  assert abs(match - (0.5 + 0.5 / 17)) < 0.02
  assert src.token_entropy() == 0.0 and 0 < noisy.token_entropy() < np.log(17)
  with pytest.raises(IndexError):
    src[50]


def test_two_real_processes(tmp_path):
  """Two JAX processes (gloo on CPU): global batches = the single-process ones; per-process Orbax resume."""
  import os
  import subprocess
  import sys

  import portpicker

  here = os.path.dirname(__file__)
  sys.path.insert(0, here)
  import multiprocess_loader as worker

  port = portpicker.pick_unused_port()
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  procs = [
    subprocess.Popen(
      [sys.executable, os.path.join(here, "multiprocess_loader.py"), str(p), str(port), str(tmp_path)],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for p in range(2)
  ]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs
  results = [np.load(tmp_path / f"process_{p}.npz") for p in range(2)]
  np.testing.assert_array_equal(results[0]["index"], results[1]["index"])  # both see the same global arrays
  single = iter(make_dataset(SyntheticCodes(**worker.SOURCE), worker.CONFIG, 0, 1))
  for step, global_index in enumerate(results[0]["index"]):
    assert sorted(global_index) == sorted(next(single)["meta"]["index"]), step
  np.testing.assert_array_equal(results[0]["resumed"], results[0]["index"][3:])
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(tmp_path / "ckpt" / "3" / "data"))
