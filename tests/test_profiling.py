"""jax.profiler hooks: --profile_steps of training, --profile of sample (utils/profiling.py)."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from randar_jax import cli
from randar_jax.utils import profiling


def traces(logdir) -> list[str]:
  return glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))


@pytest.mark.parametrize("spec, steps", [(None, None), ("", None), ("3", (3, 3)), ("2,5", (2, 5))])
def test_parse_steps(spec, steps):
  assert profiling.parse_steps(spec) == steps


@pytest.mark.parametrize("spec", ["a,b", "5,2", "0,3", "1,2,3"])
def test_parse_steps_refuses(spec):
  with pytest.raises(ValueError, match="--profile_steps"):
    profiling.parse_steps(spec)


def test_step_profiler_traces_the_chosen_steps_once(tmp_path):
  step = jax.jit(lambda x: x * 2.0 + 1.0, donate_argnums=0)
  profiler = profiling.StepProfiler((2, 3), tmp_path / "profile")
  x, started = jnp.zeros(4), []
  for done in range(5):
    profiler(done, x)
    started.append(profiler.active)
    x = step(x)
  profiler.close(x)
  assert started == [False, True, True, False, False]  # steps 2 and 3 (1-based) ran while tracing
  assert len(traces(tmp_path / "profile")) == 1


def test_trace_block_writes_a_trace(tmp_path, capsys):
  with profiling.trace(tmp_path / "t"):
    jax.block_until_ready(jax.jit(jnp.sin)(jnp.ones(3)))
  assert len(traces(tmp_path / "t")) == 1 and "profile written to" in capsys.readouterr().out
  with profiling.trace(None):  # no --profile: nothing written
    pass


def test_train_refuses_profile_steps_past_the_end(tmp_path, capsys):
  from randar_jax import config_io

  total = config_io.load_config("randar:runlocal").total_steps
  with pytest.raises(SystemExit) as e:
    cli.main(["train", "--config=randar:runlocal", f"--workdir={tmp_path}", f"--profile_steps=1,{total + 1}"])
  assert e.value.code == 2 and not os.listdir(tmp_path)
  err = capsys.readouterr().err.strip()
  assert err == f"randar-jax train: error: --profile_steps 1,{total + 1} ends after total_steps {total}"
