"""Parity of the RandAR transformer with the PyTorch original (randar_tiny_* fixtures, random weights).

Every size comes from the fixture files; the weights go through the real converter (conftest.randar_tiny).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixture_file, float32_atol
from randar_jax.models import rope


@pytest.fixture(scope="module")
def golden(fixtures):
  return dict(np.load(fixture_file(fixtures, "randar_tiny_forward.npz")))


@pytest.fixture(scope="module")
def forward(randar_tiny, golden):
  model, _ = randar_tiny
  logits, hidden = model(
    jnp.asarray(golden["idx"]), jnp.asarray(golden["cond"]), jnp.asarray(golden["token_order"]), return_hidden=True
  )
  return np.asarray(logits), np.asarray(hidden)


def test_rope_table_matches_original(randar_tiny, golden):
  model, config = randar_tiny
  table = rope.with_class_rows(model.rope_table())
  assert table.shape == golden["freqs_cis"].shape
  np.testing.assert_allclose(table, golden["freqs_cis"], atol=1e-6, rtol=0)
  assert not table[0].any(), "the class token's RoPE row must be all zeros"


def test_sequence_rope_rows_and_instruction_tokens(randar_tiny, golden):
  model, _ = randar_tiny
  args = jnp.asarray(golden["idx"]), jnp.asarray(golden["cond"]), jnp.asarray(golden["token_order"])
  x, cells = model.training_sequence(*args, include_last=True)
  np.testing.assert_allclose(rope.gather_rows(model.rope_table(), cells), golden["freqs_cis_sequence"], atol=1e-6)
  np.testing.assert_allclose(
    model.instruction_tokens(args[2]),
    golden["position_instruction_tokens"],
    atol=float32_atol(golden["position_instruction_tokens"]),
  )
  np.testing.assert_allclose(x, golden["input_sequence"], atol=float32_atol(golden["input_sequence"]))


def test_logits_match_original(forward, golden):
  logits, _ = forward
  assert logits.shape == golden["token_logits"].shape
  np.testing.assert_allclose(logits, golden["token_logits"], atol=1e-4, rtol=1e-4)


def test_hidden_states_match_original_per_layer(randar_tiny, forward, golden):
  model, config = randar_tiny
  _, hidden = forward
  layer_keys = sorted((k for k in golden if k.startswith("hidden_after_layer")), key=lambda k: int(k[18:]))
  assert len(layer_keys) == config.n_layer == hidden.shape[0]
  for i, key in enumerate(layer_keys):
    np.testing.assert_allclose(hidden[i], golden[key], atol=1e-4, rtol=1e-4, err_msg=key)
  np.testing.assert_allclose(model.norm(jnp.asarray(hidden[-1])), golden["hidden_after_final_norm"], atol=1e-4)


def test_loss_matches_original(randar_tiny, golden):
  model, _ = randar_tiny
  loss, _ = model.loss(jnp.asarray(golden["idx"]), jnp.asarray(golden["cond"]), jnp.asarray(golden["token_order"]))
  np.testing.assert_allclose(float(loss), float(golden["loss"]), atol=1e-5)
  targets = np.take_along_axis(golden["idx"], golden["token_order"], axis=1)
  np.testing.assert_array_equal(targets, golden["targets_in_order"])


def test_dropping_last_image_slot_changes_nothing(randar_tiny, forward, golden):
  """Training runs 2N slots (x_{N-1} predicts nothing); the logits equal the full 2N+1 forward."""
  model, _ = randar_tiny
  short = model(jnp.asarray(golden["idx"]), jnp.asarray(golden["cond"]), jnp.asarray(golden["token_order"]))
  np.testing.assert_allclose(short, forward[0], atol=float32_atol(forward[0]))
