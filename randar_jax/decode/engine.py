"""The compiled decode loop shared by every generator: plan segments as ``lax.scan`` s over a KV cache.

A model adapter supplies ``chunk_logits(cache, tokens, row, window) -> (logits (B, branches, K, V), cache)``
for one forward pass described by a plan row (``window``: the static number of leading cache slots the
forward can see); the engine does the rest, identically for every model:

    guidance over branches -> sampling -> forced tokens -> scatter into ``tokens`` (generation order)

Everything here runs inside one ``jit``: one scan per plan segment (rows of equal chunk width), no Python
loop over steps at run time, no host synchronisation. Keys are ``fold_in(key, forward_index)``, so results
do not depend on how forwards are grouped into segments.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from randar_jax.decode.plan import Plan
from randar_jax.decode.sampling import Guidance, Sampling, sample

ChunkLogits = Callable[..., tuple[jax.Array, object]]


class Forced(NamedTuple):
  """Tokens that must not be sampled: (B, N) values and mask, in generation order (zero-shot editing)."""
  tokens: jax.Array
  mask: jax.Array


class Trace(NamedTuple):
  """Per-forward logits, when asked for: (forwards, B, K, V) after guidance and per branch before it."""
  guided: jax.Array
  raw: jax.Array


def run(plan: Plan, chunk_logits: ChunkLogits, cache, tokens: jax.Array, key: jax.Array, sampling: Sampling,
        guidance: Guidance | None, forced: Forced | None = None, trace: bool = False):
  """Runs every forward of ``plan``. tokens (B, N + 1) int32 in generation order; column N is a write sink
  for padded query slots. Returns (tokens, cache, Trace | None)."""
  forward_index = 0
  traces = []
  for segment in plan.segments:
    rows = {name: jnp.asarray(value) for name, value in segment.arrays().items()}
    rows["index"] = forward_index + jnp.arange(len(segment.start), dtype=jnp.int32)
    forward_index += len(segment.start)

    def body(carry, row):
      cache, tokens = carry
      logits, cache = chunk_logits(cache, tokens, row, segment.window)     # (B, branches, K, V)
      t = row["first_query"].astype(jnp.float32) / plan.num_tokens
      guided = logits[:, 0] if guidance is None else guidance.combine(logits, t)
      new = sample(guided, sampling, jax.random.fold_in(key, row["index"]))  # (B, K)
      if forced is not None:
        gen = jnp.minimum(row["out_gen"], plan.num_tokens - 1)
        keep = forced.mask[:, gen] & (row["out_gen"] < plan.num_tokens)
        new = jnp.where(keep, forced.tokens[:, gen], new)
      tokens = tokens.at[:, row["out_gen"]].set(new)
      return (cache, tokens), (Trace(guided, logits) if trace else None)

    (cache, tokens), ys = jax.lax.scan(body, (cache, tokens), rows)
    traces.append(ys)
  if not trace:
    return tokens, cache, None
  return tokens, cache, Trace(*(jnp.concatenate([t[i] for t in traces]) for i in range(2)))


def collect_trace(plan: Plan, trace: Trace) -> Trace:
  """Per-token logits in generation order from a per-forward trace: (B, N, V) and (B, branches, N, V).

  Tokens that were fed as known (not sampled) get zeros.
  """
  out_gen = jnp.asarray([g for seg in plan.segments for g in seg.out_gen]).reshape(-1)  # (forwards * K,)
  guided = jnp.moveaxis(trace.guided, 0, 1)                                           # (B, F, K, V)
  guided = guided.reshape(guided.shape[0], -1, guided.shape[-1])
  raw = jnp.moveaxis(trace.raw, 0, 2)                                                 # (B, G, F, K, V)
  raw = raw.reshape(raw.shape[:2] + (-1, raw.shape[-1]))
  n = plan.num_tokens + 1  # the last column collects padded queries
  guided = jnp.zeros((guided.shape[0], n, guided.shape[-1]), guided.dtype).at[:, out_gen].set(guided)
  raw = jnp.zeros(raw.shape[:2] + (n, raw.shape[-1]), raw.dtype).at[:, :, out_gen].set(raw)
  return Trace(guided[:, :-1], raw[:, :, :-1])
