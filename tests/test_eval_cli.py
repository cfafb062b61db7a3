"""``randar-jax eval`` and ``cfg-search`` end to end on the tiny fixture model with the grey-level tokenizer and a
stand-in feature extractor (registered like the digits demo's classifier); ADM sample files; multi-host search."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from multiprocess_cfg_search import TinyFeatures
from PIL import Image

from conftest import fixture_file, load_json
from randar_jax import checkpoint, cli, sharding
from randar_jax.convert import convert_checkpoint
from randar_jax.decode import batched
from randar_jax.decode.sampling import Guidance
from randar_jax.eval import cfg_search, evaluate, extractors, metrics, samples
from randar_jax.models.randar import RandARConfig
from randar_jax.tokenizers.pixels import PixelTokenizer


@pytest.fixture(scope="module")
def workspace(fixtures, tmp_path_factory):
  """The converted tiny model, a reference set of 48 grey images of its grid size (.npz, arr_0), and its config."""
  root = tmp_path_factory.mktemp("eval")
  args = load_json(fixture_file(fixtures, "randar_tiny_config.json"))["constructor_args"]
  config = RandARConfig.from_torch_args(args)
  model_dir = convert_checkpoint(
    fixture_file(fixtures, "randar_tiny.safetensors"), root / "model", config, progress=False
  )
  rng = np.random.default_rng(0)
  v, g = config.vocab_size, config.grid_size  # grey levels = the model's vocabulary
  smooth = np.clip(rng.normal(v / 2, 6 * v / 64, (48, 1, 1)) + rng.normal(0, 10 * v / 64, (48, g, g)), 0, v - 1)
  images = np.asarray(PixelTokenizer(v).decode(smooth.astype(np.int32)))
  np.savez(root / "ref.npz", arr_0=images)
  return root, model_dir, images, config


def _tokenizer(config):
  return f"pixels:{config.vocab_size}"  # the pixel tokenizer whose levels are the model's vocabulary


def _search_args(workspace, out, scales, *extra):
  root, model_dir, _, config = workspace
  return [
    "cfg-search",
    "--model",
    str(model_dir),
    "--tokenizer",
    _tokenizer(config),
    "--ref",
    str(root / "ref.npz"),
    "--features",
    "tiny:",
    "--out",
    str(out),
    "--scales",
    scales,
    "--num-samples",
    "12",
    "--batch-size",
    "8",
    "--steps",
    "4",
    *extra,
  ]


def test_cfg_search_runs_resumes_after_interruption_and_plots(workspace, tmp_path, monkeypatch, capsys):
  out = tmp_path / "search"
  calls, real = [], cfg_search.sample_statistics

  def counted(model, tokenizer, extractor, labels, scale, search, **kwargs):
    calls.append((scale, search.num_samples))
    if interrupt_at and len(calls) == interrupt_at:
      raise KeyboardInterrupt  # as if the job were killed during the second scale
    return real(model, tokenizer, extractor, labels, scale, search, **kwargs)

  monkeypatch.setattr(cfg_search, "sample_statistics", counted)
  interrupt_at = 2
  with pytest.raises(KeyboardInterrupt):
    cli.main(_search_args(workspace, out, "1.0,3.0"))
  assert sorted(os.listdir(out / "scales")) == ["cfg_1.0000.json"] and not (out / "fid_vs_cfg.png").exists()
  first = (out / "scales" / "cfg_1.0000.json").read_text()
  assert (out / "reference_stats.npz").exists()

  interrupt_at, calls[:] = 0, []
  assert cli.main(_search_args(workspace, out, "1.0,3.0")) == 0
  assert calls == [(3.0, 12)]  # only the unfinished scale
  assert (out / "scales" / "cfg_1.0000.json").read_text() == first
  assert "resuming: 1 of 2 scales" in capsys.readouterr().out
  summary = json.loads((out / "summary.json").read_text())
  results = {r["scale"]: r for r in summary["scales"]}
  assert set(results) == {1.0, 3.0} and summary["best"]["fid"] == min(r["fid"] for r in results.values())
  for r in results.values():
    assert r["num_samples"] == 12 and r["extractor"] == "tiny" and np.isfinite(r["fid"])
    assert r["inception_score"] >= 1.0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
  assert (out / "fid_vs_cfg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # a result placed by hand is kept (and wins); the grid grows; the final run samples at the best scale
  (out / "scales" / "cfg_5.0000.json").write_text(json.dumps({"scale": 5.0, "fid": -1.0, "note": "seeded"}))
  calls[:] = []
  args = _search_args(workspace, out, "1.0,3.0,5.0", "--final-samples", "12", "--save-samples")
  assert cli.main(args) == 0
  assert calls == [(5.0, 12)]  # nothing but the final run
  final = json.loads((out / "final_cfg_5.0000.json").read_text())
  assert final["scale"] == 5.0 and final["num_samples"] == 12
  written = samples.open_images(out / "samples_cfg_5.0000.npz")
  # the ADM format is RGB: the grey reference's level repeated in three channels (as `sample` writes it)
  assert len(written) == 12 and written.shape == (*workspace[2].shape[1:3], 3)
  assert json.loads((out / "summary.json").read_text())["final"] == final
  calls[:] = []
  assert cli.main(args) == 0 and calls == []  # everything done: nothing recomputed

  code = cli.main(_search_args(workspace, out, "1.0", "--temperature", "0.5"))
  assert code == 2 and "other settings" in capsys.readouterr().err


def test_cfg_search_scale_result_equals_direct_computation(workspace, tmp_path):
  """The numbers in a scale's JSON are the metrics of exactly the samples the decoder gives for that scale."""
  root, model_dir, ref_images, config = workspace
  assert cli.main(_search_args(workspace, tmp_path, "2.0")) == 0
  result = json.loads((tmp_path / "scales" / "cfg_2.0000.json").read_text())
  labels = batched.parse_labels(None, None, config.num_classes, 12, 0)
  feats, ref = _features(_sampled(model_dir, labels, seed=0)), _features(ref_images)
  fid = metrics.frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
  assert result["fid"] == pytest.approx(fid, rel=1e-9)
  assert (result["precision"], result["recall"]) == metrics.precision_recall(ref, feats)


def _sampled(model_dir, labels, seed):
  """Images the search's sampler gives (same model placement, so the compiled decoder is shared with it)."""
  mesh = sharding.build_mesh(devices=jax.local_devices())
  model = checkpoint.load_model(model_dir, mesh=mesh)
  with sharding.model_context(mesh):
    tokens, _ = batched.sample_labels(
      model, labels, batch_size=8, seed=seed, num_steps=4, guidance=Guidance.linear(1.0, 2.0), progress=False
    )
  return PixelTokenizer(model.config.vocab_size).decode(tokens)


def _features(images, batch=8, logits=False):
  """TinyFeatures in the command's batch shape (padded batches): float32 features bit for bit as there (XLA may
  round differently for another batch shape, which moves a small FID in its 8th digit)."""
  images = np.asarray(images)
  parts = [images[i : i + batch] for i in range(0, len(images), batch)]
  out = list(extractors.extract(TinyFeatures(), parts, batch))
  feats = np.concatenate([f for f, _ in out]).astype(np.float64)
  return (feats, np.concatenate([lg for _, lg in out]).astype(np.float64)) if logits else feats


def _png_folder(path, images):
  os.makedirs(path)
  for i, image in enumerate(images):
    Image.fromarray(image[..., 0]).save(path / f"{i:06d}.png")
  return path


def test_eval_command_on_npz_and_folder(workspace, tmp_path, capsys):
  _, _, ref_images, config = workspace
  rng = np.random.default_rng(1)
  v, g = config.vocab_size, config.grid_size
  fake = np.asarray(PixelTokenizer(v).decode(rng.integers(0, v, (20, g, g))))
  with samples.AdmNpzWriter(tmp_path / "samples.npz", 20, fake.shape[1:]) as writer:
    writer.write(fake[:7])
    writer.write(fake[7:])
  ref_dir = _png_folder(tmp_path / "ref", ref_images)
  args = [
    "eval",
    str(tmp_path / "samples.npz"),
    "--ref",
    str(ref_dir),
    "--features",
    "tiny:",
    "--batch-size",
    "6",
    "--out",
    str(tmp_path / "m.json"),
    "--save-ref",
    str(tmp_path / "ref_stats.npz"),
  ]
  assert cli.main(args) == 0
  result = json.loads((tmp_path / "m.json").read_text())
  (feats, logits), ref = _features(fake, 6, logits=True), _features(ref_images, 6)
  assert result["fid"] == pytest.approx(
    metrics.frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False)),
    rel=1e-9,
  )
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  kl = (probs * (np.log(probs) - np.log(probs.mean(0)))).sum(1).mean()
  assert result["inception_score"] == pytest.approx(np.exp(kl), rel=1e-12)
  assert (result["precision"], result["recall"]) == metrics.precision_recall(ref, feats)
  assert result["num_samples"] == 20 and result["num_reference"] == len(ref_images)

  # the saved reference statistics give the same numbers; a folder of samples reads like the npz
  _png_folder(tmp_path / "fake", fake)
  assert (
    cli.main(
      [
        "eval",
        str(tmp_path / "fake"),
        "--ref",
        str(tmp_path / "ref_stats.npz"),
        "--features",
        "tiny:",
        "--batch-size",
        "6",
        "--out",
        str(tmp_path / "m2.json"),
      ]
    )
    == 0
  )
  again = json.loads((tmp_path / "m2.json").read_text())
  for key in ("fid", "inception_score", "precision", "recall"):
    assert again[key] == pytest.approx(result[key], rel=1e-12)


def test_eval_inception_flags_reach_the_loader(workspace, tmp_path, monkeypatch):
  """--inception PATH --preprocess tf1 loads that file with that preprocessing (the network itself, from a weights
  file, is tested in test_inception.py; here a stand-in keeps the 2048-d linear algebra out of the test)."""
  _, _, ref_images, _ = workspace
  np.savez(tmp_path / "s.npz", arr_0=ref_images[:10])
  seen = []
  monkeypatch.setattr(
    extractors, "load_inception", lambda path, preprocessing: seen.append((path, preprocessing)) or TinyFeatures()
  )
  args = [
    "eval",
    str(tmp_path / "s.npz"),
    "--ref",
    str(tmp_path / "s.npz"),
    "--inception",
    "w.pth",
    "--preprocess",
    "tf1",
    "--out",
    str(tmp_path / "m.json"),
  ]
  assert cli.main(args) == 0 and seen == [("w.pth", "tf1")]
  assert json.loads((tmp_path / "m.json").read_text())["fid"] == pytest.approx(0.0, abs=1e-9)


def test_eval_refuses_statistics_of_another_network(workspace, tmp_path, capsys):
  _, _, ref_images, _ = workspace
  np.savez(tmp_path / "adm_ref.npz", mu=np.zeros(2048), sigma=np.eye(2048), arr_0=ref_images)  # ADM-style batch
  np.savez(tmp_path / "s.npz", arr_0=ref_images)
  code = cli.main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "adm_ref.npz"), "--features", "tiny:"])
  assert code == 2 and "TF Inception (ADM)" in capsys.readouterr().err
  evaluate.Statistics(np.zeros(8), np.eye(8), 5, "another_net").save(tmp_path / "other.npz")
  code = cli.main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "other.npz"), "--features", "tiny:"])
  assert code == 2 and "'another_net'" in capsys.readouterr().err
  code = cli.main(["eval", str(tmp_path / "missing.npz"), "--ref", str(tmp_path / "s.npz"), "--features", "tiny:"])
  assert code == 2 and "no such sample file" in capsys.readouterr().err
  code = cli.main(["eval", str(tmp_path / "s.npz"), "--ref", str(tmp_path / "s.npz")])
  assert code == 2 and "--inception" in capsys.readouterr().err


def test_adm_sample_files_stream_and_fail_cleanly(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
  with samples.AdmNpzWriter(tmp_path / "a.npz", 10, (6, 5, 3), labels=np.arange(10)) as writer:
    for start in range(0, 10, 4):
      writer.write(images[start : start + 4])
  with np.load(tmp_path / "a.npz") as data:  # what the ADM evaluator does with it
    np.testing.assert_array_equal(data["arr_0"], images)
    np.testing.assert_array_equal(data["labels"], np.arange(10))
  read = samples.open_images([tmp_path / "a.npz", tmp_path / "a.npz"])
  assert len(read) == 20
  np.testing.assert_array_equal(np.concatenate(list(read.batches(3))), np.concatenate([images, images]))
  np.testing.assert_array_equal(np.concatenate(list(read.parts[0].batches(4, start=3, stop=9))), images[3:9])

  with pytest.raises(ValueError, match="3 of the announced 10"):
    with samples.AdmNpzWriter(tmp_path / "short.npz", 10, (6, 5, 3)) as writer:
      writer.write(images[:3])
  with pytest.raises(RuntimeError):
    with samples.AdmNpzWriter(tmp_path / "crash.npz", 10, (6, 5, 3)) as writer:
      writer.write(images[:3])
      raise RuntimeError("killed")
  assert sorted(os.listdir(tmp_path)) == ["a.npz"]  # no partial files left behind

  data = (tmp_path / "a.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
  with pytest.raises(ValueError, match="not a readable .npz|truncated"):
    list(samples.open_images(tmp_path / "cut.npz").batches(4))
  np.savez(tmp_path / "float.npz", arr_0=images.astype(np.float32))
  with pytest.raises(ValueError, match="must be uint8 images"):
    samples.open_images(tmp_path / "float.npz")
  np.savez(tmp_path / "other.npz", x=images)
  with pytest.raises(ValueError, match="no 'arr_0'"):
    samples.open_images(tmp_path / "other.npz")
  os.makedirs(tmp_path / "mixed")
  Image.fromarray(images[0]).save(tmp_path / "mixed" / "0.png")
  Image.fromarray(images[0, :5]).save(tmp_path / "mixed" / "1.png")
  with pytest.raises(ValueError, match="one size"):
    list(samples.open_images(tmp_path / "mixed").batches(2))


def test_multihost_search_gathers_every_process_share(workspace, tmp_path):
  """Two JAX processes (one CPU device each) sample their halves with seeds 2s and 2s+1; process 0 scores the
  union. The result equals that union computed here in one process."""
  import portpicker

  def launch(args):
    here, port = os.path.dirname(__file__), portpicker.pick_unused_port()
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    procs = [
      subprocess.Popen(
        [sys.executable, os.path.join(here, "multiprocess_cfg_search.py"), str(p), str(port), json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
      )
      for p in range(2)
    ]
    return [p.communicate(timeout=240)[0] for p in procs], [p.returncode for p in procs]

  out = tmp_path / "mh"
  outputs, codes = launch(_search_args(workspace, out, "2.0"))
  assert codes == [0, 0], outputs
  result = json.loads((out / "scales" / "cfg_2.0000.json").read_text())
  # bad input on process 0 (another search's directory) stops every process instead of leaving them waiting
  outputs, codes = launch(_search_args(workspace, out, "2.0", "--temperature", "0.5"))
  assert codes == [2, 3] and "other settings" in outputs[0] and "process 0 stopped" in outputs[1], outputs
  assert result["num_samples"] == 12

  _, model_dir, ref_images, config = workspace
  labels = batched.parse_labels(None, None, config.num_classes, 12, 0)
  # sample i is keyed by (seed, i) whatever the process count; features in each process's batch shape
  feats = np.concatenate([_features(part) for part in np.split(np.asarray(_sampled(model_dir, labels, seed=0)), 2)])
  ref = _features(ref_images)
  fid = metrics.frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mean(0), np.cov(ref, rowvar=False))
  assert result["fid"] == pytest.approx(fid, rel=1e-9)


def test_cfg_search_samples_rar_with_its_own_defaults(fixtures, workspace, tmp_path):
  """A RAR checkpoint searches with RAR's sampler: one token per step, pow-cosine guidance, per-size temperature."""
  from randar_jax.models.rar import RARConfig

  root, _, _, _ = workspace
  config = RARConfig.from_original(load_json(fixture_file(fixtures, "rar_tiny_config.json"))["config"])
  model_dir = convert_checkpoint(
    fixture_file(fixtures, "rar_tiny.safetensors"), tmp_path / "rar", config, progress=False
  )
  args = [
    "cfg-search",
    "--model",
    str(model_dir),
    "--tokenizer",
    _tokenizer(config),
    "--ref",
    str(root / "ref.npz"),
    "--features",
    "tiny:",
    "--out",
    str(tmp_path / "search"),
    "--scales",
    "3.0",
    "--num-samples",
    "8",
    "--batch-size",
    "8",
  ]
  assert cli.main(args) == 0
  settings = json.loads((tmp_path / "search" / "search.json").read_text())
  assert settings["steps"] == -1 and settings["schedule"].startswith("powcos:")
  assert json.loads((tmp_path / "search" / "scales" / "cfg_3.0000.json").read_text())["num_samples"] == 8
