"""RandAR model behaviour beyond parity: sharding, GQA, remat, bfloat16, dropout sites, configs."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from randar_jax import checkpoint, families, sharding
from randar_jax.config_io import load_config, parse_arg
from randar_jax.convert import convert_checkpoint
from randar_jax.models.layers import silu_gate
from randar_jax.models.randar import RandARConfig

SMALL = RandARConfig(
  vocab_size=32,
  dim=32,
  n_layer=2,
  n_head=4,
  multiple_of=16,
  grid_size=4,
  num_classes=5,
  token_dropout=0.0,
  resid_dropout=0.0,
  ffn_dropout=0.0,
)


def _batch(config, batch=4, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  tokens = jax.random.randint(keys[0], (batch, config.num_tokens), 0, config.vocab_size)
  labels = jax.random.randint(keys[1], (batch,), 0, config.num_classes)
  order = jax.vmap(lambda k: jax.random.permutation(k, config.num_tokens))(jax.random.split(keys[2], batch))
  return tokens, labels, order


def _randomised(config, seed=1):
  """A model whose zero-initialised head is replaced by random values (so logits are informative)."""
  with sharding.model_context():
    model = families.build(config, seed)
  model.output[...] = jax.random.normal(jax.random.key(seed), model.output.shape) * 0.3
  return model


def test_sharded_forward_equals_single_device(fixtures, randar_tiny, tmp_path):
  from conftest import fixture_file, float32_atol

  _, config = randar_tiny
  ckpt = convert_checkpoint(fixture_file(fixtures, "randar_tiny.safetensors"), tmp_path / "c", config, progress=False)
  golden = np.load(fixture_file(fixtures, "randar_tiny_forward.npz"))
  tokens, labels, order = (
    jnp.asarray(np.resize(golden[k], (8,) + golden[k].shape[1:]))  # 8 rows: 1 per device
    for k in ("idx", "cond", "token_order")
  )
  single = sharding.build_mesh({"data": 1}, devices=jax.devices()[:1])
  reference = checkpoint.load_model(ckpt, mesh=single)
  with sharding.model_context(single):
    expected = nnx.jit(lambda m, *a: m(*a))(reference, tokens, labels, order)
  mesh = sharding.build_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model = checkpoint.load_model(ckpt, mesh=mesh)
  spec = model.layers.attention.wq[...].sharding.spec
  assert tuple(spec) == (None, "fsdp", "tensor", None), spec
  assert tuple(model.tok_embeddings[...].sharding.spec) == ("tensor", "fsdp")
  with sharding.model_context(mesh):
    batch = [
      jax.device_put(x, sharding.named_sharding(mesh, ("batch",) + (None,) * (x.ndim - 1)))
      for x in (tokens, labels, order)
    ]
    logits = nnx.jit(lambda m, *a: m(*a))(model, *batch)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=float32_atol(expected, ulps=32))


def test_build_mesh_validates_shapes():
  assert sharding.build_mesh({"data": -1, "tensor": 2}).shape == {"data": 4, "fsdp": 1, "tensor": 2}
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.build_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(ValueError, match="only one mesh axis may be -1"):
    sharding.build_mesh({"data": -1, "fsdp": -1})


def test_grouped_query_attention_shares_kv_heads():
  """A GQA model equals the MHA model whose k/v heads are the GQA heads repeated (torch repeat_interleave)."""
  gqa_config = dataclasses.replace(SMALL, n_kv_head=2)
  gqa = _randomised(gqa_config)
  mha = _randomised(SMALL)
  params = checkpoint.model_params(gqa)
  mha_params = jax.tree.map(lambda x: x, params)
  rep = SMALL.n_head // gqa_config.kv_heads
  for name in ("wk", "wv"):
    mha_params["layers"]["attention"][name] = jnp.repeat(params["layers"]["attention"][name], rep, axis=2)
  state = nnx.state(mha, nnx.Param)
  nnx.replace_by_pure_dict(state, mha_params)
  nnx.update(mha, state)
  batch = _batch(SMALL)
  np.testing.assert_allclose(gqa(*batch), mha(*batch), atol=1e-5)


def test_remat_does_not_change_loss_or_gradients():
  model = _randomised(SMALL)
  no_remat = nnx.merge(nnx.graphdef(_randomised(dataclasses.replace(SMALL, remat=False))), nnx.state(model))
  batch = _batch(SMALL)

  def grads(m):
    return nnx.value_and_grad(lambda m: m.loss(*batch)[0])(m)

  (loss_a, g_a), (loss_b, g_b) = grads(model), grads(no_remat)
  np.testing.assert_allclose(loss_a, loss_b, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), nnx.to_pure_dict(g_a), nnx.to_pure_dict(g_b))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _randomised(SMALL)
  bf16 = nnx.merge(nnx.graphdef(_randomised(dataclasses.replace(SMALL, dtype="bfloat16"))), nnx.state(model))
  batch = _batch(SMALL)
  logits32, logits16 = model(*batch), bf16(*batch)
  assert logits16.dtype == jnp.float32 and bf16.output[...].dtype == jnp.float32
  assert float(jnp.abs(logits16 - logits32).max()) < 0.05 * float(jnp.abs(logits32).max())


def test_dropout_sites():
  """Token dropout touches image embeddings only; label dropout swaps in the null class; eval is deterministic."""
  config = dataclasses.replace(SMALL, token_dropout=0.5, class_dropout_prob=0.5)
  model = _randomised(config)
  tokens, labels, order = _batch(config, batch=64)
  clean, cells = model.training_sequence(tokens, labels, order)
  noisy, _ = model.training_sequence(tokens, labels, order, dropout_rng=jax.random.key(3))
  np.testing.assert_array_equal(noisy[:, 1::2], clean[:, 1::2])  # instruction tokens untouched
  assert float(jnp.mean(noisy[:, 2::2] == 0)) > 0.3  # image embeddings dropped
  null_row = model.cls_embedding[...][config.null_class]
  swapped = jnp.all(noisy[:, 0] == null_row, axis=-1)
  assert 0.2 < float(swapped.mean()) < 0.8
  np.testing.assert_array_equal(model(tokens, labels, order), model(tokens, labels, order))
  a = model.loss(tokens, labels, order, dropout_rng=jax.random.key(1))[0]
  b = model.loss(tokens, labels, order, dropout_rng=jax.random.key(1))[0]
  assert float(a) == float(b) and float(a) != float(model.loss(tokens, labels, order)[0])


def test_initial_loss_is_log_vocab():
  """The zero-initialised head gives uniform logits: loss = ln V (original init)."""
  with sharding.model_context():
    model = families.build(SMALL)
  np.testing.assert_allclose(float(model.loss(*_batch(SMALL))[0]), np.log(SMALL.vocab_size), rtol=1e-6)


def test_configs_and_args():
  config = load_config("randar:variant=XL,tokenizer=maskgit,dtype=bfloat16")
  model = RandARConfig.from_dict(config.model.to_dict())
  assert (model.dim, model.n_layer, model.n_head, model.vocab_size, model.ffn_hidden) == (1280, 36, 20, 1024, 3584)
  assert model.dtype == "bfloat16"
  with pytest.raises(ValueError, match="unknown config argument"):
    parse_arg("varaint=L", variant="L")
  with pytest.raises(ValueError, match="unknown RandAR variant"):
    RandARConfig.variant("M")
  with pytest.raises(ValueError, match="not divisible by n_head"):
    RandARConfig(dim=100, n_head=16)
  with pytest.raises(ValueError, match="cannot run CFG"):
    _ = RandARConfig(class_dropout_prob=0.0).null_class


def test_ordered_tokens_equal_raster_tokens():
  """The data pipeline emits tokens already in generation order; both entry points agree."""
  model = _randomised(SMALL)
  tokens, labels, order = _batch(SMALL)
  in_order = jnp.take_along_axis(tokens, order, axis=1)
  loss_raster, logits_raster = model.loss(tokens, labels, order)
  loss_ordered, logits_ordered = model.loss(in_order, labels, order, ordered=True)
  np.testing.assert_array_equal(logits_raster, logits_ordered)
  assert float(loss_raster) == float(loss_ordered)


def test_weight_decay_mask_follows_ndim_rule():
  with sharding.model_context():
    model = families.build(SMALL)
  mask = model.weight_decay_mask()
  assert mask["pos_instruct_embeddings"] and mask["cls_embedding"] and mask["output"]
  assert mask["layers"]["attention"]["wq"] and not mask["layers"]["attention_norm"]["scale"]
  assert not mask["norm"]["scale"]


def test_silu_gate_gradient_is_the_autodiff_one():
  """The SwiGLU gate's hand-written derivative equals autodiff's of silu(a) * b (float32 rounding)."""
  a, b, g = (jax.random.normal(jax.random.key(i), (64, 48)) * 3 for i in range(3))
  plain = jax.vjp(lambda a, b: jax.nn.silu(a) * b, a, b)
  mine = jax.vjp(silu_gate, a, b)
  np.testing.assert_array_equal(mine[0], plain[0])
  for got, want in zip(mine[1](g), plain[1](g), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
