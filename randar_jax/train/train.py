"""The sharded train state and the compiled train / eval steps, for any generator model.

    trainer = Trainer.create(model_config, OptimConfig.from_dict(config.optim), total_steps, mesh, seed=0)
    state = trainer.init()                          # parameters + optimizer state created directly sharded
    state, metrics = trainer.train_step(state, batch)   # jit, state donated; batch from data.pipeline.Loader
    metrics = trainer.eval_step(state, batch)

Only the generator contract is used: ``model.loss(**batch, dropout_rng=key, ordered=True)`` (tokens, labels, order)
-> (loss, logits (B, N, V) in generation order), ``model.weight_decay_mask()`` and the config, so RandAR and RAR
train with the same code. Parameters live in the state as the nested dict ``nnx.to_pure_dict`` gives (the layout
``checkpoint.save_params`` writes); ``nnx.merge(graphdef, params)`` rebuilds the model inside the step.

Iteration t uses dropout key ``fold_in(key(seed), t)`` and lr(t) from the global step, so a run is a pure
function of (config, data): resuming from a checkpoint reproduces the uninterrupted run bit for bit. Dropout bits
do not depend on the mesh (partitionable threefry), so every mesh computes the same losses up to reduction order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from randar_jax import families, sharding
from randar_jax.train import optim

BATCH_KEYS = ("tokens", "labels", "order")  # what model.loss takes (the pipeline emits these names)


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 (): iterations done (skipped updates included)
  params: dict  # nested dict of float32 arrays, as checkpoint.save_params stores
  opt_state: Any  # optax state of ``Trainer.tx``
  skipped: jax.Array  # int32 (): updates dropped by the skip rule so far
  ema: dict | None = None  # EMA of params when optim.ema_decay > 0


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
  """Static pieces of training: model structure, optimizer, mesh, shardings and the compiled steps."""

  model_config: Any
  optim: optim.OptimConfig
  total_steps: int
  mesh: Mesh
  seed: int
  graphdef: Any
  tx: optax.GradientTransformation
  shardings: TrainState  # NamedSharding per leaf
  abstract: TrainState  # ShapeDtypeStruct per leaf (with shardings): restore target

  @classmethod
  def create(
    cls, model_config, optim_config: optim.OptimConfig, total_steps: int, mesh: Mesh, seed: int = 0
  ) -> Trainer:
    with sharding.model_context(mesh):
      abstract_model = nnx.eval_shape(lambda: families.build(model_config, seed))
    graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)
    if jax.tree.leaves(rest):
      raise ValueError(
        f"training supports models whose state is all nnx.Param; {type(abstract_model).__name__} "
        f"also holds {list(nnx.to_pure_dict(rest))}"
      )
    tx = optim.transform(optim_config, abstract_model.weight_decay_mask())
    param_shardings = nnx.to_pure_dict(sharding.state_shardings(params, mesh))
    abstract_params = nnx.to_pure_dict(params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    opt_shardings = optax.tree_map_params(
      tx, lambda _, s: s, opt_abstract, param_shardings, transform_non_params=lambda _: replicated
    )
    ema = param_shardings if optim_config.ema_decay > 0 else None
    shardings = TrainState(replicated, param_shardings, opt_shardings, replicated, ema)
    abstract = TrainState(
      jax.ShapeDtypeStruct((), jnp.int32),
      abstract_params,
      opt_abstract,
      jax.ShapeDtypeStruct((), jnp.int32),
      abstract_params if ema else None,
    )
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    return cls(model_config, optim_config, total_steps, mesh, seed, graphdef, tx, shardings, abstract)

  # ---- state ------------------------------------------------------------------------------------------------

  def init(self) -> TrainState:
    """A fresh state, every leaf created on its devices by one jitted program (nothing gathered on one device)."""

    def init():
      params = nnx.to_pure_dict(nnx.state(families.build(self.model_config, self.seed), nnx.Param))
      ema = params if self.optim.ema_decay > 0 else None
      zero = jnp.zeros((), jnp.int32)
      return TrainState(zero, params, self.tx.init(params), zero, ema)

    with sharding.model_context(self.mesh):
      return jax.jit(init, out_shardings=self.shardings)()

  def model(self, params: Mapping) -> nnx.Module:
    return nnx.merge(self.graphdef, params)

  # ---- steps ------------------------------------------------------------------------------------------------

  def _loss(self, params, batch, key):
    loss, logits = self.model(params).loss(**batch, dropout_rng=key, ordered=True)
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == batch["tokens"]).astype(jnp.float32))
    return loss, accuracy

  def _grads(self, params, batch, key):
    """(loss, accuracy, grads) over the batch, in ``grad_accum`` micro-batches (mean of equal-sized parts)."""
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    k = self.optim.grad_accum
    if k == 1:
      (loss, accuracy), grads = grad_fn(params, batch, key)
      return loss, accuracy, grads

    def split(x):  # (B, ...) -> (k, B/k, ...); micro-batch i takes rows i, i+k, ... so shards stay local
      if x.shape[0] % k:
        raise ValueError(f"batch {x.shape[0]} does not split into grad_accum={k} micro-batches")
      x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
      return sharding.constrain(x, (None, "batch") + (None,) * (x.ndim - 2))

    def body(carry, inputs):
      i, micro = inputs
      (loss, accuracy), grads = grad_fn(params, micro, None if key is None else jax.random.fold_in(key, i))
      return jax.tree.map(jnp.add, carry, (loss, accuracy, grads)), None

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), jax.tree.map(split, batch)))
    return jax.tree.map(lambda x: x / k, total)

  def _train_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
    key = jax.random.fold_in(jax.random.key(self.seed), state.step)
    loss, accuracy, grads = self._grads(state.params, batch, key)
    params, opt_state, stats = optim.update(
      self.optim, self.tx, state.params, state.opt_state, grads, state.step, self.total_steps, loss
    )
    ema = state.ema
    if ema is not None:
      ema = optim.ema_update(ema, params, self.optim.ema_decay, stats["skipped"])
    state = TrainState(state.step + 1, params, opt_state, state.skipped + stats["skipped"].astype(jnp.int32), ema)
    return state, {"loss": loss, "accuracy": accuracy, **stats, "skipped_total": state.skipped}

  @functools.cached_property
  def compiled_train_step(self):
    """jit(state, batch) -> (state, metrics) with the state donated; batch holds exactly BATCH_KEYS."""
    return jax.jit(self._train_step, out_shardings=(self.shardings, None), donate_argnums=0)

  @functools.cached_property
  def compiled_eval_step(self):
    def evaluate(state, batch):
      loss, accuracy = self._loss(state.params, batch, None)
      return {"loss": loss, "accuracy": accuracy}

    return jax.jit(evaluate)

  def train_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
    """One iteration (compiled once per batch shape); ``state`` is donated: use the returned one."""
    with sharding.model_context(self.mesh):  # mesh and logical rules active while tracing
      return self.compiled_train_step(state, select_batch(batch))

  def eval_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> dict:
    """{'loss', 'accuracy'} without dropout."""
    with sharding.model_context(self.mesh):
      return self.compiled_eval_step(state, select_batch(batch))


def select_batch(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The batch entries the steps read: the model's inputs, without the per-example 'meta' (index, random)."""
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"a training batch needs {BATCH_KEYS}; missing {missing}")
  return {k: batch[k] for k in BATCH_KEYS}
