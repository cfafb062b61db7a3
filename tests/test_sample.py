"""``randar-jax sample`` at FID scale: samples keyed by index (batch size and process count change nothing), shards
streamed to disk, a killed run resumed to byte-identical files, another run's folder refused, files ``eval`` reads.

The tiny RandAR fixture with the pixel tokenizer (its 64 codes as grey levels) gives 4 x 4 grey images (written to
samples.npz as RGB, the ADM format).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest
from multiprocess_cfg_search import TinyFeatures  # noqa: F401 - registers the 'tiny' extractor for eval

from conftest import fixture_file, load_json
from randar_jax import cli
from randar_jax.convert import convert_checkpoint
from randar_jax.models.randar import RandARConfig

CLASSES, PER_CLASS, SHARD = "0-2", 4, 5  # 12 samples in shards of 5, 5 and 2
OUTPUTS = ("tokens.npz", "samples.npz")


@pytest.fixture(scope="module")
def model(fixtures, tmp_path_factory):
  """(checkpoint directory, config) of the converted tiny RandAR."""
  config = RandARConfig.from_torch_args(
    load_json(fixture_file(fixtures, "randar_tiny_config.json"))["constructor_args"]
  )
  root = tmp_path_factory.mktemp("sample")
  return convert_checkpoint(
    fixture_file(fixtures, "randar_tiny.safetensors"), root / "model", config, progress=False
  ), config


def _args(model, out, *extra, batch_size=8):
  model_dir, config = model
  return [
    "sample",
    str(model_dir),
    "--out",
    str(out),
    "--classes",
    CLASSES,
    "--num-per-class",
    str(PER_CLASS),
    "--steps",
    "4",
    "--tokenizer",
    f"pixels:{config.vocab_size}",
    "--shard-size",
    str(SHARD),
    "--batch-size",
    str(batch_size),
    "--png",
    *extra,
  ]


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
  """An uninterrupted single-process run (batch 8): its folder."""
  out = tmp_path_factory.mktemp("reference") / "run"
  assert cli.main(_args(model, out)) == 0
  return out


def _same_files(a, b):
  for name in OUTPUTS:
    assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_batch_size_changes_nothing_and_eval_reads_the_files(model, reference, tmp_path, capsys):
  _, config = model
  out = tmp_path / "batch3"
  assert cli.main(_args(model, out, batch_size=3)) == 0
  _same_files(reference, out)  # byte for byte: same tokens, orders, images, labels

  count, g = 3 * PER_CLASS, config.grid_size
  with np.load(out / "tokens.npz") as tokens, np.load(out / "samples.npz") as images:
    np.testing.assert_array_equal(tokens["labels"], np.repeat(np.arange(3), PER_CLASS))  # class-major
    np.testing.assert_array_equal(images["labels"], tokens["labels"])
    assert tokens["tokens"].shape == (count, g, g) and tokens["orders"].shape == (count, g * g)
    assert images["arr_0"].dtype == np.uint8 and images["arr_0"].shape == (
      count,
      g,
      g,
      3,
    )  # grey, repeated: ADM files are RGB
    assert len(np.unique(tokens["tokens"].reshape(count, -1), axis=0)) == count  # every sample its own stream
  assert not (out / "shards").exists() and (out / "grid.png").read_bytes()[:4] == b"\x89PNG"
  pngs = sorted(os.path.relpath(os.path.join(d, f), out / "png") for d, _, fs in os.walk(out / "png") for f in fs)
  assert pngs == [f"{i // PER_CLASS:04d}/{i:06d}.png" for i in range(count)]  # per-class folders

  capsys.readouterr()
  metrics = tmp_path / "metrics.json"
  args = ["eval", str(out / "samples.npz"), "--ref", str(reference / "samples.npz"), "--features", "tiny:"]
  assert cli.main([*args, "--out", str(metrics), "--batch-size", "8"]) == 0
  assert json.loads(metrics.read_text())["num_samples"] == count


def test_another_setting_in_the_same_folder_is_refused(model, reference, capsys):
  before = sorted(os.listdir(reference)), (reference / "manifest.json").read_text()
  capsys.readouterr()
  assert cli.main(_args(model, reference, "--seed", "1")) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("randar-jax sample: error:") and "seed: 0 -> 1" in err and "\n" not in err
  assert (sorted(os.listdir(reference)), (reference / "manifest.json").read_text()) == before
  assert cli.main(_args(model, reference)) == 0  # the same settings: complete, nothing redone
  assert "is complete" in capsys.readouterr().out


_SLOW_WRITER = """
import sys, time
from randar_jax import cli, sample
write = sample._ShardWriter.write
def slow(self, k, shard):
  write(self, k, shard)
  print("shard", k, flush=True)
  time.sleep(60)  # killed here, with later shards still to do
sample._ShardWriter.write = slow
cli.main(sys.argv[1:])
"""


def test_killed_run_resumes_to_identical_files(model, reference, tmp_path, capsys):
  out = tmp_path / "killed"
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.Popen(
    [sys.executable, "-c", _SLOW_WRITER, *_args(model, out)], env=env, stdout=subprocess.PIPE, text=True
  )
  try:
    assert proc.stdout.readline().startswith("shard"), "the subprocess ended before its first shard"
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
  assert os.listdir(out / "shards") == ["000000.npz"] and not (out / "samples.npz").exists()

  capsys.readouterr()
  assert cli.main(_args(model, out)) == 0
  assert "resuming: 1 of 3 shards" in capsys.readouterr().out
  _same_files(reference, out)
  assert not [f for f in os.listdir(out) if "partial" in f]


def test_two_processes_write_the_same_files(model, reference, tmp_path):
  here, port = os.path.dirname(__file__), portpicker.pick_unused_port()
  env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  out = tmp_path / "two"
  script = os.path.join(here, "multiprocess_cfg_search.py")  # runs `randar-jax ARGS` as one of two processes
  procs = [
    subprocess.Popen(
      [sys.executable, script, str(p), str(port), json.dumps(_args(model, out))],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for p in range(2)
  ]
  start = time.time()
  outputs = [p.communicate(timeout=240)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], (outputs, time.time() - start)
  _same_files(reference, out)


def test_bad_settings_are_refused_before_any_work(model, tmp_path, capsys):
  for flag, value in (("--shard-size", "0"), ("--grid-rows", "0"), ("--batch-size", "0")):
    capsys.readouterr()
    assert cli.main(_args(model, tmp_path / "bad", flag, value)) == 2
    assert "must be >= 1" in capsys.readouterr().err
  assert not (tmp_path / "bad").exists()
