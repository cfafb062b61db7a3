"""The strict converter and Orbax round trip: good weights convert, bad ones fail with an error naming the key."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from conftest import fixture_file, load_json
from randar_jax import checkpoint
from randar_jax.convert import ConversionError, convert_checkpoint, convert_params
from randar_jax.models.randar import RandARConfig


@pytest.fixture(scope="module")
def tiny(fixtures):
  args = load_json(fixture_file(fixtures, "randar_tiny_config.json"))["constructor_args"]
  return fixture_file(fixtures, "randar_tiny.safetensors"), RandARConfig.from_torch_args(args)


def _write(tmp_path, tensors, name="bad.safetensors"):
  path = tmp_path / name
  safetensors.numpy.save_file(tensors, str(path))
  return path


def test_round_trip_convert_save_restore_gives_identical_logits(tiny, randar_tiny, fixtures, tmp_path):
  path, config = tiny
  out = convert_checkpoint(path, tmp_path / "ckpt", config, progress=False)
  restored = checkpoint.load_model(out, family="randar")
  assert restored.config == config
  golden = np.load(fixture_file(fixtures, "randar_tiny_forward.npz"))
  args = jnp.asarray(golden["idx"]), jnp.asarray(golden["cond"]), jnp.asarray(golden["token_order"])
  np.testing.assert_array_equal(np.asarray(restored(*args)), np.asarray(randar_tiny[0](*args)))
  assert checkpoint.read_config(out)["family"] == "randar"


def test_every_source_key_is_used(tiny):
  path, config = tiny
  tensors = safetensors.numpy.load_file(str(path))
  params, _ = convert_params(path, config, progress=False)
  assert checkpoint.param_count(params) == sum(t.size for t in tensors.values())


def test_missing_key_is_named(tiny, tmp_path):
  path, config = tiny
  tensors = safetensors.numpy.load_file(str(path))
  key = f"layers.{config.n_layer - 1}.feed_forward.w3.weight"
  del tensors[key]
  with pytest.raises(ConversionError, match=rf"missing 1 key.*{re.escape(key)}"):
    convert_params(_write(tmp_path, tensors), config, progress=False)


def test_extra_key_is_named(tiny, tmp_path):
  path, config = tiny
  tensors = safetensors.numpy.load_file(str(path))
  tensors["layers.0.attention.bias"] = np.zeros(3, np.float32)
  with pytest.raises(ConversionError, match=r"unexpected key.*layers\.0\.attention\.bias"):
    convert_params(_write(tmp_path, tensors), config, progress=False)


def test_generation_kv_cache_buffers_are_ignored(tiny, tmp_path):
  path, config = tiny
  tensors = safetensors.numpy.load_file(str(path))
  tensors["layers.0.attention.kv_cache.k_cache"] = np.zeros(
    (2, config.n_head, config.num_tokens + 8, config.head_dim), np.float32
  )
  params, _ = convert_params(_write(tmp_path, tensors), config, progress=False)
  assert params is not None


def test_wrong_shape_names_key_and_both_shapes(tiny, tmp_path):
  path, config = tiny
  tensors = safetensors.numpy.load_file(str(path))
  good = tensors["layers.0.feed_forward.w2.weight"]
  tensors["layers.0.feed_forward.w2.weight"] = good[:, :-1].copy()
  bad_shape, kernel_shape = tensors["layers.0.feed_forward.w2.weight"].shape, good.shape[::-1]  # torch (out, in)
  with pytest.raises(
    ConversionError,
    match=rf"layers\.0\.feed_forward\.w2\.weight.*{re.escape(str(bad_shape))}"
    rf".*{re.escape(str(kernel_shape))}",
  ):
    convert_params(_write(tmp_path, tensors), config, progress=False)


def test_truncated_file_is_reported(tiny, tmp_path):
  path, config = tiny
  data = path.read_bytes()
  bad = tmp_path / "truncated.safetensors"
  bad.write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(ConversionError, match="truncated or corrupt"):
    convert_params(bad, config, progress=False)


def test_config_checkpoint_size_mismatch(tiny):
  path, config = tiny
  deeper = RandARConfig.from_dict({**config.to_dict(), "n_layer": config.n_layer + 1})
  with pytest.raises(ConversionError, match=rf"missing .*layers\.{config.n_layer}\..*does the config match"):
    convert_params(path, deeper, progress=False)
  wider = RandARConfig.from_dict({**config.to_dict(), "dim": config.dim * 2})
  with pytest.raises(ConversionError, match=r"does not match the model's"):
    convert_params(path, wider, progress=False)


def test_not_a_randar_file(tmp_path):
  bad = _write(tmp_path, {"encoder.conv_in.weight": np.zeros((4, 3, 3, 3), np.float32)})
  with pytest.raises(ConversionError, match="cannot tell which model"):
    convert_params(bad, progress=False)
  with pytest.raises(ConversionError, match="unsupported checkpoint format"):
    convert_params(tmp_path / "weights.ckpt", progress=False)


def test_unknown_size_requires_a_config(tiny):
  path, _ = tiny
  with pytest.raises(ConversionError, match="match no published RandAR size.*--config"):
    convert_params(path, progress=False)


def test_load_model_rejects_another_family(tiny, tmp_path):
  path, config = tiny
  out = convert_checkpoint(path, tmp_path / "ckpt", config, progress=False)
  with pytest.raises(ValueError, match="holds a 'randar' checkpoint, but a 'rar' model is expected"):
    checkpoint.load_model(out, family="rar")
  with pytest.raises(FileNotFoundError):
    checkpoint.load_model(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpoint.load_model(tmp_path / "empty")


def test_cli_convert_and_info(tiny, tmp_path, capsys):
  from randar_jax import cli

  path, config = tiny
  cfg_file = tmp_path / "tiny_config.py"
  cfg_file.write_text(
    "import ml_collections\n"
    "def get_config(arg=None):\n"
    f"  return ml_collections.ConfigDict({{'model': {json.dumps(config.to_dict())}}})\n".replace("null", "None")
    .replace("true", "True")
    .replace("false", "False")
  )
  assert cli.main(["convert", str(path), str(tmp_path / "out"), "--config", str(cfg_file)]) == 0
  assert cli.main(["info", str(tmp_path / "out")]) == 0
  assert '"family": "randar"' in capsys.readouterr().out
  assert cli.main(["convert", str(path), "--check"]) == 2  # size not published, no config -> clear error
  assert "pass --config" in capsys.readouterr().err
