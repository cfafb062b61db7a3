"""RAR decoding through the shared engine: parity with the original generate(), prefill + steps vs the full
forward, random-order sampling, the pow-cosine guidance schedule, compile reuse, bad input, the sample CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixture_file, float32_atol
from randar_jax import sharding
from randar_jax.decode import plan as plan_lib
from randar_jax.decode import rar as rar_decode
from randar_jax.decode.rar import generate
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.models.rar import RARConfig
from randar_jax.utils.compiles import compile_events


@pytest.fixture(scope="module")
def golden(fixtures):
  data = np.load(fixture_file(fixtures, "rar_tiny_generate.npz"))
  cases = sorted({k.split("/")[0] for k in data})
  return {c: {k.split("/", 1)[1]: data[k] for k in data if k.startswith(c + "/")} for c in cases}


def _settings(case):
  return dict(
    sampling=Sampling.make(float(case["randomize_temperature"])),
    guidance=Guidance.from_rar(float(case["guidance_scale"]), float(case["guidance_scale_pow"])),
  )


def test_generate_matches_original(rar_tiny, golden):
  model, config = rar_tiny
  assert golden, "the fixture holds no generation case"
  for name, case in golden.items():
    out = generate(model, case["class_labels"], jax.random.key(0), trace=True, **_settings(case))
    np.testing.assert_array_equal(out.tokens, case["generated_ids"], err_msg=name)
    raw = np.asarray(out.trace.raw)  # (B, branches, N, V) -> original (branches * B, N, V)
    raw = np.transpose(raw, (1, 0, 2, 3)).reshape((-1,) + raw.shape[2:])
    assert raw.shape == case["step_logits_raw"].shape, name
    np.testing.assert_allclose(raw, case["step_logits_raw"], atol=1e-4, rtol=1e-4, err_msg=name)
    # guided logits: the original's documented rule on its own raw logits (float64)
    ref = case["step_logits_raw"].astype(np.float64)
    g, p, b = float(case["guidance_scale"]), float(case["guidance_scale_pow"]), len(case["class_labels"])
    if g != 0:
      n = config.num_tokens
      cfg = (g - 1) * (1 - np.cos((np.arange(n) / n) ** p * np.pi)) / 2 + 1
      ref = ref[b:] + (ref[:b] - ref[b:]) * cfg[None, :, None]
    np.testing.assert_allclose(out.trace.guided, ref, atol=1e-4, rtol=1e-4, err_msg=name)
    assert (np.asarray(out.order) == np.arange(config.num_tokens)).all(), "RAR samples in raster order"


def test_plan_is_prefill_then_single_steps():
  n = 256
  plan = rar_decode.make_plan(n)
  assert plan.cache_slots == 264 and plan.num_forwards == n and plan.max_queries == 1
  first = plan.segments[0]
  assert (first.width, first.start, first.kinds, first.out_pos, first.out_gen) == (
    2,
    (0,),
    ((plan_lib.CLS, plan_lib.QUERY),),
    ((1,),),
    ((0,),),
  )
  starts = [s for seg in plan.segments[1:] for s in seg.start]
  gens = [g for seg in plan.segments[1:] for row in seg.gens for g in row]
  assert starts == list(range(2, n + 1)) and gens == list(range(n - 1))  # token t - 1 fed at slot t + 1
  assert all(seg.width == 1 for seg in plan.segments[1:])
  assert [g for seg in plan.segments for row in seg.out_gen for g in row] == list(range(n))
  assert all(s + seg.width <= seg.window for seg in plan.segments for s in seg.start)
  assert [seg.window for seg in plan.segments] == sorted(seg.window for seg in plan.segments)


@pytest.mark.parametrize("order", ["raster", "random"])
def test_prefill_and_steps_equal_the_full_forward(rar_tiny, order):
  """Every cached step's logits equal the teacher-forced forward on the sampled tokens (same order)."""
  model, config = rar_tiny
  labels = np.array([0, 3, config.num_classes - 1, 5])
  out = generate(model, labels, jax.random.key(1), order=order, sampling=Sampling.make(1.0), guidance=None, trace=True)
  teacher = model(out.tokens, jnp.asarray(labels), out.order)
  np.testing.assert_allclose(out.trace.guided, teacher, atol=float32_atol(teacher, ulps=32))
  np.testing.assert_array_equal(
    np.sort(np.asarray(out.order), axis=1), np.broadcast_to(np.arange(config.num_tokens), out.order.shape)
  )
  if order == "random":
    assert len({tuple(o) for o in np.asarray(out.order)}) == len(labels), "one random order per sample"
  np.testing.assert_array_equal(
    np.take_along_axis(np.asarray(out.tokens), np.asarray(out.order), axis=1), out.tokens_in_order
  )


def test_pow_cosine_guidance_values():
  """docs/rar.md 7.2: cfg at t = 0/64/128/192/255 for the per-size defaults (2 decimals), and the exact formula."""
  table = {
    "B": [1.00, 1.02, 1.80, 7.40, 16.0],
    "L": [1.00, 1.03, 2.09, 7.96, 15.5],
    "XL": [1.00, 1.22, 2.64, 5.29, 6.9],
    "XXL": [1.00, 1.60, 3.79, 6.63, 8.0],
  }
  steps = np.array([0, 64, 128, 192, 255])
  for variant, expected in table.items():
    settings = rar_decode.default_settings(RARConfig.variant(variant))
    sampling, guidance = settings.sampling, settings.guidance
    scales = np.asarray([float(guidance.scale(jnp.float32(t / 256))) for t in steps])
    np.testing.assert_allclose(scales, expected, atol=0.011, err_msg=variant)
    g, p = guidance.end, guidance.power
    np.testing.assert_allclose(scales, (g - 1) * (1 - np.cos(np.pi * (steps / 256) ** p)) / 2 + 1, rtol=1e-5)
    assert sampling.temperature == {"B": 1.0}.get(variant, 1.02)
  demo = Guidance.parse("powcos:4,0")  # p = 0: constant g (0 ** 0 = 1), as the README demo
  assert float(demo.scale(jnp.float32(0.0))) == pytest.approx(4.0)
  assert Guidance.parse("powcos:0,2.75") is None and Guidance.from_rar(0.0, 1.0) is None  # g == 0: CFG off
  assert Guidance.from_rar(1.0, 2.0) is not None  # g == 1 still doubles the batch


def test_decode_compiles_once_per_shape_and_reuses_the_cache(rar_tiny):
  model, config = rar_tiny
  labels = np.arange(3) % config.num_classes
  first = generate(model, labels, jax.random.key(0), guidance=Guidance.from_rar(4.0, 2.0))
  with compile_events() as compiles:
    out = generate(
      model,
      labels[::-1],
      jax.random.key(1),
      guidance=Guidance.from_rar(7.5, 1.2),
      sampling=Sampling.make(0.7),
      cache=first.cache,
    )
    generate(model, labels, jax.random.key(2), guidance=Guidance.from_rar(2.0, 0.0), cache=out.cache)
  assert compiles.count == 0, "same (batch, guidance mode) must reuse the compiled loop"
  assert out.cache.v.shape == (
    config.n_layer,
    6,
    config.n_head,
    rar_decode.make_plan(config.num_tokens).cache_slots,
    config.head_dim,
  )


def test_sharded_decode_matches_original(rar_tiny, golden):
  """Batch sharded over 8 devices: greedy rows reproduce the original's tokens (labels repeat the fixture's)."""
  model, _ = rar_tiny
  mesh = sharding.build_mesh({"data": 8})
  assert golden, "the fixture holds no generation case"
  for name, case in golden.items():
    labels = np.resize(case["class_labels"], 8)
    with sharding.model_context(mesh):
      out = generate(
        model, jax.device_put(labels, sharding.named_sharding(mesh, ("batch",))), jax.random.key(9), **_settings(case)
      )
    np.testing.assert_array_equal(out.tokens, np.resize(case["generated_ids"], out.tokens.shape), err_msg=name)
    assert len(out.cache.k.sharding.device_set) == 8, name


def test_bad_input_is_rejected_before_compiling(rar_tiny):
  model, config = rar_tiny
  key = jax.random.key(0)  # created outside the block: only the decoder's compilations are counted
  with compile_events() as compiles:
    with pytest.raises(ValueError, match=rf"class ids must be in \[0, {config.num_classes}\)"):
      generate(model, np.array([0, config.num_classes]), key)
    with pytest.raises(ValueError, match=f"one token per step: num_steps must be {config.num_tokens}"):
      generate(model, np.array([0]), key, num_steps=config.num_tokens // 2)
    with pytest.raises(ValueError, match="order must be 'raster', 'random'"):
      generate(model, np.array([0]), key, order="spiral")
    with pytest.raises(ValueError, match="permutation"):
      generate(model, np.array([0]), key, order=np.zeros((1, config.num_tokens), int))
    with pytest.raises(ValueError, match="1-D array of class ids"):
      generate(model, np.array([[0]]), key)
  assert compiles.count == 0


def test_sample_command(fixtures, rar_tiny, tmp_path, capsys):
  from randar_jax import cli
  from randar_jax.convert import convert_checkpoint

  _, config = rar_tiny
  ckpt = convert_checkpoint(fixture_file(fixtures, "rar_tiny.safetensors"), tmp_path / "c", config, progress=False)
  out = tmp_path / "samples"
  assert (
    cli.main(
      [
        "sample",
        ckpt,
        "--model",
        "rar",
        "--out",
        str(out),
        "--classes",
        "1,2,3",
        "--batch-size",
        "2",
        "--cfg",
        "powcos:3,1.5",
        "--temperature",
        "1e-6",
      ]
    )
    == 0
  )
  data = np.load(out / "tokens.npz")
  assert data["tokens"].shape == (3, config.grid_size, config.grid_size) and (out / "tokens.png").exists()
  assert (data["orders"] == np.arange(config.num_tokens)).all()
  with compile_events() as compiles:
    assert cli.main(["sample", ckpt, "--model", "randar", "--out", str(out), "--classes", "1"]) == 2
    assert "holds a 'rar' model, not 'randar'" in capsys.readouterr().err
    assert cli.main(["sample", ckpt, "--out", str(out), "--classes", "1", "--steps", "5"]) == 2
    assert "one token per step" in capsys.readouterr().err
    assert cli.main(["sample", ckpt, "--out", str(out), "--classes", str(config.num_classes)]) == 2
  assert compiles.count == 0
