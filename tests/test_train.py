"""Training: schedules and the skip rule by hand, mesh and multi-process equivalence, exact resume after SIGKILL,
damaged checkpoints, resharded restore, and learning the synthetic planted structure.

Every run uses randar:runlocal shrunk by ``OVERRIDES`` (the same flags drive the subprocesses).
"""

import math
import os
import pathlib
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randar_jax import checkpoint, families, sharding
from randar_jax.config_io import load_config
from randar_jax.data.pipeline import Loader
from randar_jax.train import loop, optim
from randar_jax.train.checkpointing import Checkpointer, CheckpointError
from randar_jax.train.metrics import read_metrics
from randar_jax.train.optim import OptimConfig
from randar_jax.train.train import Trainer, select_batch

REPO = pathlib.Path(__file__).resolve().parents[1]
OVERRIDES = {
  "model.dim": 64,
  "model.grid_size": 4,
  "model.vocab_size": 64,
  "total_steps": 300,
  "batch_size": 8,
  "log_every": 1,
  "ckpt_every": 3,
  "keep_checkpoints": 3,
  "sample.every": 0,
  "eval.every": 0,
  "optim.lr": 3e-3,
  "optim.warmup_steps": 2,
  "optim.skip_after": 2,
  "data.synthetic.num_records": 512,
}
STEPS = 5  # mesh / multi-process comparisons (of a 300-step schedule)
RESUME_STEPS = 8  # the SIGKILL run: checkpoints at 3 and 6, killed after 5


def tiny_config(family="randar", **extra):
  config = load_config(f"{family}:runlocal")
  for key, value in {**OVERRIDES, **extra}.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def cli_flags(**extra) -> list[str]:
  return [f"--config.{k}={v}" for k, v in {**OVERRIDES, **extra}.items()]


def run_launcher(workdir, *flags, env_extra=None):
  """``python -m randar_jax.train`` in a subprocess (this session's 8 fake devices unless env_extra says otherwise)."""
  env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest", **(env_extra or {})}
  cmd = [
    sys.executable,
    "-m",
    "randar_jax.train",
    "--config=randar:runlocal",
    f"--workdir={workdir}",
    "--no_progress",
    *flags,
  ]
  return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def make_trainer(config, mesh, **optim_overrides):
  model_config = families.config_from_dict(config.model.to_dict())
  optim_config = OptimConfig.from_dict({**config.optim.to_dict(), **optim_overrides})
  return Trainer.create(model_config, optim_config, config.total_steps, mesh, config.seed), model_config


def make_loader(config, model_config, mesh):
  return Loader(loop.make_source(config.data, model_config), loop.pipeline_config(config), mesh)


def run_steps(trainer, state, loader, steps):
  losses = []
  for _ in range(steps):
    state, metrics = trainer.train_step(state, next(loader))
    losses.append(metrics["loss"])
  return state, [float(x) for x in jax.device_get(losses)]


# ---- schedules and the skip rule, by hand ------------------------------------------------------------------


def test_randar_and_rar_schedules_match_the_recipes():
  randar = optim.learning_rate(OptimConfig(), 360_000)  # docs/randar.md section 7
  for t, expected in [
    (0, 0.0),
    (1, 4e-4 / 50_000),
    (25_000, 2e-4),
    (50_000, 4e-4),
    (205_000, 4e-4 * (0.05 + 0.95 * 0.5)),
    (360_000, 4e-4 * 0.05),
    (400_000, 4e-4 * 0.05),
  ]:
    np.testing.assert_allclose(float(randar(t)), expected, rtol=1e-6, atol=1e-12, err_msg=str(t))
  t = 100_000  # cosine at an arbitrary point: 4e-4 (0.05 + 0.95/2 (1 + cos(pi 50k / 310k)))
  np.testing.assert_allclose(
    float(randar(t)), 4e-4 * (0.05 + 0.475 * (1 + math.cos(math.pi * 50_000 / 310_000))), rtol=1e-6
  )
  rar = optim.learning_rate(
    OptimConfig(b2=0.96, weight_decay=0.03, warmup_steps=62_500, end_lr=1e-5, skip_threshold=None), 250_000
  )  # docs/rar.md 6.3
  for t, expected in [(0, 0.0), (31_250, 2e-4), (62_500, 4e-4), (156_250, 1e-5 + 3.9e-4 * 0.5), (250_000, 1e-5)]:
    np.testing.assert_allclose(float(rar(t)), expected, rtol=1e-6, atol=1e-12, err_msg=str(t))
  linear = optim.learning_rate(OptimConfig(schedule="linear", warmup_steps=10, end_lr=0.0, lr=1.0), 110)
  constant = optim.learning_rate(OptimConfig(schedule="constant", warmup_steps=0, lr=1.0), 110)
  assert [float(linear(t)) for t in (5, 10, 60, 110)] == [0.5, 1.0, 0.5, 0.0]
  assert float(constant(0)) == float(constant(1000)) == 1.0
  with pytest.raises(ValueError, match="unknown optim config keys"):
    OptimConfig.from_dict({"lr": 1.0, "betas": 2})


def toy_problem():
  """Parameters with a stacked 'layers' subtree (2 layers) and RandAR's q/k/v split; hand-made gradients."""
  params = {
    "emb": jnp.array([[1.0, -2.0]]),
    "norm": jnp.array([0.5, 0.5]),
    "layers": {
      "attention": {"wq": jnp.ones((2, 2)), "wk": jnp.ones((2, 2)), "wv": jnp.ones((2, 2))},
      "w1": jnp.ones((2, 2)),
    },
  }
  grads = {
    "emb": jnp.array([[3.0, 4.0]]),
    "norm": jnp.zeros(2),  # 5
    "layers": {
      "attention": {
        "wq": jnp.array([[1.0, 0.0], [0.0, 0.0]]),  # layer 0: |(1, 2, 2)| = 3
        "wk": jnp.array([[0.0, 2.0], [0.0, 0.0]]),  # layer 1: 0
        "wv": jnp.array([[2.0, 0.0], [0.0, 0.0]]),
      },
      "w1": jnp.array([[0.0, 0.0], [3.0, 4.0]]),
    },
  }  # layer 0: 0, layer 1: 5
  mask = {"emb": True, "norm": False, "layers": {"attention": {"wq": True, "wk": True, "wv": True}, "w1": True}}
  return params, grads, mask


def test_skip_statistic_counts_original_tensors():
  _, grads, _ = toy_problem()
  assert float(optim.tensor_norm_sum(grads, "wq+wk+wv")) == pytest.approx(13.0)  # 5 + 3 + 0 + 0 + 5
  unfused = 5 + 1 + 2 + 2 + 5
  assert float(optim.tensor_norm_sum(grads, "")) == pytest.approx(unfused)
  clipped, norm = optim.clip(grads, 1.0)
  assert float(norm) == pytest.approx(math.sqrt(59))
  assert float(optim.tensor_norm_sum(clipped, "wq+wk+wv")) == pytest.approx(13 / (math.sqrt(59) + 1e-6), rel=1e-6)


def test_skip_rule_keeps_params_and_moments_while_the_schedule_advances():
  params, grads, mask = toy_problem()
  cfg = OptimConfig(
    lr=0.1, warmup_steps=0, schedule="constant", weight_decay=0.05, clip_norm=None, skip_threshold=10.0, skip_after=100
  )
  tx = optim.transform(cfg, mask)
  state0 = tx.init(params)
  update = jax.jit(lambda p, s, g, t: optim.update(cfg, tx, p, s, g, t, 1000))
  # Before iteration 100 the update is applied (statistic 13 >= 10 notwithstanding): first Adam step by hand,
  # p - lr (g / (|g| + eps) + wd p [decayed]).
  new, state1, stats = update(params, state0, grads, jnp.int32(99))
  assert not bool(stats["skipped"]) and float(stats["grad_norm_sum"]) == pytest.approx(13.0)
  expected = jax.tree.map(
    lambda p, g, m: p - 0.1 * (g / (jnp.abs(g) + 1e-8) + (0.05 * p if m else 0.0)), params, grads, mask
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new, expected)
  assert int(state1[0].count) == 1
  # From iteration 100 on it is skipped: parameters and optimizer state (moments and count) untouched ...
  kept, state2, stats = update(new, state1, grads, jnp.int32(100))
  assert bool(stats["skipped"])
  jax.tree.map(np.testing.assert_array_equal, (kept, state2), (new, state1))
  # ... while a small gradient goes through, with the lr of its own iteration.
  small = jax.tree.map(lambda g: g / 10, grads)
  moved, state3, stats = update(kept, state2, small, jnp.int32(101))
  assert not bool(stats["skipped"]) and int(state3[0].count) == 2 and float(stats["lr"]) == pytest.approx(0.1)
  # EMA follows only applied updates.
  ema = optim.ema_update(params, moved, 0.9, stats["skipped"])
  np.testing.assert_allclose(ema["emb"], 0.9 * params["emb"] + 0.1 * moved["emb"], rtol=1e-6)
  np.testing.assert_array_equal(optim.ema_update(params, moved, 0.9, jnp.bool_(True))["emb"], params["emb"])


def test_randar_decay_mask_reaches_the_optimizer(randar_tiny):
  model, _ = randar_tiny
  mask = model.weight_decay_mask()
  assert mask["tok_embeddings"] and mask["pos_instruct_embeddings"] and mask["layers"]["attention"]["wq"]
  assert not mask["norm"]["scale"] and not mask["layers"]["ffn_norm"]["scale"]


# ---- sharded training --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
  """5 steps on one device from a fresh state: (config, model_config, host initial state, losses, trainer, state)."""
  config = tiny_config()
  mesh = sharding.build_mesh(devices=jax.devices()[:1])
  trainer, model_config = make_trainer(config, mesh)
  state = trainer.init()
  initial = jax.device_get(state)
  loader = make_loader(config, model_config, mesh)
  state, losses = run_steps(trainer, state, loader, STEPS)
  return config, model_config, initial, losses, trainer, state, loader


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_meshes_give_the_single_device_losses(reference, shape):
  """Tolerance: relative 2e-6 (float32, highest precision; measured ~1e-7, from reduction order)."""
  config, model_config, initial, losses, *_ = reference
  mesh = sharding.build_mesh(dict(zip(sharding.MESH_AXES, shape)))
  trainer, _ = make_trainer(config, mesh)
  if shape == (2, 2, 2):
    state = trainer.init()  # created sharded by one jitted program: same values as on one device
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7, atol=0), jax.device_get(state), initial)
  else:
    state = jax.device_put(initial, trainer.shardings)
  w1 = state.params["layers"]["feed_forward"]["w1"]
  mu = state.opt_state[0].mu["layers"]["feed_forward"]["w1"]
  expected = sharding.named_sharding(mesh, ("layers", "embed", "mlp"))
  assert w1.sharding.is_equivalent_to(expected, 3) and mu.sharding.is_equivalent_to(expected, 3)
  loader = make_loader(config, model_config, mesh)
  state, got = run_steps(trainer, state, loader, STEPS)
  loader.close()
  print(f"mesh {shape}: max relative loss difference {np.max(np.abs(np.subtract(got, losses)) / losses):.2e}")
  np.testing.assert_allclose(got, losses, rtol=2e-6)
  assert state.params["layers"]["feed_forward"]["w1"].sharding.is_equivalent_to(expected, 3)


def test_gradient_accumulation_matches_the_full_batch(reference):
  """Without dropout, 2 micro-batches give the full batch's loss and gradients (relative 1e-5)."""
  _, _, initial, *_ = reference
  config = tiny_config(
    **{
      "model.token_dropout": 0.0,
      "model.resid_dropout": 0.0,
      "model.ffn_dropout": 0.0,
      "model.class_dropout_prob": 0.0,
    }
  )
  mesh = sharding.build_mesh(devices=jax.devices()[:1])
  results = []
  for accum in (1, 2):
    trainer, model_config = make_trainer(config, mesh, grad_accum=accum)
    loader = make_loader(config, model_config, mesh)
    batch = select_batch(next(loader))
    loader.close()
    with sharding.model_context(mesh):
      results.append(jax.jit(trainer._grads)(initial.params, batch, None))
  (loss1, acc1, g1), (loss2, acc2, g2) = results
  np.testing.assert_allclose(loss2, loss1, rtol=1e-6)
  np.testing.assert_allclose(acc2, acc1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), g2, g1)


def test_two_processes_train_like_one(reference, tmp_path):
  """Two JAX processes (gloo CPU collectives, one device each) give the one-device losses (relative 2e-6), and
  each process checkpoints its own data-iterator state; process 0 writes the logs."""
  import portpicker

  losses = reference[3]
  port = portpicker.pick_unused_port()
  env = {"XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  procs = [
    run_launcher(
      tmp_path,
      f"--coordinator=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={i}",
      "--cpu_devices=1",
      f"--stop_at={STEPS}",
      *cli_flags(),
      env_extra=env,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=240)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), outputs
  got = [r["loss"] for r in read_metrics(tmp_path)]
  print(f"2 processes: max relative loss difference {np.max(np.abs(np.subtract(got, losses)) / losses):.2e}")
  np.testing.assert_allclose(got, losses, rtol=2e-6)
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(os.listdir(tmp_path / str(STEPS) / "data"))


# ---- checkpoints and exact resume --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent compilation cache shared by the launcher subprocesses below (they run the same programs)."""
  return {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, compile_cache):
  """8 steps of the launcher in one go (8 fake devices): (workdir, logged rows)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  proc = run_launcher(workdir, f"--stop_at={RESUME_STEPS}", *cli_flags(), env_extra=compile_cache)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out
  return workdir, read_metrics(workdir)


def test_resume_after_sigkill_is_bit_identical(uninterrupted, compile_cache, tmp_path):
  _, rows = uninterrupted
  killed = run_launcher(tmp_path, "--preempt_at=5", *cli_flags(), env_extra=compile_cache)  # between ckpts 3 and 6
  out = killed.communicate(timeout=240)[0]
  assert killed.returncode == -signal.SIGKILL, out
  assert Checkpointer(tmp_path).steps() == [3] and len(read_metrics(tmp_path)) == 5
  resumed = run_launcher(tmp_path, f"--stop_at={RESUME_STEPS}", *cli_flags(), env_extra=compile_cache)
  out = resumed.communicate(timeout=240)[0]
  assert resumed.returncode == 0 and "resuming from step 3" in out, out
  got = read_metrics(tmp_path)
  assert [r["step"] for r in got] == list(range(1, 9))
  assert [r["loss"] for r in got] == [r["loss"] for r in rows]  # bit for bit (JSON keeps every bit)
  assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in rows]
  assert (tmp_path / "loss.png").stat().st_size > 0 and list((tmp_path / "tb").iterdir())


def test_damaged_checkpoint_falls_back_with_a_warning(uninterrupted, tmp_path):
  import shutil

  source, _ = uninterrupted
  workdir = tmp_path / "run"
  shutil.copytree(source, workdir)
  config = tiny_config()
  trainer, model_config = make_trainer(config, sharding.build_mesh())
  ckpt = Checkpointer(workdir)
  assert ckpt.steps() == [3, 6, 8]
  files = [p for p in (workdir / "8" / "params").rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 2)
  loader = make_loader(config, model_config, trainer.mesh)
  with pytest.warns(RuntimeWarning, match="checkpoint 8 .* is damaged .* moved to"):
    state = ckpt.restore_latest(trainer, loader)
  assert int(state.step) == 6 and ckpt.steps() == [3, 6] and ckpt.damaged_steps() == ["8"]
  direct = Checkpointer(source).restore(6, trainer, loader)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(direct.params))
  (workdir / "6" / "opt_state" / "_METADATA").write_text("{truncated")
  (workdir / "3" / "data" / "process_0-of-1.json").write_text("{")
  with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no good checkpoint"):
    ckpt.restore_latest(trainer, loader)
  loader.close()


def test_restore_onto_another_mesh_and_load_model(uninterrupted):
  workdir, _ = uninterrupted
  config = tiny_config()
  mesh = sharding.build_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  trainer, model_config = make_trainer(config, mesh)
  loader = make_loader(config, model_config, mesh)
  state = Checkpointer(workdir).restore(RESUME_STEPS, trainer, loader)
  loader.close()
  wq = state.params["layers"]["attention"]["wq"]
  assert wq.sharding.is_equivalent_to(sharding.named_sharding(mesh, ("layers", "embed", "heads", "head_dim")), 4)
  model = checkpoint.load_model(workdir, family="randar")  # a training workdir is a model checkpoint
  jax.tree.map(
    np.testing.assert_array_equal, jax.device_get(checkpoint.model_params(model)), jax.device_get(state.params)
  )
  with pytest.raises(ValueError, match="different setup.*model.dim"):
    loop.check_resumable(Checkpointer(workdir), {**model_config.to_dict(), "dim": 128}, config.to_dict())
  with pytest.raises(ValueError, match="different setup.*batch_size"):
    loop.check_resumable(Checkpointer(workdir), model_config.to_dict(), {**config.to_dict(), "batch_size": 16})


# ---- learning ----------------------------------------------------------------------------------------------


def test_learns_the_synthetic_structure_well_below_the_unigram_entropy(reference):
  """The reference run continued to 300 steps of batch 8 on planted-structure codes (V=64, 16 tokens, noise 0.1):
  the loss falls from ln 64 = 4.16 nats (the data's unigram entropy is ~4.1) towards the floor (~0.73 nats)."""
  config, model_config, _, losses, trainer, state, loader = reference
  source = loader.source
  codes = np.concatenate([source[i]["codes"].ravel() for i in range(512)])
  counts = np.bincount(codes, minlength=model_config.vocab_size) / codes.size
  unigram = float(-(counts[counts > 0] * np.log(counts[counts > 0])).sum())
  state, more = run_steps(trainer, state, loader, config.total_steps - STEPS)
  loader.close()
  final = float(np.mean(more[-20:]))
  print(f"unigram entropy {unigram:.3f}, floor {source.token_entropy():.3f}, loss {losses[0]:.3f} -> {final:.3f}")
  assert int(state.step) == config.total_steps
  assert source.token_entropy() - 0.05 < final < 0.5 * unigram


def test_rar_trains_with_the_same_trainer():
  """The rar recipe (same schema) and the RAR model train through the same Trainer: its decay mask, no skip rule,
  cosine to an absolute end lr. Dropout off here only to keep the compile short."""
  config = tiny_config(
    "rar",
    **{"model.dropout": 0.0, "model.attn_dropout": 0.0, "model.dim": 64, "model.grid_size": 4, "model.vocab_size": 64},
  )
  mesh = sharding.build_mesh(devices=jax.devices()[:1])
  trainer, model_config = make_trainer(config, mesh)
  assert model_config.to_dict()["family"] == "rar" and trainer.optim.skip_threshold is None
  loader = make_loader(config, model_config, mesh)
  state, losses = run_steps(trainer, trainer.init(), loader, 40)
  loader.close()
  assert np.mean(losses[-5:]) < losses[0] - 0.5 and int(state.skipped) == 0
  assert float(optim.learning_rate(trainer.optim, config.total_steps)(config.total_steps)) == pytest.approx(1e-5)
