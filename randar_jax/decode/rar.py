"""RAR decoding: one token per step through the shared compiled engine (raster order by default).

    out = generate(model, labels, jax.random.key(0))              # per-size defaults (docs/rar.md 7.2)
    out = generate(model, labels, key, guidance=Guidance.from_rar(16.0, 2.75), sampling=Sampling.make(1.0))
    out = generate(model, labels, key, order="random")             # for models trained on random orders only
    out.tokens                                                     # (B, N) raster-order codes

The plan is RAR's (``docs/rar.md`` 7.1): a 2-slot prefill [cls, cond] (writes cache slots 0-1, samples token 0 from
the cond slot), then N - 1 single-slot forwards: forward t feeds token t - 1 at slot t + 1 and samples token t.
The last token is sampled but never fed, so the cache holds N + 1 slots (rounded up to a multiple of 8).
Every slot's inputs (pos / target-aware embeddings, time row, conditioning) come from ``RAR.slot_inputs``,
the same function training uses, so cached decoding equals the teacher-forced forward.

Guidance is pow-cosine over the step t / N (``Guidance.from_rar``; the original doubles the batch whenever
guidance_scale != 0), applied to logits before the temperature; RAR has no top-k / top-p (ours are off by
default). Everything runs as two ``lax.scan`` s per attention window inside one ``jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from randar_jax.decode import engine
from randar_jax.decode.engine import DecodeOutput
from randar_jax.decode.plan import CLS, QUERY, TOKEN, Forward, Plan, pack
from randar_jax.decode.sampling import DecodeSettings, Guidance, Sampling
from randar_jax.models.attention import KVCache
from randar_jax.models.rar import RAR, RARConfig

# README_RAR.md sampling commands (= paper table 6): temperature, guidance scale, guidance scale power
DEFAULTS = {"B": (1.0, 16.0, 2.75), "L": (1.02, 15.5, 2.5), "XL": (1.02, 6.9, 1.5), "XXL": (1.02, 8.0, 1.2)}
DEMO_DEFAULTS = (1.0, 4.0, 0.0)  # the README demo: sizes without published settings (tiny, custom)


def default_settings(config: RARConfig) -> DecodeSettings:
  """What the authors sample this size with (the README demo's for other sizes): one token per step in raster
  order, pow-cosine guidance, the per-size temperature."""
  temperature, scale, power = DEFAULTS.get(config.variant_name, DEMO_DEFAULTS)
  return DecodeSettings(
    num_steps=-1, guidance=Guidance.from_rar(scale, power), sampling=Sampling.make(temperature), order="raster"
  )


@functools.lru_cache(maxsize=8)
def make_plan(num_tokens: int) -> Plan:
  """[cls, cond] at slots 0-1 sampling token 0, then token t - 1 fed at slot t + 1 sampling token t."""
  passes = [Forward(0, (CLS, QUERY), (0, 0), (0,))]
  passes += [Forward(t + 1, (TOKEN,), (t - 1,), (t,)) for t in range(1, num_tokens)]
  return pack(passes, [f.length for f in passes], num_tokens, num_tokens, separate_first=True)


def chunk_logits_fn(model: RAR, labels: jax.Array, order: jax.Array):
  """RAR's forward for one plan row. labels (B, G) per branch; order (B, N) shared by the branches."""
  batch, branches = labels.shape
  labels = labels.reshape(-1)
  order = jnp.repeat(order, branches, axis=0)

  def chunk_logits(cache: KVCache, tokens: jax.Array, row, window: int) -> tuple[jax.Array, KVCache]:
    slots = row["start"] + jnp.arange(row["kinds"].shape[0])
    x, c = model.slot_inputs(jnp.repeat(tokens, branches, axis=0), labels, order, slots)
    h, cache, _ = model.run_layers(x, c, cache=cache, start=row["start"], window=window)
    logits = model.head(jnp.take(h, row["out_pos"], axis=1), jnp.take(c, row["out_pos"], axis=1))
    return logits.reshape((batch, branches) + logits.shape[1:]), cache

  return chunk_logits


def generate(
  model: RAR,
  labels,
  key: jax.Array,
  *,
  num_steps: int | None = None,
  order=None,
  sampling: Sampling | None = None,
  guidance: Guidance | None | str = "default",
  forced: engine.Forced | None = None,
  trace: bool = False,
  cache: KVCache | None = None,
) -> DecodeOutput:
  """Samples (B, N) token grids for class ``labels`` (B,), one token per step.

  order: None or 'raster' (RAR's sampling), 'random' (a random order per sample, drawn from ``key``: for
  models trained on random orders only), or an explicit (B, N) array of raster cells per step.
  sampling / guidance: None sampling and 'default' guidance take the per-size defaults (``default_settings``);
  guidance None means no classifier-free guidance. num_steps: RAR always takes N steps (None, -1 or N).
  forced: tokens that replace whatever is sampled at given generation steps. trace: per-token logits.
  cache: a cache from a previous call with the same shapes; it is donated and returned in the output.
  """
  return engine.generate_one_per_step(
    chunk_logits_fn,
    make_plan,
    default_settings,
    "RAR",
    model,
    labels,
    key,
    num_steps=num_steps,
    order=order,
    sampling=sampling,
    guidance=guidance,
    forced=forced,
    trace=trace,
    cache=cache,
  )
