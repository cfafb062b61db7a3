"""RandAR parallel decoding: any order, several tokens per forward, one compiled program per shape.

    out = generate(model, labels, jax.random.key(0))     # the defaults below: min(88, N) steps, CFG 1 -> 4
    out = generate(model, labels, key, num_steps=32, guidance=Guidance.constant(3.0), order="raster")
    out.tokens          # (B, N) raster-order codes, ready for the tokenizer
    out.order           # (B, N) the generation order used (random per sample unless given)

The plan (:mod:`randar_jax.decode.plan`) is built on the host from (N, num_steps, known prefix); the loop
(:mod:`randar_jax.decode.engine`) runs as ``lax.scan`` s inside one ``jit``, cached per (plan, batch,
guidance structure, sampling structure). Guidance runs the batch as interleaved branches
[conditional, null class] per sample (so a data-sharded batch keeps both branches of a sample on one device)
that share every sampled token.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from randar_jax.decode import engine
from randar_jax.decode.engine import DecodeOutput
from randar_jax.decode.plan import CLS, QUERY, TOKEN, Plan, build_plan, default_buckets, fit_plan
from randar_jax.decode.sampling import DecodeSettings, Guidance, Sampling
from randar_jax.models.attention import KVCache
from randar_jax.models.randar import RandAR, RandARConfig

DEFAULT_STEPS = 88  # the paper's parallel setting for 256 tokens (capped at N for smaller grids)


def default_settings(config: RandARConfig) -> DecodeSettings:
  """RandAR's sampling recipe (sample_c2i.py / the paper): min(88, N) forwards, CFG linear 1 -> 4,
  temperature 1, no top-k / top-p, a random order per sample."""
  return DecodeSettings(
    num_steps=min(DEFAULT_STEPS, config.num_tokens),
    guidance=Guidance.linear(1.0, 4.0),
    sampling=Sampling.make(1.0),
    order="random",
  )


@functools.lru_cache(maxsize=32)
def make_plan(
  num_tokens: int,
  num_steps: int,
  known: int = 0,
  buckets: str | Sequence[int] | None = "default",
  lagging: bool = False,
) -> Plan:
  """``buckets``: 'default' (exact-fit segments, the fast path: :func:`fit_plan`), 'buckets' (the older monotone
  bucket widths), None (one width), or explicit widths."""
  if buckets == "default":
    return fit_plan(num_tokens, num_steps, known, lagging)
  if buckets == "buckets":
    buckets = default_buckets(num_tokens, num_steps) if known == 0 else None
  return build_plan(num_tokens, num_steps, known, buckets, lagging=lagging)


def chunk_logits_fn(
  model: RandAR, labels: jax.Array, order: jax.Array, table: np.ndarray | None, token_scale: jax.Array | None = None
):
  """RandAR's forward for one plan row. labels (B, G) per branch; order (B, N); token_scale (B, G, N) scales
  image-token embeddings per branch (spatial guidance masks anchors with 0), or None."""
  batch, branches = labels.shape
  cls = model.class_embeddings(labels.reshape(-1)).reshape(batch, branches, 1, -1)
  embeddings = model.tok_embeddings[...]

  def chunk_logits(cache: KVCache, tokens: jax.Array, row, window: int) -> tuple[jax.Array, KVCache]:
    kinds, gens = row["kinds"], row["gens"]  # (W,)
    cells = jnp.where((kinds == QUERY) | (kinds == TOKEN), order[:, gens], -1)  # (B, W); -1: zero RoPE row
    x = jnp.where(
      (kinds == QUERY)[None, :, None],
      model.instruction_tokens(cells, table),
      jnp.where((kinds == TOKEN)[None, :, None], embeddings[tokens[:, gens]], 0.0),
    )
    x = jnp.broadcast_to(x[:, None], (batch, branches) + x.shape[1:])
    if token_scale is not None:
      x = jnp.where((kinds == TOKEN)[:, None], x * token_scale[:, :, gens][..., None], x)
    x = jnp.where((kinds == CLS)[:, None], cls, x).reshape((batch * branches,) + x.shape[2:])
    cells = jnp.repeat(cells, branches, axis=0)
    h, cache, _ = model.run_layers(x, cells, table=table, cache=cache, start=row["start"], window=window)
    logits = model.head(jnp.take(h, row["out_pos"], axis=1))  # only the query slots
    return logits.reshape((batch, branches) + logits.shape[1:]), cache

  return chunk_logits


def _adapter(
  model: RandAR, labels: jax.Array, order: jax.Array, table: jax.Array | None, token_scale: jax.Array | None
):
  """The engine's adapter (module level: a static argument of the compiled program)."""
  return chunk_logits_fn(model, labels, order, table, token_scale)


def generate(
  model: RandAR,
  labels,
  key: jax.Array,
  *,
  num_steps: int | None = None,
  order=None,
  sampling: Sampling | None = None,
  guidance: Guidance | None | str = "default",
  prefix=None,
  forced: engine.Forced | None = None,
  buckets: str | Sequence[int] | None = "default",
  trace: bool = False,
  cache: KVCache | None = None,
  table: np.ndarray | None = None,
  lagging: bool = False,
  token_scale=None,
) -> DecodeOutput:
  """Samples (B, N) token grids for class ``labels`` (B,). Unset settings take ``default_settings(config)``;
  ``guidance=None`` means no classifier-free guidance.

  order: 'random' (default: a random order per sample, drawn from ``key``), 'raster', or (B, N) raster cells.
  prefix: (B, m) known tokens for the first m generation steps, teacher-forced in one prefill forward; the
    ``num_steps`` forwards then decode the other N - m (``lagging``: the original extrapolation schedule).
  forced: tokens that replace whatever is sampled at given generation steps (ragged known sets).
  table: a RoPE table (N, head_dim / 2, 2) for another canvas (outpainting, extrapolation); N follows it.
  token_scale: (B, branches, N) factors on image-token embeddings per guidance branch (spatial guidance).
  trace: also return per-token logits (after and before guidance), for parity checks.
  cache: a cache from a previous call with the same shapes; it is donated and returned in the output.
  """
  defaults = default_settings(model.config)
  sampling = defaults.sampling if sampling is None else sampling
  guidance = defaults.guidance if isinstance(guidance, str) and guidance == "default" else guidance
  order = defaults.order if order is None else order
  labels_np = np.asarray(labels)
  order_np = engine.check_order(order)
  known = 0 if prefix is None else int(np.shape(prefix)[1])
  n = model.config.num_tokens if table is None else int(np.shape(table)[0])
  if num_steps is None:  # the default, capped by the forwards this canvas and prefix allow
    num_steps = min(defaults.num_steps, n if lagging else n - known)
  engine.validate(model.config, labels_np, num_steps, order_np, guidance, known, n, lagging)
  plan = make_plan(
    n, num_steps, known, buckets if buckets is None or isinstance(buckets, str) else tuple(buckets), lagging
  )
  order_key, sample_key = engine.split(key)
  orders = engine.make_orders(order if order_np is None else order_np, order_key, labels_np.shape[0], n)
  extras = (
    None if table is None else jnp.asarray(table),
    None if token_scale is None else jnp.asarray(token_scale, jnp.float32),
  )
  return engine.decode(
    _adapter,
    model,
    plan,
    labels_np,
    orders,
    sample_key,
    sampling,
    guidance,
    forced=forced,
    prefix=None if prefix is None else jnp.asarray(prefix, jnp.int32),
    extras=extras,
    cache=cache,
    trace=trace,
  )
