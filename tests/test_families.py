"""The contract every generator family registered in ``randar_jax.families`` keeps, tested once for all of them.

A family gets these tests by registering its spec and a ``<name>_tiny`` conftest fixture ((model, config) built
from its golden fixture through the real converter): defaults valid for its config, decoding with the defaults,
one token per forward equal to teacher forcing, one compilation per shape, strict conversion round trip through
an Orbax checkpoint, and the analytic FLOP counter against XLA's count.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import fixture_file
from randar_jax import checkpoint, families, sharding
from randar_jax.convert import convert_checkpoint, convert_params, detect_family
from randar_jax.convert.sources import open_source
from randar_jax.utils.compiles import compile_events

GENERATORS = families.names("generator")


@pytest.fixture(params=GENERATORS)
def tiny(request):
  """(family name, spec, model, config) of each generator family's golden tiny model."""
  model, config = request.getfixturevalue(f"{request.param}_tiny")
  return request.param, families.get(request.param), model, config


def test_registry_names_match_configs():
  for name, spec in families.SPECS.items():
    assert spec.name == name == spec.config.FAMILY
    assert (spec.generate is not None) == (spec.kind == "generator")


def test_default_settings_fit_the_model(tiny):
  """The defaults never ask for more forwards than the model has tokens (a 16- or 64-token model samples with
  no flags), and overrides are checked against the model."""
  _, spec, _, config = tiny
  settings = spec.decode_settings(config)
  n = config.num_tokens
  assert settings.num_steps == -1 or 1 <= settings.num_steps <= n
  with pytest.raises(ValueError, match=f"num_steps must be .*{n}"):
    spec.decode_settings(config, steps=n + 1)
  bad = {
    "order must be": dict(order="spiral"),
    "temperature must be a finite": dict(temperature=float("nan")),
    "malformed guidance": dict(cfg="nan"),
    "cfg_interval must be a finite": dict(cfg_interval=float("inf")),
    "cfg_interval needs classifier-free guidance": dict(cfg="none", cfg_interval=3.0),
    "top_p must be": dict(top_p=0.0),
  }
  for message, flags in bad.items():
    with pytest.raises(ValueError, match=message):
      spec.decode_settings(config, **flags)


def test_defaults_decode_and_compile_once(tiny):
  _, spec, model, config = tiny
  labels = np.arange(3) % config.num_classes
  kwargs = spec.decode_settings(config).kwargs()
  first = spec.generate(model, labels, jax.random.key(0), **kwargs)
  tokens = np.asarray(first.tokens)
  assert tokens.shape == (3, config.num_tokens) and tokens.min() >= 0 and tokens.max() < config.vocab_size
  with compile_events() as compiles:
    again = spec.generate(model, labels[::-1], jax.random.key(1), cache=first.cache, **kwargs)
    jax.block_until_ready(again.tokens)
  assert compiles.count == 0, "the same settings and batch must reuse the compiled decode program"


def test_one_token_per_forward_equals_teacher_forcing(tiny):
  _, spec, model, config = tiny
  labels = np.arange(2) % config.num_classes
  settings = spec.decode_settings(config, steps=-1, cfg="none", temperature=1.0, top_k=0, top_p=1.0)
  out = spec.generate(model, labels, jax.random.key(3), trace=True, **settings.kwargs())
  teacher = np.asarray(model(out.tokens, jnp.asarray(labels), out.order))
  guided = np.asarray(out.trace.guided)
  # float32 evaluation-order noise between the cached and the full forward, relative to the logits' magnitude
  np.testing.assert_allclose(guided, teacher, atol=1e-5 * max(1.0, float(np.abs(teacher).max())), rtol=0)


def test_layer_loop_equals_the_scan(tiny):
  """``scan_layers=False`` (a Python loop over per-layer slices of the same stacked weights) computes the
  scanned model's training loss and gradients, dropout included (the same key per layer)."""
  _, _, model, config = tiny
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (2, config.num_tokens)), jnp.int32)
  labels = jnp.arange(2) % config.num_classes
  order = jnp.asarray(np.stack([rng.permutation(config.num_tokens) for _ in range(2)]), jnp.int32)

  def loss_and_grads(scan: bool):
    m = nnx.clone(model)
    m.config = dataclasses.replace(config, scan_layers=scan)
    loss = lambda m: m.loss(tokens, labels, order, dropout_rng=jax.random.key(7))[0]  # noqa: E731
    return nnx.value_and_grad(loss)(m)

  (scanned, grads), (looped, loop_grads) = loss_and_grads(True), loss_and_grads(False)
  np.testing.assert_allclose(looped, scanned, rtol=1e-6)
  scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads))  # float32 order noise, relative to it
  for a, b in zip(jax.tree.leaves(loop_grads), jax.tree.leaves(grads), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5 * scale, rtol=1e-5)


def test_conversion_round_trip(tiny, fixtures, tmp_path):
  """The golden state dict converts to exactly the parameters of the model built from it, through an Orbax
  checkpoint that load_model restores."""
  name, spec, model, config = tiny
  path = fixture_file(fixtures, f"{name}_tiny.safetensors")
  assert detect_family(open_source(path)) is spec
  directory = convert_checkpoint(path, tmp_path / "ckpt", config, progress=False)
  restored = checkpoint.load_model(directory, family=name)
  assert restored.config == config
  expected, _ = convert_params(path, config, progress=False)
  jax.tree.map(np.testing.assert_array_equal, checkpoint.model_params(restored), expected)
  jax.tree.map(np.testing.assert_array_equal, checkpoint.model_params(model), expected)


def test_forward_flops_match_xla(tiny):
  """The analytic count (used for MFU) against XLA's cost analysis of the teacher-forced forward: the same
  matmuls, so within the share of non-matmul work (norms, softmax, elementwise) at these tiny sizes. One layer:
  XLA's cost analysis counts a scanned body once, whatever the trip count."""
  _, spec, _, config = tiny
  config = dataclasses.replace(config, n_layer=1)
  n = config.num_tokens
  with sharding.model_context():
    graphdef, state = nnx.split(nnx.eval_shape(lambda: spec.build(config)))
    forward = jax.jit(
      lambda s: nnx.merge(graphdef, s)(
        jnp.zeros((1, n), jnp.int32), jnp.zeros((1,), jnp.int32), jnp.arange(n, dtype=jnp.int32)[None]
      )
    )
    analysis = forward.lower(state).compile().cost_analysis()
  xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
  ours = spec.forward_flops(config)
  print(f"{spec.name}: analytic {ours:.4g} vs XLA {xla:.4g} FLOPs ({ours / xla:.3f})")
  assert 0.8 * xla <= ours <= 1.05 * xla, (ours, xla)
