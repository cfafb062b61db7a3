"""Fault drills for training (issue: runs that survive damaged checkpoints, non-finite steps and bad setups).

One uninterrupted in-process run (module fixture, checkpoints every 3 steps) is the reference; each drill damages
a copy of its workdir (or kills a launcher run) and resumes, and the losses must equal the reference's bit for bit
wherever a good checkpoint remains. Preflight drills: one line naming the cause, nothing written.
"""

import os
import shutil
import signal
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import cli_flags, run_launcher, tiny_config, toy_problem

from randar_jax import sharding
from randar_jax.data.records import ArraySource, write_source
from randar_jax.train import checkpointing, loop, optim, preflight
from randar_jax.train.checkpointing import Checkpointer, CheckpointError, NonFiniteError
from randar_jax.train.metrics import read_metrics
from randar_jax.train.preflight import SetupError

STEPS = 10  # checkpoints at 3, 6, 9 and 10; keep 3 -> 6, 9, 10 remain


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
  """Each train() call builds a new Trainer (a new jitted step): a persistent cache turns recompiles into loads."""
  previous, path = jax.config.jax_compilation_cache_dir, str(tmp_path_factory.mktemp("jax_cache"))
  jax.config.update("jax_compilation_cache_dir", path)
  yield {"JAX_COMPILATION_CACHE_DIR": path}  # the launcher subprocesses load the same programs
  jax.config.update("jax_compilation_cache_dir", previous)


def train(workdir, stop_at=STEPS, **extra):
  return loop.train(tiny_config(**extra), str(workdir), stop_at=stop_at, progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  train(workdir)
  return workdir, read_metrics(workdir)


def copy_of(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  return workdir


def biggest_file(step_dir):
  return max((p for p in (step_dir / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def losses(workdir):
  return [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(workdir)]


# ---- digests ---------------------------------------------------------------------------------------------------


def test_digest_sees_one_changed_word_and_ignores_the_sharding():
  x = jnp.arange(64 * 8, dtype=jnp.float32).reshape(64, 8) / 7
  tree = {"a": x, "b": {"c": jnp.int32(3)}}
  base, finite = checkpointing.digest(tree, check_finite=True)
  assert finite and set(base) == {"a", "b/c"}
  mesh = sharding.build_mesh({"data": 4, "fsdp": 2, "tensor": 1})
  sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", "fsdp")))
  assert checkpointing.digest({"a": sharded, "b": {"c": jnp.int32(3)}})[0] == base
  for i in (0, 77, x.size - 1):  # one flipped bit anywhere
    bits = np.asarray(x).view(np.uint32).copy()
    bits.flat[i] ^= 1
    assert checkpointing.digest({**tree, "a": jnp.asarray(bits.view(np.float32))})[0]["a"] != base["a"]
  assert checkpointing.digest({**tree, "a": x.at[3, 3].set(jnp.nan)}, check_finite=True)[1] is False


# ---- damaged checkpoints ---------------------------------------------------------------------------------------


def test_truncated_newest_step_is_set_aside_and_rewritten(reference, tmp_path):
  workdir = copy_of(reference, tmp_path)
  assert Checkpointer(workdir).steps() == [6, 9, STEPS]
  victim = biggest_file(workdir / str(STEPS))
  os.truncate(victim, victim.stat().st_size // 2)
  with pytest.warns(RuntimeWarning, match=f"checkpoint {STEPS} .* is damaged .* moved to .*damaged"):
    train(workdir)
  assert (workdir / "damaged" / str(STEPS) / "params").is_dir()  # kept, not deleted
  assert Checkpointer(workdir).steps() == [6, 9, STEPS]  # the step was written again
  assert losses(workdir) == losses(reference[0])
  with warnings.catch_warnings():  # the second resume finds a good newest step: no warning, no crash loop
    warnings.simplefilter("error")
    train(workdir)
  assert losses(workdir) == losses(reference[0])


def test_same_size_corruption_is_detected_by_the_digest(reference, tmp_path):
  workdir = copy_of(reference, tmp_path)
  victim = biggest_file(workdir / str(STEPS))
  data = bytearray(victim.read_bytes())
  middle = len(data) // 2
  data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
  victim.write_bytes(bytes(data))
  with pytest.warns(RuntimeWarning, match=f"checkpoint {STEPS} .* is damaged .*params/.* differs from its recorded"):
    train(workdir)  # Orbax reads the flipped bytes without complaint: only the digest sees them
  assert (workdir / "damaged" / str(STEPS)).is_dir()
  assert losses(workdir) == losses(reference[0])


def test_every_checkpoint_damaged_is_one_clear_error(reference, tmp_path):
  workdir = copy_of(reference, tmp_path)
  for step in (6, 9, STEPS):
    (workdir / str(step) / "params" / "_METADATA").write_text("{")
  with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no good checkpoint") as failure:
    train(workdir)
  assert "\n" not in str(failure.value) and sorted(os.listdir(workdir / "damaged")) == ["10", "6", "9"]
  with pytest.raises(CheckpointError, match="set aside earlier"):  # a re-run does not silently start afresh
    train(workdir)


def test_kill_during_a_save_resumes_exactly(reference, compile_cache, tmp_path):
  killed = run_launcher(tmp_path, "--preempt_at=6", "--preempt_mid_save", *cli_flags(), env_extra=compile_cache)
  out = killed.communicate(timeout=240)[0]
  assert killed.returncode == -signal.SIGKILL, out
  assert Checkpointer(tmp_path).steps()[0] == 3  # 6 was being written: committed or not, never half there
  train(tmp_path)
  assert losses(tmp_path) == losses(reference[0])


# ---- non-finite steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_threshold", [None, 10.0])
def test_nonfinite_update_is_skipped_whatever_the_skip_rule(skip_threshold):
  """NaN passes ``norm_sum >= threshold`` (False) and the rule is off before skip_after or without a threshold:
  a non-finite loss or gradient must still leave parameters and Adam state untouched."""
  params, grads, mask = toy_problem()
  cfg = optim.OptimConfig(lr=0.1, warmup_steps=0, skip_threshold=skip_threshold, skip_after=100)
  tx = optim.transform(cfg, mask)
  state = tx.init(params)
  nan_grads = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grads)
  for g, loss in [(nan_grads, 1.0), (grads, jnp.inf)]:
    new, new_state, stats = optim.update(cfg, tx, params, state, g, jnp.int32(5), 1000, jnp.float32(loss))
    assert bool(stats["nonfinite"]) and bool(stats["skipped"])
    jax.tree.map(np.testing.assert_array_equal, (new, new_state), (params, state))
  _, _, stats = optim.update(cfg, tx, params, state, grads, jnp.int32(5), 1000, jnp.float32(1.0))
  assert not bool(stats["nonfinite"]) and not bool(stats["skipped"])


class PoisonedLoader(loop.Loader):
  """Token ids outside the vocabulary (NaN embeddings, NaN loss) in the batches of the chosen steps (1-based)."""

  steps: frozenset = frozenset()

  def __next__(self):
    batch = super().__next__()
    self.served = getattr(self, "served", 0) + 1
    tokens = batch["tokens"]  # every batch passes through the same ops: one compiled train step
    offset = 10_000 if self.served in self.steps else 0
    return {**batch, "tokens": jax.device_put(tokens + offset, tokens.sharding)}


def test_nonfinite_steps_are_skipped_and_counted(monkeypatch, tmp_path):
  monkeypatch.setattr(PoisonedLoader, "steps", frozenset({4, 5}))
  monkeypatch.setattr(loop, "Loader", PoisonedLoader)
  train(tmp_path, stop_at=7)
  rows = {r["step"]: r for r in read_metrics(tmp_path)}
  assert [rows[s]["nonfinite"] for s in range(1, 8)] == [0, 0, 0, 1, 1, 0, 0]
  assert rows[7]["skipped_total"] >= 2 and np.isnan(rows[4]["loss"]) and np.isfinite(rows[7]["loss"])


def test_persistent_nonfinite_stops_with_the_last_good_checkpoint(monkeypatch, tmp_path):
  monkeypatch.setattr(PoisonedLoader, "steps", frozenset(range(5, 100)))
  monkeypatch.setattr(loop, "Loader", PoisonedLoader)
  with pytest.raises(NonFiniteError, match="3 consecutive non-finite steps \\(5 to 7.*Likely causes") as failure:
    train(tmp_path, **{"optim.max_nonfinite": 3})
  assert "\n" not in str(failure.value) and "the last checkpoint is step 6" in str(failure.value)
  assert Checkpointer(tmp_path).steps() == [3, 6]
  assert "damaged" not in os.listdir(tmp_path)


# ---- preflight -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def out_of_vocab_codes(tmp_path_factory):
  """A codes directory (2 shards of 4) whose record 1 of shard 1 holds id 64 = the tiny model's vocab size."""
  config = tiny_config()
  vocab, grid = config.model.vocab_size, config.model.grid_size
  codes = np.zeros((8, 1, grid * grid), np.int32)
  codes[5, 0, 3] = vocab
  directory = tmp_path_factory.mktemp("codes")
  write_source(directory, ArraySource(codes, np.zeros(8), grid, vocab_size=vocab), shard_size=4)
  return directory


@pytest.mark.parametrize(
  "overrides, message",
  [
    ({"batch_size": -4}, "config.batch_size must be a positive integer, got -4"),
    ({"mesh.data": 3}, "config.mesh: "),
    ({"data.source": "/nonexistent/codes"}, "data source '/nonexistent/codes': "),
    ({"model.grid_size": 5}, "holds \\(4, 4\\) token grids but the model expects \\(5, 5\\)"),
    (
      {"sample.every": 5, "sample.kwargs": {"num_steps": 88}},
      "config.sample.kwargs .*num_steps must be in \\[1, 16\\]",
    ),
    ({"sample.every": 5, "tokenizer": "pixels:17"}, "config.tokenizer 'pixels:17' has 17 codes; .* is 64"),
    ({"optim.lrr": 1.0}, "config.optim: unknown optim config keys \\['lrr'\\]"),
  ],
)
def test_bad_setups_fail_before_anything_is_written(tmp_path, overrides, message):
  workdir = tmp_path / "run"
  if "model.grid_size" in overrides:  # a codes directory with 4 x 4 grids for a 5 x 5 model
    source = ArraySource(np.zeros((4, 1, 16), np.int32), np.zeros(4), 4, vocab_size=64)
    write_source(tmp_path / "codes", source, shard_size=4)
    overrides = {**overrides, "data.source": str(tmp_path / "codes")}
  with pytest.raises(SetupError, match=message) as failure:
    train(workdir, **overrides)
  assert "\n" not in str(failure.value) and not workdir.exists()


def test_codes_outside_the_vocabulary_name_shard_and_record(out_of_vocab_codes, tmp_path):
  with pytest.raises(SetupError, match="codes-00001-of-00002.array_record record 1 holds token id 64 outside"):
    train(tmp_path / "run", **{"data.source": str(out_of_vocab_codes)})
  assert not (tmp_path / "run").exists()


def test_workdir_without_room_for_two_checkpoints(monkeypatch, tmp_path):
  monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1 << 30, 1 << 30, 1000))
  with pytest.raises(SetupError, match="two checkpoints need"):
    train(tmp_path / "run")
  (tmp_path / "file").write_text("")
  with pytest.raises(SetupError, match="is not a directory"):
    train(tmp_path / "file")
  assert not (tmp_path / "run").exists()


def test_launcher_errors_are_one_line_with_exit_code_2(tmp_path):
  """An override typo (caught while absl parses the flags) and a bad setup (preflight, inside train)."""
  typo = run_launcher(tmp_path / "typo", *cli_flags(), "--config.optim.lrr=1")
  setup = run_launcher(tmp_path / "setup", *cli_flags(batch_size=-4))
  outputs = [p.communicate(timeout=180)[0] for p in (typo, setup)]
  assert [p.returncode for p in (typo, setup)] == [2, 2], outputs
  last = [out.strip().splitlines()[-1] for out in outputs]
  assert last[0].startswith(
    "randar-jax train: error: --config.optim.lrr: no such config field (did you mean 'optim.lr'"
  )
  assert last[1] == "randar-jax train: error: config.batch_size must be a positive integer, got -4"
  assert not any("Traceback" in out for out in outputs) and not os.listdir(tmp_path)


# ---- data integrity --------------------------------------------------------------------------------------------


def test_damaged_shards_are_named_and_written_again(tmp_path, capsys):
  from randar_jax.data import records

  codes = np.arange(8 * 16, dtype=np.int32).reshape(8, 1, 16) % 64
  source = ArraySource(codes, np.zeros(8), 4, vocab_size=64)
  assert len(write_source(tmp_path, source, shard_size=4)) == 2
  assert write_source(tmp_path, source, shard_size=4) == []  # finished shards verify: nothing to redo
  shard = tmp_path / records.shard_name(1, 2)
  intact = shard.read_bytes()
  flipped = bytearray(intact)
  flipped[len(flipped) // 2] ^= 0xFF
  for damaged in (intact[: len(intact) // 2], bytes(flipped)):  # truncated, then same-size corruption
    shard.write_bytes(damaged)
    with pytest.raises(records.RecordError, match=records.shard_name(1, 2)):
      src = records.CodeShards(tmp_path)
      [src[i] for i in range(len(src))]
    assert write_source(tmp_path, source, shard_size=4) == [str(shard)]
    assert records.shard_name(1, 2) in capsys.readouterr().err and shard.read_bytes() == intact
