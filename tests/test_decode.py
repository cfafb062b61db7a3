"""The compiled RandAR decode loop: parity with the original generate(), schedules, consistency, sharding."""

import contextlib
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fixture_file, float32_atol
from randar_jax import families, sharding
from randar_jax.decode import batched
from randar_jax.decode import plan as plan_lib
from randar_jax.decode.engine import Forced
from randar_jax.decode.randar import generate
from randar_jax.decode.sampling import Guidance, Sampling, filter_logits
from randar_jax.utils.compiles import compile_events

GREEDY = Sampling.make(top_k=1)


@pytest.fixture(scope="module")
def golden(fixtures):
  data = np.load(fixture_file(fixtures, "randar_tiny_generate.npz"))
  cases = sorted({k.split("/")[0] for k in data})
  return {c: {k.split("/", 1)[1]: data[k] for k in data if k.startswith(c + "/")} for c in cases}


def _run_case(model, case, **kwargs):
  return generate(
    model,
    case["cond"],
    jax.random.key(0),
    num_steps=int(case["num_inference_steps"]),
    order=case["token_order"],
    sampling=Sampling.make(float(case["temperature"]), int(case["top_k"]), float(case["top_p"])),
    guidance=Guidance.from_original(case["cfg_scales"]),
    trace=True,
    **kwargs,
  )


@pytest.mark.parametrize("buckets", ["default", None], ids=["bucketed", "padded"])
def test_generate_matches_original(randar_tiny, golden, buckets):
  model, _ = randar_tiny
  for name, case in golden.items():
    out = _run_case(model, case, buckets=buckets)
    np.testing.assert_array_equal(out.tokens, case["result_indices"], err_msg=name)
    np.testing.assert_array_equal(out.tokens_in_order, case["result_indices_in_generation_order"], err_msg=name)
    np.testing.assert_allclose(out.trace.guided, case["step_logits"], atol=2e-4, rtol=1e-4, err_msg=name)
    raw = np.asarray(out.trace.raw)  # (B, branches, N, V) -> original (branches * B, N, V)
    raw = np.transpose(raw, (1, 0, 2, 3)).reshape((-1,) + raw.shape[2:])
    np.testing.assert_allclose(raw, case["step_logits_raw"], atol=2e-4, rtol=1e-4, err_msg=name)
    counts = plan_lib.query_counts(case["token_order"].shape[1], int(case["num_inference_steps"]))
    assert counts == case["query_counts"].tolist(), name
    passes = plan_lib.forwards(case["token_order"].shape[1], counts)
    assert [f.length for f in passes] == case["fed_lengths"].tolist(), name
    assert [f.start for f in passes] == case["input_pos_start"].tolist(), name


def test_schedule_matches_original(fixtures):
  for case in json.loads(fixture_file(fixtures, "parallel_schedule.json").read_text())["cases"]:
    n, steps = case["block_size"], case["num_inference_steps"]
    counts = plan_lib.query_counts(n, steps)
    passes = plan_lib.forwards(n, counts)
    assert counts == case["query_counts"], (n, steps)
    assert len(counts) == case["num_forward_passes"] and sum(counts) == case["total_tokens"] == n
    assert [f.length for f in passes] == case["fed_lengths"], (n, steps)
    assert [f.start for f in passes] == case["input_pos_start"], (n, steps)
    for buckets in (None, plan_lib.default_buckets(n, steps)):
      plan = plan_lib.build_plan(n, steps, buckets=buckets)
      sampled = sorted(g for seg in plan.segments for row in seg.out_gen for g in row if g < n)
      assert sampled == list(range(n)), "every token, the last included, is sampled exactly once"
      assert max(s + seg.width for seg in plan.segments for s in seg.start) <= plan.cache_slots


def test_bucketed_plan_for_88_steps():
  plan = plan_lib.build_plan(256, 88, buckets=plan_lib.default_buckets(256, 88))
  per_width = {}
  for seg in plan.segments:
    per_width[seg.width] = per_width.get(seg.width, 0) + len(seg.start)
    assert all(s + seg.width <= seg.window for s in seg.start), "a forward must fit its attention window"
  assert per_width == {2: 24, 8: 20, 13: 44}
  assert plan.slots_fed == 780 and plan_lib.build_plan(256, 88).slots_fed == 1144
  assert [seg.window for seg in plan.segments] == sorted(seg.window for seg in plan.segments)


def test_fit_plan_pads_at_most_five_percent(fixtures):
  """The default plan: <= 5 % padding for every fixture schedule, each token sampled once, every chunk inside
  its segment's attention window, windows non-decreasing."""
  schedules = [
    (c["block_size"], c["num_inference_steps"])
    for c in json.loads(fixture_file(fixtures, "parallel_schedule.json").read_text())["cases"]
  ]
  for n, steps in schedules + [(256, 88)]:
    plan = plan_lib.fit_plan(n, steps)
    assert plan.slots_fed <= 1.05 * plan.slots_min, (n, steps, plan.slots_fed, plan.slots_min)
    assert plan.slots_min == sum(f.length for f in plan_lib.forwards(n, list(plan.counts)))
    sampled = sorted(g for seg in plan.segments for row in seg.out_gen for g in row if g < n)
    assert sampled == list(range(n)), (n, steps)
    assert all(s + seg.width <= seg.window <= plan.cache_slots for seg in plan.segments for s in seg.start)
    assert [seg.window for seg in plan.segments] == sorted(seg.window for seg in plan.segments)


def test_one_token_per_step_equals_teacher_forcing(randar_tiny, golden):
  """With one token per forward, every cached-decode logit equals the full forward on the decoded tokens."""
  model, config = randar_tiny
  one_per_step = [c for c in golden.values() if int(c["num_inference_steps"]) in (-1, c["token_order"].shape[1])]
  case = (one_per_step or list(golden.values()))[0]  # labels and order of a fixture case
  labels, order = case["cond"], case["token_order"]
  out = generate(
    model, labels, jax.random.key(1), num_steps=-1, order=order, sampling=Sampling.make(), guidance=None, trace=True
  )
  teacher = model(out.tokens, jnp.asarray(labels), jnp.asarray(order))
  np.testing.assert_allclose(out.trace.guided, teacher, atol=float32_atol(teacher, ulps=32))


def test_parallel_first_queries_match_teacher_forcing(randar_tiny, golden):
  """The first query of every parallel forward sees exactly the training layout before it."""
  model, _ = randar_tiny
  parallel = [c for c in golden.values() if 0 < int(c["num_inference_steps"]) < c["token_order"].shape[1]]
  if not parallel:
    pytest.skip("the fixture holds no case with several tokens per forward")
  case = parallel[0]
  steps, n = int(case["num_inference_steps"]), case["token_order"].shape[1]
  out = generate(
    model,
    case["cond"],
    jax.random.key(2),
    num_steps=steps,
    order=case["token_order"],
    sampling=Sampling.make(),
    guidance=None,
    trace=True,
  )
  teacher = np.asarray(model(out.tokens, jnp.asarray(case["cond"]), jnp.asarray(case["token_order"])))
  firsts = np.cumsum([0] + plan_lib.query_counts(n, steps))[:-1]
  np.testing.assert_allclose(
    np.asarray(out.trace.guided)[:, firsts], teacher[:, firsts], atol=float32_atol(teacher[:, firsts], ulps=32)
  )


def test_padded_and_bucketed_emit_identical_samples(randar_tiny):
  model, config = randar_tiny
  labels = np.arange(4) % config.num_classes
  kwargs = dict(num_steps=6, sampling=Sampling.make(temperature=1.0, top_p=0.9), guidance=Guidance.linear(1.0, 3.0))
  a = generate(model, labels, jax.random.key(5), buckets=None, **kwargs)
  b = generate(model, labels, jax.random.key(5), buckets="default", **kwargs)
  c = generate(model, labels, jax.random.key(5), buckets=(2, 3, 5), **kwargs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.tokens, c.tokens)
  d = generate(model, labels, jax.random.key(6), buckets=None, **kwargs)
  assert not np.array_equal(a.tokens, d.tokens), "another seed must give other samples"


def test_decode_compiles_once_per_shape(randar_tiny):
  model, config = randar_tiny
  labels = np.arange(3) % config.num_classes
  generate(model, labels, jax.random.key(0), num_steps=5, guidance=Guidance.linear(1.0, 4.0))
  with compile_events() as compiles:
    out = generate(
      model,
      labels[::-1],
      jax.random.key(1),
      num_steps=5,
      guidance=Guidance.linear(2.0, 7.5),
      sampling=Sampling.make(temperature=0.7),
    )
    generate(model, labels, jax.random.key(2), num_steps=5, guidance=Guidance.constant(3.0), cache=out.cache)
  assert compiles.count == 0, "same (batch, steps, guidance mode) must reuse the compiled loop"


@pytest.mark.parametrize("devices", [1, 8])
def test_batches_compile_once(randar_tiny, devices):
  """A model whose parameters live on a mesh: the fresh KV cache of the first batch is committed where the
  program returns it, so the batches after the first (given the donated cache) reuse its executable, with the
  mesh active (data-sharded decode) or not (a model built on a mesh, sampled outside it)."""
  _, config = randar_tiny
  mesh = sharding.build_mesh({"data": devices}, devices=jax.devices()[:devices])
  with sharding.model_context(mesh):
    model = families.build(config)
  labels = np.arange(4 * devices) % config.num_classes
  kwargs = dict(batch_size=2 * devices, num_steps=min(5, config.num_tokens), guidance=Guidance.linear(1.0, 4.0))
  context = sharding.model_context(mesh) if devices > 1 else contextlib.nullcontext()
  with context:
    batches = batched.decode_batches(model, labels, **kwargs)
    jax.block_until_ready(next(batches).tokens)
    with compile_events() as compiles:
      jax.block_until_ready([b.tokens for b in batches])
  assert compiles.count == 0, "the second batch must reuse the first batch's compiled decode"


def test_prefix_continuation_equals_sequential_decode(randar_tiny):
  """Teacher-forcing a known prefix in one prefill continues exactly like decoding it token by token."""
  model, config = randar_tiny
  labels, n, m = np.array([1, 4]), config.num_tokens, config.num_tokens // 3
  full = generate(model, labels, jax.random.key(3), num_steps=-1, sampling=GREEDY)
  cont = generate(
    model,
    labels,
    jax.random.key(4),
    num_steps=-1,
    sampling=GREEDY,
    order=full.order,
    prefix=full.tokens_in_order[:, :m],
  )
  np.testing.assert_array_equal(cont.tokens_in_order, full.tokens_in_order)
  assert n - m > 0


def test_forced_tokens_are_kept(randar_tiny):
  model, config = randar_tiny
  n = config.num_tokens
  mask = np.zeros((2, n), bool)
  mask[0, [2, 5]] = True
  mask[1, [n - 1]] = True
  values = np.full((2, n), 7, np.int32)
  out = generate(
    model, np.array([0, 1]), jax.random.key(0), num_steps=4, forced=Forced(jnp.asarray(values), jnp.asarray(mask))
  )
  assert (np.asarray(out.tokens_in_order)[mask] == 7).all()


def test_sharded_decode_equals_single_device(randar_tiny):
  model, config = randar_tiny
  labels = np.arange(8) % config.num_classes
  kwargs = dict(num_steps=6, sampling=GREEDY, guidance=Guidance.linear(1.0, 4.0))
  single = generate(model, labels, jax.random.key(9), **kwargs)
  mesh = sharding.build_mesh({"data": 8})
  with sharding.model_context(mesh):
    sharded = generate(
      model, jax.device_put(labels, sharding.named_sharding(mesh, ("batch",))), jax.random.key(9), **kwargs
    )
  np.testing.assert_array_equal(single.tokens, sharded.tokens)
  assert len(sharded.cache.k.sharding.device_set) == 8


def test_bad_input_is_rejected_before_compiling(randar_tiny):
  model, config = randar_tiny
  key = jax.random.key(0)  # created outside the block: only the decoder's compilations are counted
  with compile_events() as compiles:
    with pytest.raises(ValueError, match=rf"class ids must be in \[0, {config.num_classes}\)"):
      generate(model, np.array([0, config.num_classes]), key)
    with pytest.raises(ValueError, match="num_steps must be in"):
      generate(model, np.array([0]), key, num_steps=0)
    with pytest.raises(ValueError, match="num_steps must be in"):
      generate(model, np.array([0]), key, num_steps=config.num_tokens + 1)
    with pytest.raises(ValueError, match="permutation"):
      generate(model, np.array([0]), key, num_steps=4, order=np.zeros((1, config.num_tokens), int))
    with pytest.raises(ValueError, match="malformed guidance"):
      Guidance.parse("1,2,3")
    with pytest.raises(ValueError, match="top_p must be"):
      Sampling.make(top_p=0.0)
  assert compiles.count == 0


def test_filters_match_numpy_reference():
  logits = jax.random.normal(jax.random.key(0), (3, 50)) * 3
  top_k = np.asarray(filter_logits(logits, Sampling.make(top_k=5)))
  assert (np.isfinite(top_k).sum(-1) == 5).all()
  kept = np.asarray(filter_logits(logits, Sampling.make(top_p=0.8)))
  ref = np.asarray(logits, np.float64)
  for row, out in zip(ref, kept):
    ranked = np.argsort(-row)
    probs = np.exp(row[ranked] - row.max())
    probs /= probs.sum()
    keep = np.concatenate([[True], np.cumsum(probs)[:-1] <= 0.8])
    np.testing.assert_array_equal(np.isfinite(out[ranked]), keep)
  scaled = filter_logits(logits, Sampling.make(temperature=2.0))
  np.testing.assert_allclose(scaled, logits / 2.0, rtol=1e-6)


def test_filters_without_sorting_match_sorted_reference():
  """Top-k then top-p by bisection equal the sort-based rule on a realistic vocabulary; ties at the k-th kept."""
  logits = np.asarray(jax.random.normal(jax.random.key(1), (8, 4096)) * 4, np.float32)
  for top_k, top_p in ((0, 0.9), (64, 0.95), (300, 0.5), (7, 1.0)):
    kept = np.isfinite(np.asarray(filter_logits(jnp.asarray(logits), Sampling.make(1.0, top_k, top_p))))
    for row, out in zip(logits.astype(np.float64), kept):
      ranked = np.argsort(-row)
      keep = np.arange(row.size) < (top_k or row.size)
      probs = np.where(keep, np.exp(row[ranked] - row.max()), 0.0)
      probs /= probs.sum()
      keep &= np.concatenate([[True], np.cumsum(probs)[:-1] <= top_p])
      np.testing.assert_array_equal(out[ranked], keep, err_msg=f"top_k {top_k}, top_p {top_p}")
  tied = jnp.asarray([[3.0, 1.0, 2.0, 2.0, 0.0]])
  np.testing.assert_array_equal(np.isfinite(filter_logits(tied, Sampling.make(top_k=2))), [[1, 0, 1, 1, 0]])


def test_guidance_schedules():
  g = Guidance.linear(1.0, 4.0)
  np.testing.assert_allclose([g.scale(t) for t in (0.0, 0.5, 1.0)], [1.0, 2.5, 4.0])
  rar_b = Guidance.pow_cosine(16.0, 2.75)  # docs/rar.md 7.2: 1.00 / 1.02 / 1.80 / 7.40 / 16.0 at t = 0/64/128/192/255
  np.testing.assert_allclose(
    [float(rar_b.scale(t / 256)) for t in (0, 64, 128, 192)], [1.0, 1.02, 1.80, 7.40], atol=0.01
  )
  assert Guidance.parse("none") is None and Guidance.parse("3").end == 3.0
  assert Guidance.parse("powcos:4,1.5").schedule == "pow_cosine"
  assert dataclasses.replace(g, start=2.0).start == 2.0


def test_sample_command(fixtures, randar_tiny, tmp_path, capsys):
  from randar_jax import cli
  from randar_jax.convert import convert_checkpoint

  _, config = randar_tiny
  ckpt = convert_checkpoint(fixture_file(fixtures, "randar_tiny.safetensors"), tmp_path / "c", config, progress=False)
  out = tmp_path / "samples"
  assert (
    cli.main(
      [
        "sample",
        ckpt,
        "--out",
        str(out),
        "--classes",
        "1,2,3",
        "--num-per-class",
        "2",
        "--steps",
        "4",
        "--cfg",
        "1,3",
        "--batch-size",
        "4",
        "--top-k",
        "5",
      ]
    )
    == 0
  )
  data = np.load(out / "tokens.npz")
  assert data["tokens"].shape == (6, config.grid_size, config.grid_size)
  np.testing.assert_array_equal(data["labels"], [1, 1, 2, 2, 3, 3])
  assert (out / "tokens.png").exists()
  with compile_events() as compiles:
    assert cli.main(["sample", ckpt, "--out", str(out), "--classes", str(config.num_classes)]) == 2
    assert "class ids must be in" in capsys.readouterr().err
    assert cli.main(["sample", ckpt, "--out", str(out), "--classes", "1", "--cfg", "1,2,x"]) == 2
    assert cli.main(["sample", ckpt, "--out", str(out), "--classes", "1", "--steps", "0"]) == 2
  assert compiles.count == 0
