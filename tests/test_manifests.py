"""The released full-size checkpoints' key manifests map exactly onto our parameter trees (no memory needed)."""

import pytest

from conftest import ManifestSource, fixture_file
from randar_jax import checkpoint
from randar_jax.config_io import load_config
from randar_jax.convert import randar as randar_convert
from randar_jax.convert import rar as rar_convert
from randar_jax.convert.core import convert
from randar_jax.decode import rar as rar_decode
from randar_jax.models.randar import RandARConfig
from randar_jax.models.rar import RARConfig

# manifest file -> the randar recipe arguments that must describe the same architecture
MANIFESTS = {
  "manifest_randar_l.json": "variant=L,tokenizer=llamagen",
  "manifest_randar_xl.json": "variant=XL,tokenizer=llamagen",
  "manifest_randar_l_maskgit.json": "variant=L,tokenizer=maskgit",
}
RAR_MANIFESTS = {
  "manifest_rar_b.json": "B",
  "manifest_rar_l.json": "L",
  "manifest_rar_xl.json": "XL",
  "manifest_rar_xxl.json": "XXL",
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_manifest_maps_completely(fixtures, name):
  source = ManifestSource(fixture_file(fixtures, name))
  config = RandARConfig.from_torch_args(source.manifest["constructor_args"])
  ours = RandARConfig.from_dict(load_config(f"randar:{MANIFESTS[name]}").model.to_dict())
  assert ours == config, "the randar recipe must describe the released architecture"
  assert randar_convert.infer_config(source) == config
  abstract = checkpoint.abstract_params(config)
  assert checkpoint.param_count(abstract) == source.manifest["num_parameters"]
  # every key used once, every leaf filled, every shape checked (zero tensors, nothing kept)
  convert(source, randar_convert.RULES, abstract, ignore=randar_convert.IGNORE, progress=False, check_only=True)


def test_published_parameter_counts():
  expected = {
    ("L", "llamagen"): 342_912_000,
    ("XL", "llamagen"): 774_700_800,
    ("L", "maskgit"): 311_454_720,
    ("XXL", "llamagen"): 1_410_974_208,
  }
  for (variant, tokenizer), count in expected.items():
    config = RandARConfig.variant(variant, tokenizer)
    assert checkpoint.param_count(checkpoint.abstract_params(config)) == count, (variant, tokenizer)


@pytest.mark.parametrize("name", sorted(RAR_MANIFESTS))
def test_rar_manifest_maps_completely(fixtures, name):
  source = ManifestSource(fixture_file(fixtures, name))
  config = RARConfig.from_original(source.manifest["config"])
  recipe = load_config(f"rar:variant={RAR_MANIFESTS[name]}")
  assert RARConfig.from_dict(recipe.model.to_dict()) == config, "the rar recipe must describe the released model"
  assert config.variant_name == RAR_MANIFESTS[name]
  assert rar_convert.infer_config(source) == config
  abstract = checkpoint.abstract_params(config)
  assert checkpoint.param_count(abstract) == source.manifest["num_parameters"]
  assert len(source.keys()) == source.manifest["num_state_dict_entries"] == 18 * config.n_layer + 9
  convert(source, rar_convert.RULES, abstract, ignore=rar_convert.IGNORE, progress=False, check_only=True)
  generator = source.manifest["config"]["model"]["generator"]
  assert tuple(recipe.data.order.anneal) == (generator["randomness_anneal_start"], generator["randomness_anneal_end"])


def test_rar_published_parameter_counts_and_sampling_defaults(fixtures):
  expected = {"B": 260_923_648, "L": 461_668_352, "XL": 955_425_024, "XXL": 1_498_520_704}
  for variant, count in expected.items():
    assert checkpoint.param_count(checkpoint.abstract_params(RARConfig.variant(variant))) == count, variant
  # rar.yaml (the RAR-B recipe) carries RAR-B's sampling settings
  generator = ManifestSource(fixture_file(fixtures, "manifest_rar_b.json")).manifest["config"]["model"]["generator"]
  settings = rar_decode.default_settings(RARConfig.variant("B"))
  sampling, guidance = settings.sampling, settings.guidance
  assert (sampling.temperature, guidance.end, guidance.power) == (
    generator["randomize_temperature"],
    generator["guidance_scale"],
    generator["guidance_scale_pow"],
  )
