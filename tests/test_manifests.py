"""The released full-size checkpoints' key manifests map exactly onto our parameter trees (no memory needed)."""

import pytest

from conftest import ManifestSource, fixture_file
from randar_jax import checkpoint
from randar_jax.config_io import load_config
from randar_jax.convert import convert_params
from randar_jax.convert import randar as randar_convert
from randar_jax.convert.core import convert
from randar_jax.models.randar import RandARConfig

# manifest file -> the configs/randar.py arguments that must describe the same architecture
MANIFESTS = {
    "manifest_randar_l.json": "variant=L,tokenizer=llamagen",
    "manifest_randar_xl.json": "variant=XL,tokenizer=llamagen",
    "manifest_randar_l_maskgit.json": "variant=L,tokenizer=maskgit",
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_maps_completely(fixtures, name):
  source = ManifestSource(fixture_file(fixtures, name))
  config = RandARConfig.from_torch_args(source.manifest["constructor_args"])
  ours = RandARConfig.from_dict(load_config(f"configs/randar.py:{MANIFESTS[name]}").model.to_dict())
  assert ours == config, "configs/randar.py must describe the released architecture"
  assert randar_convert.infer_config(source) == config
  abstract = checkpoint.abstract_params(config)
  assert checkpoint.param_count(abstract) == source.manifest["num_parameters"]
  # every key used once, every leaf filled, every shape checked (zero tensors, nothing kept)
  convert(source, randar_convert.RULES, abstract, ignore=randar_convert.IGNORE, progress=False, check_only=True)


def test_published_parameter_counts():
  expected = {("L", "llamagen"): 342_912_000, ("XL", "llamagen"): 774_700_800, ("L", "maskgit"): 311_454_720,
              ("XXL", "llamagen"): 1_410_974_208}
  for (variant, tokenizer), count in expected.items():
    config = RandARConfig.variant(variant, tokenizer)
    assert checkpoint.param_count(checkpoint.abstract_params(config)) == count, (variant, tokenizer)
