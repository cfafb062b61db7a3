"""VQ tokenizers: parity with the PyTorch originals, safe torch-file reading, manifests, bad input, the CLI."""

import os
import pickle
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from PIL import Image

from conftest import ManifestSource, fixture_file, load_json
from conftest import tensor_pickle as _tensor_pickle
from conftest import torch_zip as _torch_zip
from randar_jax import checkpoint, families, sharding, tokenizers
from randar_jax.convert import ConversionError, convert_checkpoint, convert_params
from randar_jax.convert.core import convert, flatten
from randar_jax.convert.torch_pickle import TorchSource
from randar_jax.data.extract import BatchEncoder
from randar_jax.models.randar import RandARConfig
from randar_jax.tokenizers import preprocess
from randar_jax.tokenizers.vq_llamagen import LlamaGenVQConfig
from randar_jax.tokenizers.vq_maskgit import MaskGITVQConfig

# family -> fixture prefix, torch container, full-size manifest, fixture keys of the latents / decoder output,
# and the map from the fixture's model-range images to [0, 1]
CASES = {
  "vq_llamagen": dict(
    prefix="vq_llamagen_tiny",
    torch_file="vq_llamagen_tiny.pt",
    manifest="manifest_vq_llamagen_ds16.json",
    latents="pre_quant_latent",
    decoded="decoded_from_indices",
    to_unit=lambda x: (x + 1) / 2,
  ),
  "vq_maskgit": dict(
    prefix="vq_maskgit_tiny",
    torch_file="vq_maskgit_tiny.bin",
    manifest="manifest_vq_maskgit_f16.json",
    latents="encoder_out",
    decoded="decoder_out_unclamped",
    to_unit=lambda x: x,
  ),
}


RELEASED_PARAMETERS = {"vq_llamagen": 71_883_403, "vq_maskgit": 54_515_587}  # spec section 12


def config_of(family: str, meta: dict):
  """The typed config for a fixture's or manifest's description of the original model."""
  if family == "vq_llamagen":
    return LlamaGenVQConfig.from_torch_args(meta["constructor_args"], ch=meta["encoder_decoder_ch"])
  return MaskGITVQConfig.from_torch_args(meta["constructor_args"])


def nhwc(a: np.ndarray) -> jax.Array:
  return jnp.asarray(a.transpose(0, 2, 3, 1))


def close(actual, expected, atol=1e-4):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=1e-4)


@pytest.fixture(scope="module", params=sorted(CASES))
def tiny(request, fixtures):
  """(family, model, config, golden io) with weights converted from the fixture's .safetensors."""
  family, case = request.param, CASES[request.param]
  config = config_of(family, load_json(fixture_file(fixtures, f"{case['prefix']}_config.json")))
  params, _ = convert_params(fixture_file(fixtures, f"{case['prefix']}.safetensors"), config, progress=False)
  with sharding.model_context():
    graphdef, state = nnx.split(nnx.eval_shape(lambda: families.build(config)))
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  io = dict(np.load(fixture_file(fixtures, f"{case['prefix']}_io.npz")))
  return family, nnx.merge(graphdef, state), config, io


# ---- parity ------------------------------------------------------------------------------------------------------


def test_parity_with_the_original(tiny):
  family, model, config, io = tiny
  case = CASES[family]
  latents = nnx.jit(lambda m, x: m.latents(x))(model, nhwc(io["images"]))
  close(latents, nhwc(io[case["latents"]]))
  np.testing.assert_array_equal(np.asarray(model.quantize.nearest(latents)), io["indices_2d"])
  vectors = model.quantize.lookup(jnp.asarray(io["indices_2d"]))
  close(vectors, nhwc(io["quant_latent"]))
  decoded = nnx.jit(lambda m, z: m.decode_latents(z))(model, vectors)
  close(decoded, nhwc(io[case["decoded"]]))
  if family == "vq_llamagen":
    close(model.encoder(nhwc(io["images"])), nhwc(io["encoder_out"]))
  else:  # MaskGIT's decode() clamps to [0, 1]
    close(jnp.clip(decoded, 0, 1), nhwc(io["decoded_from_indices"]))
  images = np.asarray(model.decode(io["indices_2d"]))  # the public uint8 path
  assert images.dtype == np.uint8 and images.shape == io["decoded_uint8_nhwc"].shape
  assert np.abs(images.astype(int) - io["decoded_uint8_nhwc"].astype(int)).max() <= 1
  np.testing.assert_array_equal(np.asarray(model.decode(io["indices"])), images)  # raster (B, h * w) codes


def test_public_encode_takes_unit_range_images(tiny):
  family, model, config, io = tiny
  unit = CASES[family]["to_unit"](io["images"].transpose(0, 2, 3, 1))
  codes = model.encode(unit)
  assert codes.dtype == jnp.int32 and codes.shape == io["indices_2d"].shape
  np.testing.assert_array_equal(np.asarray(codes), io["indices_2d"])
  assert unit.shape[1] // codes.shape[1] == model.downsample == config.downsample
  images = np.asarray(model.decode(codes))
  # the code extraction jits tokenizer.encode itself (weights as arguments): same codes
  np.testing.assert_array_equal(BatchEncoder(model, len(images))(images), np.asarray(model.encode(images)))


# ---- conversion --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(CASES))
def test_torch_and_safetensors_containers_convert_identically(fixtures, family):
  case = CASES[family]
  config = config_of(family, load_json(fixture_file(fixtures, f"{case['prefix']}_config.json")))
  from_torch, inferred = convert_params(fixture_file(fixtures, case["torch_file"]), progress=False)
  from_st, _ = convert_params(fixture_file(fixtures, f"{case['prefix']}.safetensors"), config, progress=False)
  assert inferred == config and inferred.to_dict()["family"] == family
  a, b = flatten(from_torch), flatten(from_st)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  tensors = safetensors.numpy.load_file(str(fixture_file(fixtures, f"{case['prefix']}.safetensors")))
  used = sum(t.size for k, t in tensors.items() if k != "quantize.codebook_used")
  assert checkpoint.param_count(from_torch) == used  # every tensor but the usage buffer became a parameter


@pytest.mark.parametrize("family", sorted(CASES))
def test_manifest_maps_completely(fixtures, family):
  source = ManifestSource(fixture_file(fixtures, CASES[family]["manifest"]))
  config = config_of(family, source.manifest)
  family_converter = families.get(family).converter
  assert family_converter.detect(source.keys()) and family_converter.infer_config(source) == config
  assert config == families.get(family).config.released()
  abstract = checkpoint.abstract_params(config)
  assert checkpoint.param_count(abstract) == source.manifest["num_parameters"] == RELEASED_PARAMETERS[family]
  assert len(source.keys()) == source.manifest["num_state_dict_entries"]
  convert(
    source,
    family_converter.rules_for(abstract),
    abstract,
    ignore=family_converter.ignore,
    progress=False,
    check_only=True,
  )


def test_missing_tokenizer_key_is_named(fixtures, tmp_path):
  tensors = safetensors.numpy.load_file(str(fixture_file(fixtures, "vq_maskgit_tiny.safetensors")))
  config = config_of("vq_maskgit", load_json(fixture_file(fixtures, "vq_maskgit_tiny_config.json")))
  level = len(config.channel_mult) - 1  # the lowest resolution (has an upsample_conv)
  del tensors[f"decoder.up.{level}.upsample_conv.bias"]
  path = tmp_path / "bad.safetensors"
  safetensors.numpy.save_file(tensors, str(path))
  with pytest.raises(ConversionError, match=rf"missing 1 key.*decoder\.up\.{level}\.upsample_conv\.bias"):
    convert_params(path, config, progress=False)
  del tensors[f"encoder.down.{level}.block.0.conv2.weight"]  # the shape inference needs this one
  safetensors.numpy.save_file(tensors, str(path))
  with pytest.raises(
    ConversionError, match=rf"vq_maskgit checkpoint but has no tensor .*encoder\.down\.{level}\.block\.0"
  ):
    convert_params(path, progress=False)


# ---- the restricted torch reader ---------------------------------------------------------------------------------


def test_torch_reader_rebuilds_strided_views(tmp_path):
  storage = np.arange(6, dtype=np.float32)
  path = _torch_zip(
    tmp_path / "w.pt",
    _tensor_pickle({"t": ("0", 6, 0, (3, 2), (1, 3)), "s": ("0", 6, 2, (2,), (2,))}),
    {"0": storage.tobytes()},
  )
  source = TorchSource(path)
  assert source.keys() == ["t", "s"] and source.shape("t") == (3, 2) and source.dtype("t") == "float32"
  np.testing.assert_array_equal(source.get("t"), storage.reshape(2, 3).T)
  np.testing.assert_array_equal(source.get("s"), [2, 4])


@pytest.mark.parametrize("entry", [("0", 6, 4, (2, 2), (2, 1)), ("0", 60, 0, (6,), (1,)), ("0", 6, 0, (2,), (-1,))])
def test_torch_reader_refuses_tensors_outside_their_storage(tmp_path, entry):
  path = _torch_zip(tmp_path / "w.pt", _tensor_pickle({"t": entry}), {"0": np.zeros(6, np.float32).tobytes()})
  with pytest.raises(ConversionError, match="outside its storage|truncated|stride"):
    TorchSource(path).get("t")


class _RunsCommand:
  def __init__(self, fn, marker):
    self.fn, self.marker = fn, marker

  def __reduce__(self):
    if self.fn is subprocess.call:
      return subprocess.call, (["touch", str(self.marker)],)
    return self.fn, (f"touch {self.marker}",)


@pytest.mark.parametrize("fn", [os.system, subprocess.call, eval], ids=["os.system", "subprocess.call", "eval"])
def test_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, fn):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"model": {"encoder.conv_in.weight": _RunsCommand(fn, marker)}}, protocol=2)
  # sanity: the payload really runs the command when unpickled without restrictions (eval just builds a string)
  if fn is not eval:
    pickle.loads(payload)
    assert marker.exists()
    marker.unlink()
  zipped = _torch_zip(tmp_path / "evil.pt", payload)
  with pytest.raises(ConversionError, match=r"refusing to load.*(system|call|eval)"):
    convert_params(zipped, progress=False)
  bare = tmp_path / "evil.bin"
  bare.write_bytes(payload)  # a bare pickle, not a torch zip: never unpickled at all
  with pytest.raises(ConversionError, match="not a torch.save zip archive"):
    convert_params(bare, progress=False)
  assert not marker.exists()


def test_corrupt_torch_file_is_reported(fixtures, tmp_path):
  data = fixture_file(fixtures, "vq_maskgit_tiny.bin").read_bytes()
  bad = tmp_path / "truncated.bin"
  bad.write_bytes(data[: len(data) // 2])
  with pytest.raises(ConversionError, match="not a torch.save zip|truncated or corrupt"):
    convert_params(bad, progress=False)


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_bad_images_and_codes_fail_clearly(tiny):
  family, model, config, io = tiny
  f, vocab = model.downsample, model.vocab_size
  good = np.zeros((1, 2 * f, 2 * f, 3), np.uint8)
  with pytest.raises(ValueError, match=r"batch of images.*images\[None\]"):
    model.encode(good[0])
  with pytest.raises(ValueError, match="3-channel images in NHWC"):
    model.encode(good.transpose(0, 3, 1, 2))
  with pytest.raises(ValueError, match=rf"not divisible by the tokenizer's downsampling factor {f}"):
    model.encode(good[:, 1:])
  with pytest.raises(ValueError, match="uint8 images in"):
    model.encode(good.astype(np.int32))
  codes = io["indices_2d"].copy()
  codes[0, 0, 0] = vocab
  with pytest.raises(ValueError, match=rf"codes must lie in \[0, {vocab}\).*\[\d+, {vocab}\]"):
    model.decode(codes)
  with pytest.raises(ValueError, match="lie in"):
    model.decode(-io["indices_2d"] - 1)
  with pytest.raises(ValueError, match="square grid"):
    model.decode(io["indices"][:, :-1])
  with pytest.raises(ValueError, match="must be integers"):
    model.decode(io["indices_2d"].astype(np.float32))


def test_tokenizer_checkpoint_where_a_transformer_is_expected(fixtures, tmp_path, randar_tiny):
  tok_dir = convert_checkpoint(fixture_file(fixtures, "vq_llamagen_tiny.pt"), tmp_path / "tok", progress=False)
  with pytest.raises(ValueError, match="holds a 'vq_llamagen' checkpoint, but a 'randar' model is expected"):
    checkpoint.load_model(tok_dir, family="randar")
  with pytest.raises(ConversionError, match="is a vq_llamagen checkpoint but the config is for randar"):
    convert_params(fixture_file(fixtures, "vq_llamagen_tiny.pt"), RandARConfig.variant("tiny"), progress=False)
  model, config = randar_tiny
  randar_dir = checkpoint.save_params(tmp_path / "randar", checkpoint.model_params(model), config.to_dict())
  with pytest.raises(ValueError, match="holds a 'randar' checkpoint, not an image tokenizer"):
    tokenizers.load(randar_dir)


# ---- checkpoint and command line ---------------------------------------------------------------------------------


def test_convert_load_and_cli_round_trip(tiny, fixtures, tmp_path, capsys):
  from randar_jax import cli

  family, model, config, io = tiny
  ckpt = tmp_path / "ckpt"
  assert cli.main(["convert", str(fixture_file(fixtures, CASES[family]["torch_file"])), str(ckpt)]) == 0
  restored = tokenizers.load(ckpt)
  assert restored.config == config and checkpoint.read_config(ckpt)["family"] == family

  images = np.asarray(model.decode(io["indices_2d"]))
  images = np.concatenate([images, images[:1, ::-1]])  # 3 images, batch size 2: a padded last batch
  paths = [str(tmp_path / f"in{i}.png") for i in range(len(images))]
  for image, path in zip(images, paths):
    Image.fromarray(image).save(path)
  codes_file = tmp_path / "codes.npy"
  assert (
    cli.main(
      ["tokenize", *paths, "--tokenizer", str(ckpt), "--out", str(codes_file), "--crop", "none", "--batch-size", "2"]
    )
    == 0
  )
  codes = np.load(codes_file)
  in_twos = lambda fn, x: np.concatenate([np.asarray(fn(x[:2])), np.asarray(fn(x[1:]))[1:]])  # one shape: one compile
  np.testing.assert_array_equal(codes, in_twos(model.encode, images))
  assert (
    cli.main(
      ["detokenize", str(codes_file), "--tokenizer", str(ckpt), "--out", str(tmp_path / "png"), "--batch-size", "2"]
    )
    == 0
  )
  decoded = np.stack([np.asarray(Image.open(tmp_path / "png" / f"{i:05d}.png")) for i in range(len(codes))])
  np.testing.assert_array_equal(decoded, in_twos(model.decode, codes))
  capsys.readouterr()

  codes[0, 0, 0] = model.vocab_size
  np.save(codes_file, codes)
  assert cli.main(["detokenize", str(codes_file), "--tokenizer", str(ckpt), "--out", str(tmp_path / "x")]) == 2
  assert "codes must lie in" in capsys.readouterr().err
  photo = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
  Image.fromarray(photo).save(tmp_path / "photo.png")
  size = io["images"].shape[-1]  # the fixture's image size
  assert (
    cli.main(
      [
        "tokenize",
        str(tmp_path / "photo.png"),
        "--tokenizer",
        str(ckpt),
        "--out",
        str(codes_file),
        "--image-size",
        str(size),
      ]
    )
    == 0
  )  # default: ADM center crop
  cropped = preprocess.center_crop_arr(Image.fromarray(photo), size)
  np.testing.assert_array_equal(np.load(codes_file)[0], np.asarray(model.encode(np.stack([cropped] * 2)))[0])
  odd = tmp_path / "odd.png"
  Image.fromarray(images[0][1:]).save(odd)
  assert cli.main(["tokenize", str(odd), "--tokenizer", str(ckpt), "--out", str(codes_file), "--crop", "none"]) == 2
  assert "not divisible by the tokenizer's downsampling factor" in capsys.readouterr().err


def test_crop_modes_of_the_tokenize_command():
  photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8))
  np.testing.assert_array_equal(preprocess.crop_image(photo, 16, "adm"), preprocess.center_crop_arr(photo, 16))
  np.testing.assert_array_equal(
    preprocess.crop_image(photo, 16, "resize"), np.asarray(photo.resize((16, 16), resample=Image.BICUBIC))
  )
  np.testing.assert_array_equal(preprocess.crop_image(photo, 16, "none"), np.asarray(photo))
  with pytest.raises(ValueError, match="unknown crop mode"):
    preprocess.crop_image(photo, 16, "zoom")


@pytest.mark.parametrize(
  "first",
  ["randar_jax.tokenizers.vq_maskgit", "randar_jax.eval.inception", "randar_jax.convert", "randar_jax.tokenizers"],
)
def test_tokenizer_modules_import_first_without_a_cycle(first):
  import sys

  code = f"import {first}, randar_jax.families as f; assert f.get('vq_maskgit').model.__name__ == 'VQMaskGIT'"
  subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
