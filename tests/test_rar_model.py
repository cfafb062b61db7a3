"""RAR generator: parity with the PyTorch original (rar_tiny_* fixtures, random weights), conversion, training
contract (loss, dropout, weight-decay name rule), sharding, annealed orders.

Every size comes from the fixture files; the weights go through the real converter (conftest.rar_tiny).
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx

from conftest import fixture_file, float32_atol, load_json, torch_save
from randar_jax import checkpoint, families, sharding
from randar_jax.config_io import load_config
from randar_jax.convert import ConversionError, convert_checkpoint, convert_params
from randar_jax.convert import rar as rar_convert
from randar_jax.data import orders
from randar_jax.models.randar import RandARConfig
from randar_jax.models.rar import NO_DECAY_SUBSTRINGS, RAR, RARConfig


def _with(model, **changes):
  """The same parameters under a config with ``changes`` (dropouts, dtype, remat)."""
  config = dataclasses.replace(model.config, **changes)
  with sharding.model_context():
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: RAR(config, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, nnx.state(model))


@pytest.fixture(scope="module")
def golden(fixtures):
  return dict(np.load(fixture_file(fixtures, "rar_tiny_forward.npz")))


@pytest.fixture(scope="module")
def inputs(rar_tiny, golden):
  """(tokens raster, labels as class ids with null_class for the dropped one, orders) from the fixture."""
  _, config = rar_tiny
  labels = golden["condition_ids"] - (config.vocab_size + 1)  # the fixture's embedding ids -> class ids
  return jnp.asarray(golden["tokens"]), jnp.asarray(labels), jnp.asarray(golden["orders"])


@pytest.fixture(scope="module")
def forward(rar_tiny, inputs):
  model, _ = rar_tiny
  logits, hidden, c = model(*inputs, include_last=True, return_hidden=True)
  return np.asarray(logits), np.asarray(hidden), np.asarray(c)


def test_vocabulary_offsets_match_original(rar_tiny, fixtures, golden):
  _, config = rar_tiny
  derived = load_json(fixture_file(fixtures, "rar_tiny_config.json"))["derived"]
  assert config.embedding_rows == derived["embeddings_rows"]
  assert config.condition_id(config.null_class) == derived["none_condition_id"]
  assert config.condition_id(0) == derived["class_token_offset"]
  assert (config.pos_rows, config.time_rows) == (derived["pos_embed_rows"], derived["timesteps_embeddings_rows"])
  kept = golden["condition_ids"] != derived["none_condition_id"]
  np.testing.assert_array_equal(config.condition_id(golden["class_labels"])[kept], golden["condition_ids"][kept])


def test_block_input_and_conditioning_match_original(rar_tiny, inputs, golden, forward):
  model, _ = rar_tiny
  tokens, labels, order = inputs
  seq = jnp.take_along_axis(tokens, order, axis=1)
  np.testing.assert_array_equal(seq, golden["labels_shuffled"])
  x, c = model.slot_inputs(seq, labels, order, jnp.arange(golden["block_input"].shape[1]))
  np.testing.assert_allclose(x, golden["block_input"], atol=float32_atol(golden["block_input"]))
  np.testing.assert_allclose(c, golden["condition_tokens"], atol=float32_atol(golden["condition_tokens"]))
  np.testing.assert_allclose(forward[2], golden["condition_tokens"], atol=float32_atol(golden["condition_tokens"]))


def test_logits_and_hidden_states_match_original(rar_tiny, forward, golden):
  _, config = rar_tiny
  logits, hidden, _ = forward
  assert logits.shape == golden["logits"].shape
  np.testing.assert_allclose(logits, golden["logits"], atol=1e-4, rtol=1e-4)
  keys = sorted((k for k in golden if k.startswith("hidden_after_block")), key=lambda k: int(k[18:]))
  assert len(keys) == config.n_layer == hidden.shape[0]
  for i, key in enumerate(keys):
    np.testing.assert_allclose(hidden[i], golden[key], atol=1e-4, rtol=1e-4, err_msg=key)


def test_loss_and_raster_forward_match_original(rar_tiny, inputs, golden, forward):
  model, _ = rar_tiny
  tokens, labels, order = inputs
  loss, logits = model.loss(tokens, labels, order)
  np.testing.assert_allclose(float(loss), float(golden["loss_ar"]), atol=1e-5)
  # the last image slot changes nothing
  np.testing.assert_allclose(logits, forward[0][:, :-1], atol=float32_atol(forward[0]))
  raster = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  np.testing.assert_allclose(
    model(tokens, labels, raster, include_last=True), golden["raster_forward_logits"], atol=1e-4, rtol=1e-4
  )


def test_ordered_tokens_equal_raster_tokens(rar_tiny, inputs):
  """The data pipeline emits tokens already in generation order; both entry points agree."""
  model, _ = rar_tiny
  tokens, labels, order = inputs
  loss_a, logits_a = model.loss(tokens, labels, order)
  loss_b, logits_b = model.loss(jnp.take_along_axis(tokens, order, axis=1), labels, order, ordered=True)
  np.testing.assert_array_equal(logits_a, logits_b)
  assert float(loss_a) == float(loss_b)


def test_converter_infers_the_config_and_is_strict(fixtures, rar_tiny, tmp_path):
  model, config = rar_tiny
  path = fixture_file(fixtures, "rar_tiny.safetensors")
  tensors = safetensors.numpy.load_file(str(path))
  assert len(tensors) == 18 * config.n_layer + 9
  params, inferred = convert_params(path, progress=False)
  assert inferred == dataclasses.replace(config, dropout=0.1, attn_dropout=0.1)  # dropouts are not in the weights
  assert checkpoint.param_count(params) == sum(t.size for t in tensors.values())

  def fails(change, match):
    bad = dict(tensors)
    change(bad)
    out = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(bad, str(out))
    with pytest.raises(ConversionError, match=match):
      convert_params(out, config, progress=False)

  last = config.n_layer - 1
  fails(lambda t: t.pop(f"blocks.{last}.attn.k_norm.bias"), rf"missing 1 key.*blocks\.{last}\.attn\.k_norm\.bias")
  fails(lambda t: t.update({"blocks.0.attn.extra": np.zeros(3, np.float32)}), r"unexpected key.*blocks\.0\.attn\.extra")
  fails(
    lambda t: t.update({"cls_token": np.zeros((1, 2, config.dim), np.float32)}),
    # refused on the declared shape, before the tensor's bytes are read
    rf"cls_token: declared shape {re.escape(str((1, 2, config.dim)))}.*does not match the model's "
    rf"\[{re.escape(str((1, config.dim)))}\]",
  )
  fails(
    lambda t: t.update({"blocks.0.adaLN_modulation.1.bias": np.zeros((6, config.dim), np.float32)}),
    r"blocks\.0\.adaLN_modulation\.1\.bias: expected a 1-D tensor",
  )
  # the released rar_*.bin are raw torch.save state dicts: the same tensors as a .bin convert identically
  bin_params, bin_config = convert_params(torch_save(tmp_path / "rar_tiny.bin", tensors), progress=False)
  assert bin_config == inferred
  jax.tree.map(np.testing.assert_array_equal, bin_params, params)
  deeper = dataclasses.replace(config, n_layer=config.n_layer + 1)
  with pytest.raises(ConversionError, match=rf"missing .*blocks\.{config.n_layer}\..*does the config match"):
    convert_params(path, deeper, progress=False)
  with pytest.raises(ConversionError, match="is a rar checkpoint but the config is for randar"):
    convert_params(path, RandARConfig(), progress=False)


def test_weight_decay_mask_is_the_original_name_rule(fixtures, rar_tiny):
  """Our mask equals the original rule applied to the torch names and ranks, leaf by leaf through the key map."""
  model, _ = rar_tiny
  tensors = safetensors.numpy.load_file(str(fixture_file(fixtures, "rar_tiny.safetensors")))
  shapes = {k: v.shape for k, v in tensors.items()}
  mask = {
    "/".join(str(k.key) for k in path): v
    for path, v in jax.tree_util.tree_flatten_with_path(model.weight_decay_mask())[0]
  }
  for rule in rar_convert.RULES:
    pattern = re.compile(rule.regex.pattern)
    for key, shape in shapes.items():
      if pattern.match(key):
        torch_decays = len(shape) >= 2 and not any(s in key for s in NO_DECAY_SUBSTRINGS)
        assert mask[rule.targets[0]] == torch_decays, (key, rule.targets[0])
  decayed = sorted(k for k, v in mask.items() if v)
  assert decayed == [
    "blocks/adaLN_modulation/kernel",
    "blocks/attn/proj/kernel",
    "blocks/attn/qkv/kernel",
    "blocks/mlp/fc1/kernel",
    "blocks/mlp/fc2/kernel",
    "cls_token",
    "lm_head/kernel",
  ]
  assert not mask["adaln_before_head/adaLN_modulation/kernel"]  # "adaln" contains "ln": the original's accident


def test_init_is_adaln_zero_and_loss_is_near_log_vocab():
  config = RARConfig.variant("tiny", vocab_size=64, grid_size=4, num_classes=5, dropout=0.0, attn_dropout=0.0)
  with nnx.use_eager_sharding(False):
    model = families.build(config, seed=3)
  assert not model.cls_token[...].any() and not model.blocks.adaLN_modulation.kernel[...].any()
  tokens = jax.random.randint(jax.random.key(0), (4, config.num_tokens), 0, config.vocab_size)
  labels, order = jnp.arange(4) % config.num_classes, jnp.broadcast_to(jnp.arange(config.num_tokens), tokens.shape)

  @nnx.jit
  def run(model):
    _, hidden, _ = model(tokens, labels, order, return_hidden=True)
    x, _ = model.slot_inputs(tokens, labels, order, jnp.arange(config.num_tokens + 2))
    return hidden[-1], x, model.loss(tokens, labels, order)[0]

  last, x, loss = run(model)
  np.testing.assert_array_equal(last, x)  # every block is the identity at init
  assert abs(float(loss) - np.log(config.vocab_size)) < 0.05


def test_dropout_remat_and_label_dropout(rar_tiny, inputs):
  """Training dropouts are keyed (same key, same loss; no key: evaluation); gradients (rematerialised blocks)
  reach every block; label dropout replaces the class in both the token and the adaLN conditioning."""
  model, config = rar_tiny
  noisy = _with(model, dropout=0.3, attn_dropout=0.3)
  always = _with(model, class_dropout_prob=1.0)
  null = jnp.full_like(inputs[1], config.null_class)

  @nnx.jit
  def run(model, noisy, always):
    loss = lambda m, key: m.loss(*inputs, dropout_rng=key)[0]  # noqa: E731
    return (
      nnx.value_and_grad(loss)(noisy, jax.random.key(1)),
      loss(noisy, jax.random.key(1)),
      noisy.loss(*inputs)[0],
      model.loss(*inputs)[0],
      always.loss(*inputs, dropout_rng=jax.random.key(2))[1],
      model.loss(inputs[0], null, inputs[2])[1],
    )

  (loss, grads), again, clean, evaluation, dropped, unconditional = run(model, noisy, always)
  assert noisy.config.remat and float(loss) == float(again) != float(clean)
  assert float(clean) == float(evaluation)
  assert (jnp.abs(grads["blocks"]["adaLN_modulation"]["kernel"]).max(axis=(1, 2, 3)) > 0).all()
  np.testing.assert_allclose(dropped, unconditional, atol=float32_atol(unconditional))


def test_sharded_forward_equals_single_device(fixtures, rar_tiny, tmp_path):
  model, config = rar_tiny
  ckpt = convert_checkpoint(fixture_file(fixtures, "rar_tiny.safetensors"), tmp_path / "c", config, progress=False)
  golden = np.load(fixture_file(fixtures, "rar_tiny_forward.npz"))
  tokens, order = (jnp.asarray(np.resize(golden[k], (8,) + golden[k].shape[1:])) for k in ("tokens", "orders"))
  labels = jnp.arange(8) % (config.num_classes + 1)
  expected = model(tokens, labels, order)
  mesh = sharding.build_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = checkpoint.load_model(ckpt, family="rar", mesh=mesh)
  assert tuple(sharded.blocks.attn.qkv.kernel[...].sharding.spec) == (None, "fsdp", None, "tensor", None)
  with sharding.model_context(mesh):
    batch = [
      jax.device_put(x, sharding.named_sharding(mesh, ("batch",) + (None,) * (x.ndim - 1)))
      for x in (tokens, labels, order)
    ]
    logits = nnx.jit(lambda m, *a: m(*a))(sharded, *batch)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=float32_atol(expected, ulps=32))


def test_bfloat16_compute_keeps_float32_params_and_logits(rar_tiny, inputs):
  model, config = rar_tiny
  bf16 = _with(model, dtype="bfloat16")
  logits32, logits16 = model(*inputs), bf16(*inputs)
  assert logits16.dtype == jnp.float32 and bf16.lm_head.kernel[...].dtype == jnp.float32
  assert float(jnp.abs(logits16 - logits32).max()) < 0.05 * float(jnp.abs(logits32).max())


def test_configs_and_bad_input():
  config = load_config("rar:variant=XL,dtype=bfloat16")
  model = families.config_from_dict(config.model.to_dict())
  assert isinstance(model, RARConfig) and model.to_dict()["family"] == "rar"
  assert (model.dim, model.n_layer, model.n_head, model.mlp_dim, model.dtype) == (1280, 32, 16, 5120, "bfloat16")
  assert (config.optim.b2, config.optim.weight_decay, config.optim.end_lr) == (0.96, 0.03, 1e-5)
  assert RARConfig.from_dict(model.to_dict()) == model
  with pytest.raises(ValueError, match="unknown RAR variant"):
    RARConfig.variant("M")
  with pytest.raises(ValueError, match="unknown rar config keys"):
    RARConfig.from_dict({"dim": 64, "n_layers": 2})
  with pytest.raises(ValueError, match="'randar' config is not a rar config"):
    RARConfig.from_dict({"family": "randar"})
  with pytest.raises(ValueError, match="not divisible by n_head"):
    RARConfig(dim=100, n_head=16)
  with pytest.raises(ValueError, match="not a square grid"):
    RARConfig.from_original(
      {
        "model": {
          "vq_model": {"codebook_size": 8},
          "generator": {
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 8,
            "image_seq_len": 15,
            "condition_num_classes": 2,
          },
        }
      }
    )


def test_annealing_fraction_of_random_orders_follows_the_schedule():
  """The rar recipe's order policy: per example random with probability r(step), else raster (docs/rar.md 6.2)."""
  config = load_config("rar:variant=B")
  policy = orders.OrderPolicy(**config.data.order.to_dict())
  start, end = policy.anneal
  rng, draws, n = np.random.default_rng(0), 2000, 16
  for step in (
    0,
    start - 1,
    start,
    (3 * start + end) // 4,
    (start + end) // 2,
    (start + 3 * end) // 4,
    end,
    end + 1,
    config.total_steps,
  ):
    r = 1.0 if step < start else 0.0 if step > end else 1.0 - (step - start) / (end - start)
    assert policy.ratio(step) == pytest.approx(r)
    drawn = [policy.draw(rng, step, 4) for _ in range(draws)]
    used = np.array([u for _, u in drawn])
    assert abs(used.mean() - r) <= 4 * np.sqrt(r * (1 - r) / draws) + 1e-9, step  # binomial, 4 sigma
    for order, random in drawn[:50]:
      assert sorted(order) == list(range(n)) and (random or (order == np.arange(n)).all())
  assert orders.random_ratio(np.array([start, (start + end) // 2, end]), start, end).tolist() == [1.0, 0.5, 0.0]
