"""LlamaGen's class-conditional GPT: parity with the PyTorch original (llamagen_tiny_* fixtures, random weights),
cached decoding vs teacher forcing (GQA included, quirk L7 fixed), the released manifests, converter strictness
and containers, a short training run, and the sample CLI.

Every size, case name, case count and setting is read from the fixture files (README section I); the weights go
through the real converter (conftest.llamagen_tiny).
"""

import argparse
import dataclasses
import pickle
import re
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from conftest import (
  ManifestSource,
  _restore,
  _unicode,
  fixture_file,
  fixtures_dir,
  load_json,
  tensor_pickle,
  torch_save,
  torch_zip,
)
from randar_jax import checkpoint, sharding
from randar_jax.config_io import load_config
from randar_jax.convert import ConversionError, convert_checkpoint, convert_params, detect_family
from randar_jax.convert import llamagen as llamagen_convert
from randar_jax.convert.core import convert
from randar_jax.convert.sources import open_source
from randar_jax.decode import llamagen as llamagen_decode
from randar_jax.decode.llamagen import generate
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models import rope
from randar_jax.models.llamagen import LlamaGenConfig, forward_flops
from randar_jax.utils.compiles import compile_events

FORWARD_TOL = dict(atol=1e-4, rtol=1e-4)  # README "Recommended tolerances"
STEP_TOL = dict(atol=2e-4, rtol=1e-4)
LOSS_TOL = dict(atol=1e-5, rtol=0)
ROPE_TOL = dict(atol=1e-6, rtol=0)

_DIR = fixtures_dir()
MANIFESTS = sorted(p.name for p in _DIR.glob("manifest_llamagen_c2i_*.json")) if _DIR else []


@pytest.fixture(scope="module")
def golden(fixtures):
  return dict(np.load(fixture_file(fixtures, "llamagen_tiny_forward.npz")))


@pytest.fixture(scope="module")
def cases(fixtures):
  data = np.load(fixture_file(fixtures, "llamagen_tiny_generate.npz"))
  names = sorted({k.split("/")[0] for k in data})
  return {c: {k.split("/", 1)[1]: data[k] for k in data if k.startswith(c + "/")} for c in names}


@pytest.fixture(scope="module")
def stats(fixtures):
  return load_json(fixture_file(fixtures, "llamagen_fixtures_stats.json"))["llamagen_tiny"]


def _with_config(model, config):
  """A copy of ``model`` (same weights) whose config differs only in training settings."""
  copy = nnx.merge(*nnx.split(model))
  copy.config = config
  return copy


def _random_model(config, seed=0):
  """A model with random N(0, 0.1^2) weights (norm scales 1 + N(0, 0.1^2)), built without compiling an init."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
    lambda path, a: np.float32(path[-1].key == "scale") + rng.normal(0, 0.1, a.shape).astype(np.float32),
    checkpoint.abstract_params(config),
  )
  return _restore(config, params)


@nnx.jit
def _teacher(model, tokens, labels, order):
  """The teacher-forced forward, compiled once per shape (an eager call re-traces its layer scan every time)."""
  return model(tokens, labels, order)


def _raster(tokens):
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


@pytest.fixture(scope="module")
def forward(llamagen_tiny, golden):
  model, _ = llamagen_tiny
  tokens = jnp.asarray(golden["tokens"])
  logits, hidden = model(tokens, jnp.asarray(golden["cond_idx"]), _raster(tokens), return_hidden=True)
  return np.asarray(logits), np.asarray(hidden)


# ---- config and forward parity ----------------------------------------------------------------------------------


def test_config_and_derived_sizes_match_the_fixture(fixtures, llamagen_tiny, stats):
  _, config = llamagen_tiny
  meta = load_json(fixture_file(fixtures, "llamagen_tiny_config.json"))
  derived, args = meta["derived"], meta["constructor_args"]
  assert (
    config.head_dim,
    config.kv_heads,
    config.ffn_hidden,
    config.grid_size,
    config.class_rows,
    config.null_class,
  ) == (
    derived["head_dim"],
    derived["n_kv_head_effective"],
    derived["ffn_hidden_dim"],
    derived["grid_size"],
    derived["cls_embedding_rows"],
    derived["null_class_id"],
  )
  assert (config.n_head + 2 * config.kv_heads) * config.head_dim == derived["wqkv_rows"]
  assert config == LlamaGenConfig.variant(
    "tiny",
    vocab_size=args["vocab_size"],
    grid_size=derived["grid_size"],
    num_classes=args["num_classes"],
    multiple_of=args["multiple_of"],
    token_dropout=0.0,
    resid_dropout=0.0,
    ffn_dropout=0.0,
  )
  params = checkpoint.abstract_params(config)
  assert checkpoint.param_count(params) == stats["num_parameters"]


def test_rope_table_matches_freqs_cis(llamagen_tiny, golden, fixtures):
  model, _ = llamagen_tiny
  derived = load_json(fixture_file(fixtures, "llamagen_tiny_config.json"))["derived"]
  table = rope.with_class_rows(model.rope_table())
  assert list(table.shape) == derived["freqs_cis_shape"] == list(golden["freqs_cis"].shape)
  assert table.shape[1] // 2 == derived["rope_frequencies_per_axis"]
  np.testing.assert_allclose(table, golden["freqs_cis"], **ROPE_TOL)
  assert not table[0].any(), "the class token's RoPE row must be all zeros"


def test_input_sequence_and_rope_cells(llamagen_tiny, golden):
  model, _ = llamagen_tiny
  tokens = jnp.asarray(golden["tokens"])
  np.testing.assert_array_equal(golden["idx"], golden["tokens"][:, :-1])
  x, cells = model.training_sequence(tokens, jnp.asarray(golden["cond_idx"]), _raster(tokens))
  assert x.shape == golden["input_sequence"].shape
  np.testing.assert_allclose(x, golden["input_sequence"], atol=1e-6)
  # slot 0 is the class token (zero row), slot p+1 holds x_p rotated by its own cell p: freqs_cis[0:N]
  n = tokens.shape[1]
  np.testing.assert_allclose(rope.gather_rows(model.rope_table(), cells)[0], golden["freqs_cis"][:n], **ROPE_TOL)


def test_logits_and_hidden_states_match_the_original(llamagen_tiny, forward, golden):
  model, config = llamagen_tiny
  logits, hidden = forward
  assert logits.shape == golden["logits"].shape
  np.testing.assert_allclose(logits, golden["logits"], **FORWARD_TOL)
  layer_keys = sorted((k for k in golden if k.startswith("hidden_after_layer")), key=lambda k: int(k[18:]))
  assert len(layer_keys) == config.n_layer == hidden.shape[0]
  for i, key in enumerate(layer_keys):
    np.testing.assert_allclose(hidden[i], golden[key], **FORWARD_TOL, err_msg=key)
  np.testing.assert_allclose(model.norm(jnp.asarray(hidden[-1])), golden["hidden_after_final_norm"], **FORWARD_TOL)


def test_loss_and_valid_weighted_loss_match_the_original(llamagen_tiny, golden):
  model, _ = llamagen_tiny
  tokens, labels = jnp.asarray(golden["tokens"]), jnp.asarray(golden["cond_idx"])
  np.testing.assert_array_equal(golden["targets"], golden["tokens"])
  loss, _ = model.loss(tokens, labels, _raster(tokens))
  np.testing.assert_allclose(float(loss), float(golden["loss"]), **LOSS_TOL)
  weighted = model.weighted_loss(tokens, labels, _raster(tokens), jnp.asarray(golden["valid"]))
  np.testing.assert_allclose(float(weighted), float(golden["loss_valid"]), **LOSS_TOL)


def test_last_token_is_never_an_input(llamagen_tiny, golden, forward):
  model, config = llamagen_tiny
  tokens = np.array(golden["tokens"])
  tokens[:, -1] = (tokens[:, -1] + 1) % config.vocab_size
  logits = model(jnp.asarray(tokens), jnp.asarray(golden["cond_idx"]), _raster(tokens))
  np.testing.assert_array_equal(np.asarray(logits), forward[0])


def test_training_dropouts_hit_the_class_token_and_drop_labels(llamagen_tiny):
  """Token dropout follows the concatenation (L3); label dropout maps labels to the null row."""
  cfg = dataclasses.replace(llamagen_tiny[1], token_dropout=0.5)
  model, dropped = (
    _with_config(llamagen_tiny[0], cfg),
    _with_config(llamagen_tiny[0], dataclasses.replace(cfg, class_dropout_prob=0.999, token_dropout=0.0)),
  )
  labels = jnp.arange(64) % cfg.num_classes
  tokens = jnp.zeros((64, cfg.num_tokens), jnp.int32)
  x, _ = model.training_sequence(tokens, labels, _raster(tokens), dropout_rng=jax.random.key(1))
  zeroed = float(jnp.mean(x[:, 0] == 0))
  assert 0.4 < zeroed < 0.6, f"token dropout 0.5 should zero about half of the class slots, zeroed {zeroed}"
  rows = dropped.class_embeddings(labels, jax.random.key(2))
  assert float(jnp.mean(jnp.all(rows == dropped.cls_embedding[...][cfg.num_classes], axis=-1))) > 0.95


def test_weight_decay_is_ndim_at_least_two(llamagen_tiny):
  model, _ = llamagen_tiny
  mask = {
    "/".join(str(k.key) for k in path): v
    for path, v in jax.tree_util.tree_flatten_with_path(model.weight_decay_mask())[0]
  }
  assert sorted(k for k, v in mask.items() if not v) == [
    "layers/attention_norm/scale",
    "layers/ffn_norm/scale",
    "norm/scale",
  ]


def test_from_torch_args_refuses_unsupported_settings(fixtures):
  args = load_json(fixture_file(fixtures, "llamagen_tiny_config.json"))["constructor_args"]
  for key, value in {"cls_token_num": 2, "model_type": "t2i", "drop_path_rate": 0.1, "block_size": 60}.items():
    with pytest.raises(ValueError, match="unsupported LlamaGen ModelArgs") as error:
      LlamaGenConfig.from_torch_args({**args, key: value})
    assert key.split("_")[0] in str(error.value), (key, str(error.value))
  with pytest.raises(ValueError, match="quirk L9"):
    LlamaGenConfig.from_torch_args({**args, "cls_token_num": 2})


def test_forward_flops_counts_every_matmul(llamagen_tiny):
  _, c = llamagen_tiny
  n, d, f = c.num_tokens, c.dim, c.ffn_hidden
  per_layer = n * 2 * (d * 3 * d + d * d + 3 * d * f) + 4 * n * n * d
  assert forward_flops(c) == c.n_layer * per_layer + 2 * n * d * c.vocab_size


# ---- generation parity -----------------------------------------------------------------------------------------


def _settings(case):
  return dict(
    sampling=Sampling.make(float(case["temperature"]), int(case["top_k"]), float(case["top_p"])),
    guidance=Guidance.from_llamagen(float(case["cfg_scale"]), float(case["cfg_interval"])),
  )


def test_generate_matches_the_original_token_for_token(llamagen_tiny, cases, stats):
  model, config = llamagen_tiny
  assert sorted(cases) == sorted(k for k, v in stats["generate"].items() if isinstance(v, dict) and "cond" in v)
  for name, case in cases.items():
    n = int(case["max_new_tokens"])
    assert n == config.num_tokens, f"{name}: max_new_tokens {n} != the model's {config.num_tokens} tokens"
    starts = [s for seg in llamagen_decode.make_plan(n).segments for s in seg.start]
    np.testing.assert_array_equal(case["input_pos"], starts, err_msg=f"{name}: forward t writes slot t")
    out = generate(model, case["cond"], jax.random.key(0), trace=True, **_settings(case))
    np.testing.assert_array_equal(out.tokens, case["result_indices"], err_msg=name)
    np.testing.assert_allclose(out.trace.guided, case["step_logits"], **STEP_TOL, err_msg=name)
    guided_on = float(case["cfg_scale"]) > 1.0
    assert ("step_logits_raw" in case) == guided_on, name
    # one token per step through the cache equals teacher forcing on the generated tokens, per branch
    labels = jnp.asarray(case["cond"])
    branches = [labels] + ([jnp.full_like(labels, config.null_class)] if guided_on else [])
    for branch, branch_labels in enumerate(branches):
      teacher = _teacher(model, out.tokens, branch_labels, out.order)
      np.testing.assert_allclose(out.trace.raw[:, branch], teacher, atol=5e-5, err_msg=f"{name} branch {branch}")
    if not guided_on:
      assert out.trace.raw.shape[1] == 1 and not case["cfg_applied"].any(), name
      continue
    raw = np.asarray(out.trace.raw)  # (B, 2, N, V) -> original (2B, N, V): cond rows, then null
    raw = np.transpose(raw, (1, 0, 2, 3)).reshape((-1,) + raw.shape[2:])
    np.testing.assert_allclose(raw, case["step_logits_raw"], **STEP_TOL, err_msg=name)
    # cfg_applied: token 0 always, token t >= 1 while t - 1 <= cfg_interval (-1: always), as the README states
    t, interval = np.arange(n), float(case["cfg_interval"])
    np.testing.assert_array_equal(case["cfg_applied"], (interval <= -1) | (t == 0) | (t - 1 <= interval), err_msg=name)
    b, scale = len(case["cond"]), np.float32(case["cfg_scale"])
    ref = case["step_logits_raw"]
    rebuilt = np.where(case["cfg_applied"][None, :, None], ref[b:] + (ref[:b] - ref[b:]) * scale, ref[:b])
    np.testing.assert_array_equal(rebuilt, case["step_logits"], err_msg=f"{name}: the README's CFG rule")


def test_plan_is_prefill_then_single_steps(llamagen_tiny):
  _, config = llamagen_tiny
  n = config.num_tokens
  plan = llamagen_decode.make_plan(n)
  assert plan.num_forwards == n and plan.max_queries == 1 and plan.cache_slots >= n
  first = plan.segments[0]
  assert (first.width, first.start, first.out_gen) == (1, (0,), ((0,),))
  gens = [g for seg in plan.segments[1:] for row in seg.gens for g in row]
  assert gens == list(range(n - 1)), "token t - 1 is fed at slot t; the last token is never fed"
  assert [g for seg in plan.segments for row in seg.out_gen for g in row] == list(range(n))


def test_grouped_query_attention_decodes_like_the_forward():
  """The original's generate() fails for n_kv_head != n_head (quirk L7); ours must equal teacher forcing."""
  cfg = LlamaGenConfig.variant("tiny", vocab_size=32, grid_size=4, num_classes=5, multiple_of=32, n_kv_head=2)
  model = _random_model(cfg)
  assert model.layers.attention.wk.shape[2] == 2 < model.layers.attention.wq.shape[2]
  labels = np.array([1, 4, 0])
  out = generate(
    model, labels, jax.random.key(5), sampling=Sampling.make(1.0), guidance=Guidance.from_llamagen(3.0), trace=True
  )
  order = out.order
  cond = _teacher(model, out.tokens, jnp.asarray(labels), order)
  null = _teacher(model, out.tokens, jnp.full_like(jnp.asarray(labels), cfg.null_class), order)
  np.testing.assert_allclose(out.trace.raw[:, 0], cond, atol=2e-5)
  np.testing.assert_allclose(out.trace.raw[:, 1], null, atol=2e-5)


def test_default_settings_are_sample_c2i_and_bad_input_fails_before_compiling(llamagen_tiny, fixtures):
  model, config = llamagen_tiny
  settings = llamagen_decode.default_settings(config)
  sampling, guidance = settings.sampling, settings.guidance
  assert (settings.num_steps, settings.order) == (-1, "raster")  # one token per forward
  assert (sampling.top_k, float(sampling.top_p), float(sampling.temperature)) == (
    min(2000, config.vocab_size),
    1.0,
    1.0,
  )
  assert (guidance.start, guidance.end, guidance.interval) == (4.0, 4.0, -1.0)
  assert Guidance.from_llamagen(1.0) is None, "a scale of 1.0 or below is no guidance (L5)"
  key = jax.random.key(0)
  with compile_events() as compiles:
    with pytest.raises(ValueError, match=f"num_steps must be {config.num_tokens}"):
      generate(model, np.array([0]), key, num_steps=8)
    with pytest.raises(ValueError, match="order must be 'raster', 'random'"):
      generate(model, np.array([0]), key, order="spiral")
    with pytest.raises(ValueError, match=r"class ids must be in \[0, " + str(config.num_classes)):
      generate(model, np.array([config.num_classes]), key)
  assert compiles.count == 0


# ---- released manifests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_maps_completely(fixtures, name):
  source = ManifestSource(fixture_file(fixtures, name))
  manifest = source.manifest
  config = LlamaGenConfig.from_torch_args(manifest["constructor_args"])
  derived = manifest["derived"]
  assert (config.head_dim, config.ffn_hidden, config.grid_size) == (
    derived["head_dim"],
    derived["ffn_hidden_dim"],
    derived["grid_size"],
  )
  assert llamagen_convert.infer_config(source) == config, f"{name}: the released size is inferred from shapes"
  variant = config.variant_name
  recipe = load_config(f"llamagen:variant={variant}")
  assert LlamaGenConfig.from_dict(recipe.model.to_dict()) == config, "the llamagen recipe must describe it"
  assert derived["image_size"] == config.grid_size * 16
  abstract = checkpoint.abstract_params(config)
  assert checkpoint.param_count(abstract) == manifest["num_parameters"]
  assert len(source.keys()) == manifest["num_state_dict_entries"] == 4 + 7 * config.n_layer
  assert not manifest["buffers_in_state_dict"]
  assert "freqs_cis" not in source.keys()  # noqa: SIM118 - a TensorSource has no __contains__
  # every key used once, every leaf filled, every shape checked (zero tensors, nothing kept)
  convert(source, llamagen_convert.RULES, abstract, ignore=llamagen_convert.IGNORE, progress=False, check_only=True)
  assert [f.name for f in [detect_family(source)]] == ["llamagen"]
  assert llamagen_decode.FID_CFG_SCALE[variant] == manifest["released"]["fid_cfg_scale_getting_started"]


@pytest.mark.parametrize(
  "name",
  ["manifest_randar_l.json", "manifest_rar_b.json", "manifest_vq_llamagen_ds16.json", "manifest_vq_maskgit_f16.json"],
)
def test_other_families_are_not_llamagen(fixtures, name):
  assert not llamagen_convert.is_llamagen(ManifestSource(fixture_file(fixtures, name)).keys())


# ---- converter strictness and containers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(fixtures, llamagen_tiny):
  path = fixture_file(fixtures, "llamagen_tiny.safetensors")
  return path, safetensors.numpy.load_file(str(path)), llamagen_tiny[1]


def _write(tmp_path, tensors, name="bad.safetensors"):
  path = tmp_path / name
  safetensors.numpy.save_file(tensors, str(path))
  return path


def test_converter_is_strict_and_names_the_key(weights, tmp_path):
  path, tensors, config = weights
  params, _ = convert_params(path, config, progress=False)
  assert checkpoint.param_count(params) == sum(t.size for t in tensors.values())
  missing = dict(tensors)
  del missing["layers.1.feed_forward.w3.weight"]
  with pytest.raises(ConversionError, match=r"missing 1 key.*layers\.1\.feed_forward\.w3\.weight"):
    convert_params(_write(tmp_path, missing), config, progress=False)
  extra = {**tensors, "pos_instruct_embeddings": np.zeros((1, config.dim), np.float32)}
  with pytest.raises(ConversionError, match=r"is a randar checkpoint but the config is for llamagen"):
    convert_params(_write(tmp_path, extra), config, progress=False)
  extra = {**tensors, "layers.0.attention.bias": np.zeros(3, np.float32)}
  with pytest.raises(ConversionError, match=r"unexpected key.*layers\.0\.attention\.bias"):
    convert_params(_write(tmp_path, extra), config, progress=False)
  bad = {**tensors, "norm.weight": np.zeros(config.dim + 1, np.float32)}
  with pytest.raises(ConversionError, match=rf"norm\.weight.*\({config.dim + 1},\).*\({config.dim},\)"):
    convert_params(_write(tmp_path, bad), config, progress=False)


def test_stray_freqs_cis_and_kv_cache_buffers_are_ignored(weights, golden, stats, tmp_path):
  """The buffers a state dict holds after the original's generate() (L8, names from the stats) and freqs_cis."""
  path, tensors, config = weights
  reference, _ = convert_params(path, config, progress=False)
  cache = (6, config.n_head, config.num_tokens + 8, config.head_dim)
  extra = stats["generate"]["state_dict_after_generate_extra_keys"]
  assert len(extra) == 2 * config.n_layer
  stray = {**tensors, "freqs_cis": golden["freqs_cis"], **{key: np.zeros(cache, np.float32) for key in extra}}
  params, _ = convert_params(_write(tmp_path, stray), config, progress=False)
  jax.tree.map(np.testing.assert_array_equal, params, reference)


def _entries(tensors, prefix):
  entries, storages = {}, {}
  for i, (name, tensor) in enumerate(tensors.items()):
    tensor = np.ascontiguousarray(tensor, np.float32)
    entries[name] = (f"{prefix}{i}", tensor.size, 0, tensor.shape, tuple(s // 4 for s in tensor.strides))
    storages[f"{prefix}{i}"] = tensor.tobytes()
  return tensor_pickle(entries)[2:-1], storages  # the dict's opcodes, without the protocol header and STOP


def _ddp_checkpoint(path, tensors, args_pickle: bytes):
  """What train_c2i.py's torch.save({'model', 'optimizer', 'steps', 'args'}) writes (no torch needed)."""
  model, storages = _entries(tensors, "m")
  first = next(iter(tensors))
  optimizer, more = _entries({"exp_avg": tensors[first]}, "o")
  body = (
    _unicode("model")
    + model
    + _unicode("optimizer")
    + optimizer
    + _unicode("steps")
    + b"J"
    + struct.pack("<i", 5000)
    + _unicode("args")
    + args_pickle[2:-1]
  )
  return torch_zip(path, b"\x80\x02}(" + body + b"u.", {**storages, **more})


def test_ddp_and_fsdp_containers_convert_identically(weights, tmp_path):
  path, tensors, config = weights
  reference, _ = convert_params(path, config, progress=False)
  namespace = argparse.Namespace(gpt_model="GPT-B", results_dir="results", lr=1e-4, ema=False, image_size=256)
  ddp = _ddp_checkpoint(tmp_path / "c2i_tiny.pt", tensors, pickle.dumps(namespace, protocol=2))
  fsdp = torch_save(tmp_path / "consolidated.pth", tensors)
  for file in (ddp, fsdp):
    assert sorted(open_source(file).keys()) == sorted(tensors), file
    params, _ = convert_params(file, config, progress=False)
    jax.tree.map(np.testing.assert_array_equal, params, reference)


def test_container_with_another_global_is_still_refused(weights, tmp_path):
  """Only argparse.Namespace joins the allow-list: any other argparse global (here FileType) is refused."""
  _, tensors, _ = weights
  evil = _ddp_checkpoint(tmp_path / "evil.pt", tensors, pickle.dumps(argparse.FileType("w"), protocol=2))
  with pytest.raises(ConversionError, match=r"refusing to load.*argparse\.FileType"):
    convert_params(evil, progress=False)


def test_infer_config_needs_a_released_size(weights, tmp_path):
  path, _, _ = weights
  with pytest.raises(ConversionError, match=r"match no released LlamaGen GPT size.*--config"):
    convert_params(path, progress=False)


# ---- training and the CLI --------------------------------------------------------------------------------------


def test_trains_with_the_shared_trainer():
  """llamagen:runlocal (shrunk as the other families' training tests) through the shared Trainer."""
  from test_train import make_loader, make_trainer, run_steps, tiny_config

  config = tiny_config("llamagen")
  assert config.data.order.order == "raster" and config.optim.schedule == "constant"
  mesh = sharding.build_mesh(devices=jax.devices()[:1])
  trainer, model_config = make_trainer(config, mesh)
  assert model_config.to_dict()["family"] == "llamagen" and trainer.optim.skip_threshold is None
  loader = make_loader(config, model_config, mesh)
  _, losses = run_steps(trainer, trainer.init(), loader, 20)
  loader.close()
  assert np.mean(losses[-5:]) < losses[0] - 0.3, losses
  assert re.fullmatch(r"[\d.]+", f"{losses[-1]:.3f}")


def test_sample_command_on_a_converted_checkpoint(weights, tmp_path, capsys):
  from randar_jax import cli

  path, _, config = weights
  ckpt = convert_checkpoint(path, tmp_path / "c", config, progress=False)
  out = tmp_path / "samples"
  assert (
    cli.main(
      [
        "sample",
        ckpt,
        "--model",
        "llamagen",
        "--out",
        str(out),
        "--classes",
        "1,2,3",
        "--batch-size",
        "2",
        "--cfg",
        "2.0",
        "--top-k",
        "1",
      ]
    )
    == 0
  )
  data = np.load(out / "tokens.npz")
  assert data["tokens"].shape == (3, config.grid_size, config.grid_size) and (out / "tokens.png").exists()
  assert (data["orders"] == np.arange(config.num_tokens)).all()
  assert cli.main(["sample", ckpt, "--out", str(out), "--classes", "1", "--steps", "5"]) == 2
  assert "one token per step" in capsys.readouterr().err
