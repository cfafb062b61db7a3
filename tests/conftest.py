"""Test set-up: 8 fake CPU devices for sharded paths, highest matmul precision, and the golden fixtures.

The golden fixtures ship in tests/golden (see its ORIGIN.md); $RANDAR_FIXTURES points the tests elsewhere. Tests that
need them skip with a clear reason only when the chosen folder does not exist.
"""

import os
import pathlib
import struct
import zipfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["HF_HUB_OFFLINE"] = "1"  # tests never download (released names resolve from a fake hub cache)

import jax  # noqa: E402  (after XLA_FLAGS)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

REPO = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"


def fixtures_dir() -> pathlib.Path | None:
  env = os.environ.get("RANDAR_FIXTURES")
  path = pathlib.Path(env) if env else GOLDEN
  return path if path.is_dir() else None


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
  path = fixtures_dir()
  if path is None:
    pytest.skip(f"golden fixtures not found: {os.environ.get('RANDAR_FIXTURES') or GOLDEN} is not a directory")
  return path


def fixture_file(fixtures: pathlib.Path, name: str) -> pathlib.Path:
  path = fixtures / name
  if not path.exists():
    pytest.skip(f"fixture {name} not in {fixtures}")
  return path


def load_json(path: pathlib.Path) -> dict:
  import json

  return json.loads(path.read_text())


def float32_atol(*arrays, ulps: float = 8) -> float:
  """An absolute tolerance between two float32 computations of the same values: ``ulps`` float32 spacings at the
  largest magnitude in ``arrays``. Rounding noise grows with the values, so a fixed atol would depend on the data."""
  scale = max(float(np.max(np.abs(np.asarray(a, np.float64)), initial=0.0)) for a in arrays)
  return ulps * float(np.finfo(np.float32).eps) * scale


class ManifestSource:
  """A TensorSource over a full-size manifest: real key names and shapes, zero tensors made one at a time."""

  def __init__(self, path):
    self.path = str(path)
    self.manifest = load_json(path)
    self._shapes = {k: tuple(s) for k, s, _ in self.manifest["state_dict"]}
    self._dtypes = {k: d.replace("torch.", "") for k, _, d in self.manifest["state_dict"]}

  def keys(self):
    return list(self._shapes)

  def shape(self, key):
    return self._shapes[key]

  def dtype(self, key):
    return self._dtypes[key]

  def get(self, key):
    return np.zeros(self._shapes[key], np.float32)


def torch_zip(path, data_pkl: bytes, storages: dict[str, bytes] = {}):  # noqa: B006 - read only
  """A torch.save zip archive from a data.pkl and raw storages (no torch needed)."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", data_pkl)
    z.writestr("archive/byteorder", "little")
    for key, data in storages.items():
      z.writestr(f"archive/data/{key}", data)
  return path


def _unicode(s: str) -> bytes:
  return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _ints(values) -> bytes:
  return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def tensor_pickle(entries: dict[str, tuple[str, int, int, tuple, tuple]]) -> bytes:
  """A protocol-2 pickle of {name: FloatStorage tensor (storage key, numel, offset, size, stride)}, written
  opcode by opcode as torch.save lays it out (no torch needed)."""
  out = b"\x80\x02}("
  for name, (key, numel, offset, size, stride) in entries.items():
    record = (
      b"("
      + _unicode("storage")
      + b"ctorch\nFloatStorage\n"
      + _unicode(key)
      + _unicode("cpu")
      + b"J"
      + struct.pack("<i", numel)
      + b"tQ"
    )
    out += (
      _unicode(name)
      + b"ctorch._utils\n_rebuild_tensor_v2\n("
      + record
      + b"J"
      + struct.pack("<i", offset)
      + _ints(size)
      + _ints(stride)
      + b"\x89ccollections\nOrderedDict\n)Rt"
      + b"R"
    )
  return out + b"u."


def torch_save(path, tensors) -> pathlib.Path:
  """What ``torch.save(state_dict, path)`` writes for float32 tensors (one contiguous storage each)."""
  entries, storages = {}, {}
  for i, (name, tensor) in enumerate(tensors.items()):
    tensor = np.ascontiguousarray(tensor, np.float32)
    entries[name] = (str(i), tensor.size, 0, tensor.shape, tuple(s // 4 for s in tensor.strides))
    storages[str(i)] = tensor.tobytes()
  return torch_zip(path, tensor_pickle(entries), storages)


def _restore(config, params):
  """A model for ``config`` holding converted ``params`` (nested dict of NumPy arrays)."""
  from randar_jax import checkpoint

  return checkpoint.model_with_params(config, params)


@pytest.fixture(scope="session")
def rar_tiny(fixtures):
  """(model, config) for rar_tiny.safetensors, converted by the real converter with the fixture's config."""
  from randar_jax.convert import convert_params
  from randar_jax.models.rar import RARConfig

  config = RARConfig.from_original(load_json(fixture_file(fixtures, "rar_tiny_config.json"))["config"])
  params, config = convert_params(fixture_file(fixtures, "rar_tiny.safetensors"), config, progress=False)
  return _restore(config, params), config


def randar_model(fixtures, name: str = "randar_tiny"):
  """(model, config) for the fixture model ``name`` (``name.safetensors`` with ``name_config.json``), converted by
  the real converter with the fixture's config."""
  from randar_jax.convert import convert_params
  from randar_jax.models.randar import RandARConfig

  args = load_json(fixture_file(fixtures, f"{name}_config.json"))["constructor_args"]
  params, config = convert_params(
    fixture_file(fixtures, f"{name}.safetensors"), RandARConfig.from_torch_args(args), progress=False
  )
  return _restore(config, params), config


@pytest.fixture(scope="session")
def randar_tiny(fixtures):
  """(model, config) for randar_tiny.safetensors, converted by the real converter with the fixture's config."""
  return randar_model(fixtures, "randar_tiny")


@pytest.fixture(scope="session")
def llamagen_tiny(fixtures):
  """(model, config) for llamagen_tiny.safetensors, converted by the real converter with the fixture's config."""
  from randar_jax.convert import convert_params
  from randar_jax.models.llamagen import LlamaGenConfig

  args = load_json(fixture_file(fixtures, "llamagen_tiny_config.json"))["constructor_args"]
  params, config = convert_params(
    fixture_file(fixtures, "llamagen_tiny.safetensors"), LlamaGenConfig.from_torch_args(args), progress=False
  )
  return _restore(config, params), config
