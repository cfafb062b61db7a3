"""The FID Inception: parity with pytorch-fid 0.3.0 on random weights (golden outputs in tests/data, made once by
tools/make_inception_golden.py; the weights are redrawn here from the manifest and seed), preprocessing, the strict
converter (full-size key list of the real state dict), and the legacy torch.save reader the released file needs."""

import functools
import json
import pathlib

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import ManifestSource
from randar_jax import checkpoint
from randar_jax.convert import ConversionError, convert_params, core, detect_family, inception_fid
from randar_jax.convert.torch_pickle import TorchSource
from randar_jax.eval import extractors, inception

DATA = pathlib.Path(__file__).parent / "data"
MANIFEST = DATA / "inception_fid_manifest.json"


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(DATA / "inception_fid_golden.npz"))


@pytest.fixture(scope="module")
def weights(golden):
  entries = [(k, s) for k, s, _ in json.loads(MANIFEST.read_text())["state_dict"]]
  return inception.random_state_dict(entries, int(golden["seed"]))


@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory):
  path = tmp_path_factory.mktemp("inception") / "inception_random.safetensors"
  save_file(weights, str(path))
  return path


@pytest.fixture(scope="module")
def net(weights_file):
  return extractors.load(str(weights_file))  # what `--inception FILE` runs: strict conversion in memory


class DictSource:
  """An in-memory TensorSource."""

  path = "<state dict>"

  def __init__(self, tensors):
    self.tensors = tensors

  def keys(self):
    return list(self.tensors)

  def shape(self, key):
    return tuple(self.tensors[key].shape)

  def dtype(self, key):
    return str(self.tensors[key].dtype)

  def get(self, key):
    return self.tensors[key]


@functools.cache
def _abstract():
  return checkpoint.abstract_params(inception.InceptionConfig())


def _convert(tensors):
  abstract = _abstract()
  return core.convert(
    DictSource(tensors),
    inception_fid.rules(abstract),
    abstract,
    ignore=inception_fid.IGNORE,
    progress=False,
    check_only=True,
  )


# ---- parity ----------------------------------------------------------------------------------------------------


def test_features_and_logits_match_pytorch_fid(net, golden):
  feats = np.asarray(net.features(golden["images"]))  # (2, 192, 160, 3) uint8: resized up to 299x299 inside
  assert feats.shape == golden["features"].shape == (len(golden["images"]), 2048)
  scale = np.abs(golden["features"]).max()
  np.testing.assert_allclose(feats, golden["features"], rtol=0, atol=1e-5 * scale)  # measured 6e-7 * scale
  np.testing.assert_allclose(np.asarray(net.logits(feats)), golden["logits"], rtol=0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(net.model.logits(feats, bias=True)), golden["logits_bias"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("key, target", [("images", "resized"), ("large", "resized_large")])
def test_resize_matches_torch_bilinear(golden, key, target):
  x = golden[key].astype(np.float32) / 255.0
  stride = int(golden["stride"])
  out = np.asarray(inception.resize_bilinear(x, inception.SIZE))
  assert out.shape == (len(x), 299, 299, 3)
  np.testing.assert_allclose(out[:, ::stride, ::stride], golden[target], rtol=0, atol=1e-6)


# ---- preprocessing ---------------------------------------------------------------------------------------------


def tf1_resize_reference(x, size):
  """TF1 ResizeBilinear(align_corners=False, half_pixel_centers=False), written out pixel by pixel."""
  n, h, w, c = x.shape
  out = np.zeros((n, size, size, c), np.float64)
  for i in range(size):
    sy = i * h / size
    y0, y1, fy = int(np.floor(sy)), min(int(np.floor(sy)) + 1, h - 1), sy - np.floor(sy)
    for j in range(size):
      sx = j * w / size
      x0, x1, fx = int(np.floor(sx)), min(int(np.floor(sx)) + 1, w - 1), sx - np.floor(sx)
      top = x[:, y0, x0] + (x[:, y0, x1] - x[:, y0, x0]) * fx
      bottom = x[:, y1, x0] + (x[:, y1, x1] - x[:, y1, x0]) * fx
      out[:, i, j] = top + (bottom - top) * fy
  return out


@pytest.mark.parametrize("shape, size", [((2, 7, 9, 3), 13), ((1, 40, 31, 3), 17)])
def test_tf1_resize_matches_reference(shape, size):
  x = np.random.default_rng(size).uniform(0, 255, shape).astype(np.float32)
  np.testing.assert_allclose(
    np.asarray(inception.resize_bilinear_tf1(x, size)), tf1_resize_reference(x, size), rtol=0, atol=1e-3
  )  # float32 arithmetic on values up to 255


def test_preprocess_ranges_and_layouts():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
  images[0, 0, 0], images[0, 0, 1] = 0, 255
  x = np.asarray(inception.preprocess(images, "pytorch_fid"))  # 299 already: no resampling
  np.testing.assert_allclose(x, images / 127.5 - 1, atol=1e-6)
  assert x[0, 0, 0].tolist() == [-1.0] * 3 and x[0, 0, 1].tolist() == [1.0] * 3
  np.testing.assert_allclose(np.asarray(inception.preprocess(images, "tf1")), (images - 128.0) / 128.0, atol=1e-6)
  grey = rng.integers(0, 256, (1, 64, 48, 1), dtype=np.uint8)
  for mode in inception.PREPROCESSING:
    y = np.asarray(inception.preprocess(grey, mode))
    assert y.shape == (1, 299, 299, 3) and y.min() >= -1.0 and y.max() <= 1.0
    np.testing.assert_array_equal(y[..., 0], y[..., 2])  # grey repeated to RGB
  with pytest.raises(ValueError, match="unknown Inception preprocessing"):
    inception.preprocess(images, "bicubic")
  with pytest.raises(ValueError, match="uint8"):
    inception.check_images(images.astype(np.float32))
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    inception.check_images(images[0])


# ---- conversion --------------------------------------------------------------------------------------------------


def test_full_size_state_dict_maps_key_for_key():
  source = ManifestSource(MANIFEST)  # pytorch-fid's real key list and shapes (num_batches_tracked included)
  family = detect_family(source)
  config = family.converter.infer_config(source)
  assert family.name == "inception_fid" and config == inception.InceptionConfig()
  abstract = checkpoint.abstract_params(config)
  assert (
    core.convert(
      source,
      family.converter.rules_for(abstract),
      abstract,
      ignore=family.converter.ignore,
      progress=False,
      check_only=True,
    )
    is None
  )
  floats = sum(int(np.prod(s)) for k, s, _ in source.manifest["state_dict"] if not k.endswith("num_batches_tracked"))
  assert checkpoint.param_count(abstract) == floats == 23_885_392


def test_conversion_is_strict(weights):
  _convert(weights)  # the full set converts (no num_batches_tracked: older files)
  missing = {k: v for k, v in weights.items() if k != "Mixed_6c.branch7x7dbl_3.bn.running_var"}
  with pytest.raises(ConversionError, match=r"missing 1 key.*Mixed_6c\.branch7x7dbl_3\.bn\.running_var"):
    _convert(missing)
  aux = {**weights, "AuxLogits.fc.weight": np.zeros((1000, 768), np.float32)}  # torchvision's ImageNet network
  with pytest.raises(ConversionError, match=r"unexpected key.*AuxLogits\.fc\.weight"):
    _convert(aux)
  bad = {**weights, "Mixed_7b.branch3x3_2a.conv.weight": np.zeros((384, 384, 3, 1), np.float32)}  # 3x1 for 1x3
  with pytest.raises(
    ConversionError,
    match=r"Mixed_7b\.branch3x3_2a\.conv\.weight.*\(3, 1, 384, 384\).*"
    r"\(1, 3, 384, 384\)",
  ):
    _convert(bad)


def test_converted_checkpoint_round_trip(weights_file, weights, tmp_path, net):
  out = tmp_path / "inception"
  params, config = convert_params(weights_file, progress=False)  # what `randar-jax convert FILE DIR` runs
  checkpoint.save_params(out, params, config.to_dict())
  loaded = extractors.load(f"inception:{out}", preprocessing="tf1")
  assert loaded.name == "inception_fid/tf1" and net.name == "inception_fid/pytorch_fid"
  for a, b in zip(jax.tree.leaves(checkpoint.model_params(loaded.model)), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  np.testing.assert_array_equal(
    params["Conv2d_1a_3x3"]["conv"]["kernel"], weights["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(params["fc"]["kernel"], weights["fc.weight"].T)


def test_missing_weights_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
    extractors.load(str(tmp_path / "nowhere.pth"))
  with pytest.raises(ValueError, match="unknown feature extractor 'digits'"):
    extractors.load("digits:x")


# ---- the legacy torch.save reader (pytorch-fid's weights file predates the zip format) ---------------------------


def test_legacy_torch_file_is_read_without_torch():
  source = TorchSource(DATA / "torch_legacy.pth")  # torch.save(..., _use_new_zipfile_serialization=False)
  assert source.keys() == ["conv.weight", "bn.running_var", "steps", "view"]
  np.testing.assert_array_equal(source.get("conv.weight"), np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
  assert source.dtype("bn.running_var") == "float64" and source.get("bn.running_var").tolist() == [0.5, 2.0]
  assert source.shape("steps") == () and int(source.get("steps")) == 7
  np.testing.assert_array_equal(source.get("view"), np.arange(12, dtype=np.float16).reshape(3, 4)[:, 1:3])


def test_truncated_legacy_file_is_reported(tmp_path):
  data = (DATA / "torch_legacy.pth").read_bytes()
  for cut, name in ((len(data) - 20, "short.pth"), (len(data) // 3, "half.pth")):
    path = tmp_path / name
    path.write_bytes(data[:cut])
    with pytest.raises(ConversionError, match="truncated|corrupt"):
      TorchSource(path)
