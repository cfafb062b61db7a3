"""The compiled decode loop shared by every generator: plan segments as ``lax.scan`` s over a KV cache.

A model adapter supplies ``chunk_logits(cache, tokens, row, window) -> (logits (B, branches, K, V), cache)``
for one forward pass described by a plan row (``window``: the static number of leading cache slots the
forward can see); the engine does the rest, identically for every model:

    guidance over branches -> sampling -> forced tokens -> scatter into ``tokens`` (generation order)

Everything here runs inside one ``jit``: one scan per plan segment (rows of equal chunk width), no Python
loop over steps at run time, no host synchronisation. Keys are ``fold_in(key, generation_index)`` per sampled
token, so results do not depend on how forwards are padded or grouped into segments.

A model family's ``generate`` validates on the host (:func:`validate`), builds its plan and calls
:func:`decode` with an *adapter* ``adapter(model, labels (B, branches), order (B, N), *extras) ->
chunk_logits`` (a module-level function). :class:`Program` holds (adapter, plan, trace) as its static
configuration and compiles once per (batch, guidance structure, sampling structure); compile counts are
measured with ``jax.monitoring`` (:mod:`randar_jax.utils.compiles`), not by trace counters. Guidance runs the
batch as interleaved branches per sample ([conditional, null class], or three for spatial guidance), so a
data-sharded batch keeps every branch of a sample on one device.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from randar_jax import sharding
from randar_jax.decode.plan import Plan
from randar_jax.decode.sampling import Guidance, Sampling, fold_in, per_row, sample, split
from randar_jax.models.attention import KVCache

ChunkLogits = Callable[..., tuple[jax.Array, object]]


class Forced(NamedTuple):
  """Tokens that must not be sampled: (B, N) values and mask, in generation order (zero-shot editing)."""

  tokens: jax.Array
  mask: jax.Array


class Trace(NamedTuple):
  """Per-forward logits, when asked for: (forwards, B, K, V) after guidance and per branch before it."""

  guided: jax.Array
  raw: jax.Array


@dataclasses.dataclass(frozen=True)
class DecodeOutput:
  tokens: jax.Array  # (B, N) raster order
  order: jax.Array  # (B, N) raster cell generated at each step
  tokens_in_order: jax.Array  # (B, N) generation order
  trace: Trace | None = None  # per-token logits (B, N, V), raw (B, branches, N, V), if asked
  cache: KVCache | None = None  # the cache buffer, to pass (donated) to the next call


def sample_queries(logits: jax.Array, sampling: Sampling, key: jax.Array, gens: jax.Array) -> jax.Array:
  """Samples logits (B, K, V) -> (B, K) with the key of query k folded with its generation index gens[k], so
  a token's draw depends only on (key, its generation index): not on how forwards are padded or grouped. ``key``:
  one key, or one per sample (B,) (then sample b's draws depend on its own key only)."""
  draw = lambda logits, gen: sample(logits, sampling, fold_in(key, gen))  # noqa: E731
  return jax.vmap(draw, in_axes=(1, 0), out_axes=1)(logits, gens)


def run(
  plan: Plan,
  chunk_logits: ChunkLogits,
  cache,
  tokens: jax.Array,
  key: jax.Array,
  sampling: Sampling,
  guidance: Guidance | None,
  forced: Forced | None = None,
  trace: bool = False,
):
  """Runs every forward of ``plan``. tokens (B, N + 1) int32 in generation order; column N is a write sink
  for padded query slots. Returns (tokens, cache, Trace | None)."""
  traces = []
  for segment in plan.segments:
    rows = {name: jnp.asarray(value) for name, value in segment.arrays().items()}

    def body(carry, row, window=segment.window):  # the segment's static attention window
      cache, tokens = carry
      logits, cache = chunk_logits(cache, tokens, row, window)  # (B, branches, K, V)
      guided = logits[:, 0] if guidance is None else guidance.combine(logits, row["first_query"], plan.num_tokens)
      new = sample_queries(guided, sampling, key, row["out_gen"])  # (B, K)
      if forced is not None:
        gen = jnp.minimum(row["out_gen"], plan.num_tokens - 1)
        keep = forced.mask[:, gen] & (row["out_gen"] < plan.num_tokens)
        new = jnp.where(keep, forced.tokens[:, gen], new)
      tokens = tokens.at[:, row["out_gen"]].set(new)
      return (cache, tokens), (Trace(guided, logits) if trace else None)

    (cache, tokens), ys = jax.lax.scan(body, (cache, tokens), rows)
    if trace:  # segments sample different numbers of queries: pad each to the plan's most
      pad = plan.max_queries - len(segment.out_pos[0])
      ys = Trace(*(jnp.pad(y, [(0, 0)] * (y.ndim - 2) + [(0, pad), (0, 0)]) for y in ys))
    traces.append(ys)
  if not trace:
    return tokens, cache, None
  return tokens, cache, Trace(*(jnp.concatenate([t[i] for t in traces]) for i in range(2)))


def collect_trace(plan: Plan, trace: Trace) -> Trace:
  """Per-token logits in generation order from a per-forward trace: (B, N, V) and (B, branches, N, V).

  Tokens that were fed as known (not sampled) get zeros.
  """
  n = plan.num_tokens + 1  # the last column collects padded queries
  out_gen = [row + (plan.num_tokens,) * (plan.max_queries - len(row)) for seg in plan.segments for row in seg.out_gen]
  out_gen = jnp.asarray(out_gen).reshape(-1)  # (forwards * K,)
  guided = jnp.moveaxis(trace.guided, 0, 1)  # (B, F, K, V)
  guided = guided.reshape(guided.shape[0], -1, guided.shape[-1])
  raw = jnp.moveaxis(trace.raw, 0, 2)  # (B, G, F, K, V)
  raw = raw.reshape(raw.shape[:2] + (-1, raw.shape[-1]))
  guided = jnp.zeros((guided.shape[0], n, guided.shape[-1]), guided.dtype).at[:, out_gen].set(guided)
  raw = jnp.zeros(raw.shape[:2] + (n, raw.shape[-1]), raw.dtype).at[:, :, out_gen].set(raw)
  return Trace(guided[:, :-1], raw[:, :, :-1])


# ---- what every family's generate() shares ---------------------------------------------------------------------


def validate(
  config,
  labels: np.ndarray,
  num_steps: int,
  order: np.ndarray | None,
  guidance: Guidance | None,
  known: int = 0,
  num_tokens: int | None = None,
  lagging: bool = False,
) -> None:
  """Host-side checks before anything is compiled (num_tokens: the canvas size, default the model's)."""
  n = num_tokens or config.num_tokens
  steps_max = n if lagging else n - known
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array of class ids, got shape {labels.shape}")
  if labels.size and (labels.min() < 0 or labels.max() >= config.num_classes):
    raise ValueError(f"class ids must be in [0, {config.num_classes}), got {labels.min()}..{labels.max()}")
  if not 0 <= known < n:
    raise ValueError(f"the known prefix must leave tokens to generate: need 0 <= known < {n}, got {known}")
  if not (num_steps == -1 or 1 <= num_steps <= steps_max):
    raise ValueError(f"num_steps must be in [1, {steps_max}] (or -1 for one token per step), got {num_steps}")
  if guidance is not None:
    _ = config.null_class  # raises if the model has no null class
  if order is not None:
    if order.shape != (labels.shape[0], n):
      raise ValueError(f"order must have shape {(labels.shape[0], n)}, got {order.shape}")
    if not (np.sort(order, axis=1) == np.arange(n)).all():
      raise ValueError("every row of order must be a permutation of 0..N-1")


ORDER_MODES = ("random", "raster")


def check_order(order) -> np.ndarray | None:
  """'random' | 'raster' pass through (None); anything else must be a (B, N) array of raster cells."""
  if isinstance(order, str):
    if order not in ORDER_MODES:
      raise ValueError(f"order must be 'raster', 'random' or a (B, N) array of raster cells, got {order!r}")
    return None
  return np.asarray(order)


def make_orders(order, key: jax.Array, batch: int, num_tokens: int) -> jax.Array:
  """(B, N) int32 orders: 'random' (independent permutations drawn from ``key``, or row b from ``key[b]`` when
  given a key per sample), 'raster', or the array given."""
  if isinstance(order, str) and order == "random":
    if per_row(key):
      return jax.vmap(lambda k: jax.random.permutation(k, num_tokens))(key).astype(jnp.int32)
    return jax.vmap(lambda k: jax.random.permutation(k, num_tokens))(jax.random.split(key, batch)).astype(jnp.int32)
  if isinstance(order, str):
    return jnp.broadcast_to(jnp.arange(num_tokens, dtype=jnp.int32), (batch, num_tokens))
  return jnp.asarray(order, jnp.int32)


def random_orders(key: jax.Array, batch: int, num_tokens: int) -> jax.Array:
  """(B, N) independent random permutations."""
  return make_orders("random", key, batch, num_tokens)


Adapter = Callable[..., ChunkLogits]


@struct.dataclass
class Inputs:
  """The traced inputs of one decode: labels (B,), orders (B, N), the sampling key, optional forced tokens and
  known prefix (B, m), and the family adapter's extra arrays (e.g. RandAR's RoPE table)."""

  labels: jax.Array
  order: jax.Array
  key: jax.Array
  forced: Forced | None = None
  prefix: jax.Array | None = None
  extras: tuple = ()


class Program:
  """One compiled decode loop, static in (family adapter, plan, trace): gemma's sampler loop as a program object.

      program = Program.get(adapter, plan, trace=False)          # cached: one jit per static configuration
      tokens, cache, per_forward_trace = program(model, inputs, sampling, guidance, cache)

  Calling it with the same batch, guidance structure and sampling structure reuses the compiled executable; the
  cache is donated and comes back updated (pass it to the next call).
  """

  def __init__(self, adapter: Adapter, plan: Plan, trace: bool):
    self.adapter, self.plan, self.trace = adapter, plan, trace
    self._compiled = jax.jit(self._run, static_argnums=0, donate_argnames=("cache",))

  @staticmethod
  @functools.lru_cache(maxsize=64)
  def get(adapter: Adapter, plan: Plan, trace: bool = False) -> Program:
    return Program(adapter, plan, trace)

  def __call__(self, model: nnx.Module, inputs: Inputs, sampling: Sampling, guidance, cache: KVCache):
    graphdef, state = nnx.split(model)
    return self._compiled(graphdef, state, inputs, sampling, guidance, cache)

  def _run(self, graphdef, state, inputs: Inputs, sampling: Sampling, guidance, cache: KVCache):
    model, plan = nnx.merge(graphdef, state), self.plan
    model.unstack_layers()  # each forward then reads every layer's weights in place (see layers.unstack)
    labels = inputs.labels
    null = jnp.full_like(labels, model.config.null_class) if guidance is not None else None
    branch_labels = labels[:, None] if guidance is None else guidance.branch_labels(labels, null)
    cache = cache.constrain()
    tokens = jnp.zeros((labels.shape[0], plan.num_tokens + 1), jnp.int32)
    if inputs.prefix is not None:
      tokens = tokens.at[:, : inputs.prefix.shape[1]].set(inputs.prefix)
    tokens = sharding.constrain(tokens, ("batch", None))
    chunk_logits = self.adapter(model, branch_labels, inputs.order, *inputs.extras)
    tokens, cache, logits = run(
      plan, chunk_logits, cache, tokens, inputs.key, sampling, guidance, inputs.forced, self.trace
    )
    return tokens[:, :-1], cache, logits


def new_cache(config, rows: int, plan: Plan) -> KVCache:
  """A zero cache for ``rows`` sequences (batch x branches) of a model config (n_layer, kv_heads, head_dim)."""
  return KVCache.zeros(
    config.n_layer, rows, plan.cache_slots, config.kv_heads, config.head_dim, jnp.dtype(config.dtype)
  )


def decode(
  adapter: Adapter,
  model: nnx.Module,
  plan: Plan,
  labels: np.ndarray,
  orders: jax.Array,
  key: jax.Array,
  sampling: Sampling,
  guidance,
  *,
  forced: Forced | None = None,
  prefix=None,
  extras: tuple = (),
  cache: KVCache | None = None,
  trace: bool = False,
) -> DecodeOutput:
  """Runs a validated decode: labels (B,) host ids, orders (B, N). ``adapter(model, labels (B, branches),
  order, *extras)`` builds the chunk_logits function (extras: arrays or None, e.g. RandAR's RoPE table).
  Reuses (donates) ``cache`` when its shape fits, else allocates one. Returns raster tokens, the orders,
  generation-order tokens, the trace if asked, and the cache."""
  cfg = model.config
  rows = labels.shape[0] * (1 if guidance is None else guidance.branches)
  shape = (cfg.n_layer, rows, cfg.kv_heads, plan.cache_slots, cfg.head_dim)
  if cache is None or cache.v.shape != shape or cache.v.dtype != jnp.dtype(cfg.dtype):
    cache = new_cache(cfg, rows, plan).place_like(jax.tree.leaves(nnx.state(model, nnx.Param))[0])
  inputs = Inputs(jnp.asarray(labels, jnp.int32), orders, key, forced, prefix, tuple(extras))
  tokens, cache, logits = Program.get(adapter, plan, trace)(model, inputs, sampling, guidance, cache)
  raster = jnp.take_along_axis(tokens, jnp.argsort(orders, axis=1), axis=1)
  return DecodeOutput(raster, orders, tokens, collect_trace(plan, logits) if trace else None, cache)


def generate_one_per_step(
  adapter: Adapter,
  plan_for: Callable[[int], Plan],
  defaults_for: Callable,
  name: str,
  model: nnx.Module,
  labels,
  key: jax.Array,
  *,
  num_steps: int | None,
  order,
  sampling: Sampling | None,
  guidance,
  forced: Forced | None,
  trace: bool,
  cache: KVCache | None,
) -> DecodeOutput:
  """The ``generate`` of a family that decodes one token per forward (RAR, LlamaGen): unset settings from
  ``defaults_for(config)`` (a DecodeSettings), host-side checks, then ``plan_for(N)`` through :func:`decode`."""
  cfg = model.config
  n = cfg.num_tokens
  if num_steps not in (None, -1, n):
    raise ValueError(f"{name} decodes one token per step: num_steps must be {n} (or -1), got {num_steps}")
  defaults = defaults_for(cfg)
  sampling = defaults.sampling if sampling is None else sampling
  guidance = defaults.guidance if isinstance(guidance, str) and guidance == "default" else guidance
  order = defaults.order if order is None else order
  labels_np = np.asarray(labels)
  order_np = check_order(order)
  validate(cfg, labels_np, n, order_np, guidance)
  order_key, sample_key = split(key)
  orders = make_orders(order if order_np is None else order_np, order_key, labels_np.shape[0], n)
  return decode(
    adapter,
    model,
    plan_for(n),
    labels_np,
    orders,
    sample_key,
    sampling,
    guidance,
    forced=forced,
    cache=cache,
    trace=trace,
  )
