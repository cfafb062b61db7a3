"""Training-step throughput of the RandAR transformer (forward + backward + AdamW), remat on and off.

    python benchmarks/bench_forward.py                                  # CPU-sized default: 12x512, batch 8
    python benchmarks/bench_forward.py --layers 24 --dim 1024 --heads 16 --batch 64 --dtype bfloat16  # RandAR-L

Prints one JSON line. ``tokens_per_s`` counts image tokens (grid**2 per image; the model runs 2 * grid**2
sequence slots per image), measured with the first ``--remat`` setting; ``results`` holds every setting.
``compile_s`` is the AOT compile time of the step (lower + compile), separate from the timed steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import optax
from flax import nnx

from benchmarks.common import add_model_args, each_setting, randar_config, report
from randar_jax import checkpoint, families, sharding
from randar_jax.models.randar import RandARConfig


def train_step_fn(graphdef, tx):
  def step(state, opt_state, tokens, labels, order, key):
    def loss_fn(state):
      return nnx.merge(graphdef, state).loss(tokens, labels, order, dropout_rng=key)[0]

    loss, grads = jax.value_and_grad(loss_fn)(state)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def measure(config: RandARConfig, batch: int, steps: int) -> dict:
  mesh = sharding.build_mesh()
  with sharding.model_context(mesh):
    model = jax.jit(lambda: nnx.split(families.build(config))[1])()  # initialised directly on device
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: families.build(config)))
    tx = optax.adamw(4e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = tx.init(model)
    key = jax.random.key(0)
    n = config.num_tokens
    tokens = jax.random.randint(key, (batch, n), 0, config.vocab_size)
    labels = jax.random.randint(key, (batch,), 0, config.num_classes)
    order = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(key, batch))
    step = train_step_fn(graphdef, tx)
    start = time.perf_counter()
    compiled = step.lower(model, opt_state, tokens, labels, order, key).compile()
    compile_s = time.perf_counter() - start
    times = []
    for i in range(steps + 1):  # the first step warms up allocations and is not counted
      start = time.perf_counter()
      model, opt_state, loss = compiled(model, opt_state, tokens, labels, order, jax.random.key(i))
      jax.block_until_ready(loss)
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times[1:])
  return {
    "remat": config.remat,
    "step_s": round(step_s, 4),
    "step_min_s": round(min(times[1:]), 4),
    "tokens_per_s": round(batch * n / step_s, 1),
    "compile_s": round(compile_s, 2),
    "loss": round(float(loss), 4),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_args(parser)
  args = parser.parse_args()
  base, settings = randar_config(args)
  results, first = each_setting(lambda config: measure(config, args.batch, args.steps), base, settings)
  params = checkpoint.param_count(checkpoint.abstract_params(base))
  report(
    {
      "tokens_per_s": first.get("tokens_per_s"),
      "compile_s": first.get("compile_s"),
      "params": params,
      "batch": args.batch,
      "config": {k: v for k, v in dataclasses.asdict(base).items() if k != "remat"},
      "results": results,
    }
  )


if __name__ == "__main__":
  main()
