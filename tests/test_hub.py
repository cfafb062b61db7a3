"""Released weights by name (randar_jax.hub) against a fake Hugging Face cache built from the tiny fixtures, fully
offline; and ``convert --config`` with a JSON of the original constructor's arguments."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest

import randar_jax
from conftest import fixture_file, load_json
from randar_jax import checkpoint, cli, config_io, convert, families, hub

TINY = ("randar_tiny", "rar_tiny", "llamagen_tiny", "vq_llamagen_tiny", "vq_maskgit_tiny")  # fixture stems


def fake_hub(cache, repo: str, filename: str, source, commit: str = "0" * 40) -> str:
  """Lays ``source`` out as huggingface_hub caches a download of ``repo/filename`` (blob, ref, snapshot link)."""
  folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
  blob = os.path.join(folder, "blobs", f"{abs(hash((str(source), commit))):x}")
  os.makedirs(os.path.dirname(blob), exist_ok=True)
  shutil.copyfile(source, blob)
  os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
  with open(os.path.join(folder, "refs", "main"), "w") as f:
    f.write(commit)
  link = os.path.join(folder, "snapshots", commit, filename)
  os.makedirs(os.path.dirname(link), exist_ok=True)
  os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
  return link


def final_norm(model) -> np.ndarray:
  """The final RMSNorm scale (the fixture's 'norm.weight')."""
  (leaf,) = jax.tree.leaves(checkpoint.model_params(model)["norm"])
  return np.asarray(leaf)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, fixtures):
  """An offline hub cache holding randar_tiny as the release 'randar-tiny' (converted with its fixture's JSON)."""
  from huggingface_hub import constants

  cache = str(tmp_path / "hub")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  weights = fixture_file(fixtures, "randar_tiny.safetensors")
  release = hub.Release(
    "randar-tiny", "randar", "test/randar-tiny", weights.name, params=0,
    config=str(fixture_file(fixtures, "randar_tiny_config.json")),
  )  # fmt: skip
  monkeypatch.setitem(hub.CATALOGUE, release.name, release)
  fake_hub(cache, release.repo, release.filename, weights)
  calls = []
  real = convert.convert_checkpoint
  monkeypatch.setattr(convert, "convert_checkpoint", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
  return cache, release, calls


def test_pull_converts_once_then_reuses_and_reconverts_a_changed_file(hub_cache, fixtures, capsys):
  cache, release, calls = hub_cache
  assert cli.main(["pull", release.name]) == 0
  first = capsys.readouterr().out.strip().split(": ", 1)[1]
  assert len(calls) == 1 and first.startswith(os.path.join(cache, "randar_jax", "randar-"))
  args = load_json(fixture_file(fixtures, "randar_tiny_config.json"))["constructor_args"]
  assert families.config_from_dict(checkpoint.read_config(first)) == families.get("randar").config.from_torch_args(args)

  model = randar_jax.load_pretrained(release.name)  # the same directory, no second conversion
  assert hub.pull(release.name) == first and len(calls) == 1
  from safetensors.numpy import load_file

  tensors = load_file(fixture_file(fixtures, release.filename))
  np.testing.assert_array_equal(final_norm(model), tensors["norm.weight"])

  changed = os.path.join(cache, "changed.safetensors")
  from safetensors.numpy import save_file

  save_file({**tensors, "norm.weight": tensors["norm.weight"] + 1}, changed)
  fake_hub(cache, release.repo, release.filename, changed, commit="1" * 40)
  second = hub.pull(release.name)
  assert len(calls) == 2 and second != first
  restored = randar_jax.load_pretrained(release.name)
  np.testing.assert_array_equal(final_norm(restored), tensors["norm.weight"] + 1)


def test_names_work_where_a_checkpoint_directory_does(hub_cache, capsys):
  _, release, calls = hub_cache
  assert cli.main(["info", release.name]) == 0
  assert '"family": "randar"' in capsys.readouterr().out and len(calls) == 1
  assert cli.main(["info", "randar-tiyn"]) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "did you mean randar-tiny" in err


def test_offline_without_the_file_is_one_clear_line(hub_cache, capsys, monkeypatch):
  _, release, calls = hub_cache
  missing = dataclasses.replace(release, name="randar-missing", repo="test/missing")
  monkeypatch.setitem(hub.CATALOGUE, missing.name, missing)
  assert cli.main(["pull", missing.name]) == 2
  err = capsys.readouterr().err.strip()
  assert err == (
    f"randar-jax pull: error: {missing.name}: {missing.filename} is not in the Hugging Face cache; "
    f"run `randar-jax pull {missing.name}` once with network access (HF_HUB_OFFLINE is set)"
  )
  assert not calls


def test_catalogue_is_consistent():
  """Each release names a registered family, a paired tokenizer that is a tokenizer release, and a convert config
  of that family; the list command shows every one."""
  for release in hub.RELEASES:
    spec = families.get(release.family)
    if release.tokenizer:
      assert families.get(hub.CATALOGUE[release.tokenizer].family).kind == "tokenizer", release.name
    if release.config:
      config = convert.config_from_spec(release.config)
      assert config.FAMILY == release.family and spec.kind == "generator", release.name
      if release.resolution:
        assert config.grid_size * 16 == release.resolution, release.name
    assert bool(release.url) != bool(release.repo), release.name
  assert len(hub.CATALOGUE) == len(hub.RELEASES)


@pytest.mark.parametrize("stem", TINY)
def test_convert_config_json_of_the_original_arguments(fixtures, stem, capsys):
  """convert --config STEM_config.json (the fixture's constructor arguments) fits the fixture's weights; an
  override that widens the model is refused in one line."""
  weights = fixture_file(fixtures, f"{stem}.safetensors")
  config_json = fixture_file(fixtures, f"{stem}_config.json")
  assert cli.main(["convert", str(weights), "--check", "--config", str(config_json)]) == 0
  assert "every key and shape fits" in capsys.readouterr().out
  path = WIDTH[stem]
  value = config_io.original_args(load_json(config_json))
  for part in path.split("."):
    value = value[part]
  assert cli.main(["convert", str(weights), "--check", "--config", f"{config_json}:{path}={2 * value}"]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
  assert err.startswith("randar-jax convert: error:"), err


WIDTH = {  # an architecture argument of each fixture, as the original constructor names it
  "randar_tiny": "dim",
  "rar_tiny": "model.generator.hidden_size",
  "llamagen_tiny": "dim",
  "vq_llamagen_tiny": "codebook_embed_dim",
  "vq_maskgit_tiny": "embedding_dim",
}
assert set(WIDTH) == set(TINY)


def test_convert_config_json_overrides_and_errors(fixtures, tmp_path):
  config_json = fixture_file(fixtures, "randar_tiny_config.json")
  n_layer = load_json(config_json)["constructor_args"]["n_layer"]
  doc = config_io.load_original(f"{config_json}:n_layer={n_layer + 1},norm_eps=1e-6")
  config = families.get("randar").config.from_original(doc)
  assert config.n_layer == n_layer + 1 and config.norm_eps == 1e-6
  with pytest.raises(ValueError, match="is not key=value"):
    config_io.load_original(f"{config_json}:n_layer")
  with pytest.raises(ValueError, match="no section 'model'"):
    config_io.load_original(f"{config_json}:model.dim=3")
  bad = tmp_path / "bad.json"
  bad.write_text("{")
  with pytest.raises(ValueError, match="is not valid JSON"):
    config_io.load_original(str(bad))
