"""LlamaGen GPT decoding: one token per step in raster order through the shared compiled engine.

    out = generate(model, labels, jax.random.key(0))              # sample_c2i.py defaults: cfg 4, top-k 2000
    out = generate(model, labels, key, guidance=Guidance.from_llamagen(FID_CFG_SCALE['XL']))   # the FID setting
    out = generate(model, labels, key, guidance=Guidance.from_llamagen(2.0, 5), sampling=Sampling.make(1.0, 1))
    out.tokens                                                     # (B, N) raster-order codes

The plan is the original ``generate`` (``autoregressive/models/generate.py``, fixture README section I): forward 0
(the prefill) feeds only the class token at cache slot 0 (RoPE row zero) and samples token 0; forward t >= 1 feeds
token t - 1 at slot t (rotated by its own cell) and samples token t. N forwards for N tokens; the last token is
sampled but never fed. Slot inputs are the ones ``LlamaGen.training_sequence`` builds, so cached decoding equals
the teacher-forced forward.

Guidance (``Guidance.from_llamagen(cfg_scale, cfg_interval)``): on only when cfg_scale > 1, a constant scale,
``uncond + (cond - uncond) * scale`` before the temperature; token 0 is always guided, token t >= 1 only while
t - 1 <= cfg_interval (-1: always). Sampling: temperature -> top-k -> top-p -> categorical (``Sampling.make``), the
original's order. Grouped-query attention works here (the original's KV cache breaks on it, quirk L7: fixed).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from randar_jax.decode import engine
from randar_jax.decode.engine import DecodeOutput
from randar_jax.decode.plan import CLS, TOKEN, Forward, Plan, pack
from randar_jax.decode.sampling import DecodeSettings, Guidance, Sampling
from randar_jax.models.attention import KVCache
from randar_jax.models.llamagen import LlamaGen, LlamaGenConfig

# autoregressive/sample/sample_c2i.py defaults: --cfg-scale 4.0 --cfg-interval -1 --top-k 2000 --top-p 1.0
# --temperature 1.0
SAMPLE_DEFAULTS = dict(cfg_scale=4.0, cfg_interval=-1.0, top_k=2000, top_p=1.0, temperature=1.0)
# --cfg-scale of the FID runs in GETTING_STARTED.md, per released size (the other flags as above)
FID_CFG_SCALE = {"B": 2.0, "L": 2.0, "XL": 1.75, "XXL": 1.75, "3B": 1.65}


def default_settings(config: LlamaGenConfig) -> DecodeSettings:
  """sample_c2i.py's defaults (the same for every size; top-k capped at the vocabulary), raster order."""
  d = SAMPLE_DEFAULTS
  return DecodeSettings(
    num_steps=-1,
    guidance=Guidance.from_llamagen(d["cfg_scale"], d["cfg_interval"]),
    sampling=Sampling.make(d["temperature"], min(d["top_k"], config.vocab_size), d["top_p"]),
    order="raster",
  )


def fid_settings(config: LlamaGenConfig) -> DecodeSettings:
  """The FID runs' settings: sample_c2i.py's defaults with the size's ``FID_CFG_SCALE`` (KeyError for other sizes)."""
  return dataclasses.replace(
    default_settings(config),
    guidance=Guidance.from_llamagen(FID_CFG_SCALE[config.variant_name], SAMPLE_DEFAULTS["cfg_interval"]),
  )


@functools.lru_cache(maxsize=8)
def make_plan(num_tokens: int) -> Plan:
  """[cls] at slot 0 sampling token 0, then token t - 1 fed at slot t sampling token t (t = 1..N-1)."""
  passes = [Forward(0, (CLS,), (0,), (0,))]
  passes += [Forward(t, (TOKEN,), (t - 1,), (t,)) for t in range(1, num_tokens)]
  return pack(passes, [1] * num_tokens, num_tokens, num_tokens, separate_first=True)


def chunk_logits_fn(model: LlamaGen, labels: jax.Array, order: jax.Array):
  """LlamaGen's forward for one plan row. labels (B, G) per branch; order (B, N) shared by the branches."""
  batch, branches = labels.shape
  labels = labels.reshape(-1)
  order = jnp.repeat(order, branches, axis=0)

  def chunk_logits(cache: KVCache, tokens: jax.Array, row, window: int) -> tuple[jax.Array, KVCache]:
    is_cls = row["kinds"] == CLS  # (K,)
    fed = jnp.repeat(jnp.take(tokens, row["gens"], axis=1), branches, axis=0)  # (B G, K) generation order
    x = jnp.where(is_cls[None, :, None], model.class_embeddings(labels)[:, None], model.tok_embeddings[...][fed])
    cells = jnp.where(is_cls[None], -1, jnp.take(order, row["gens"], axis=1))
    h, cache, _ = model.run_layers(x, cells, cache=cache, start=row["start"], window=window)
    logits = model.head(jnp.take(h, row["out_pos"], axis=1))
    return logits.reshape((batch, branches) + logits.shape[1:]), cache

  return chunk_logits


def generate(
  model: LlamaGen,
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

  order: None or 'raster' (every released model), 'random' (a random order per sample, from ``key``), or an
  explicit (B, N) array of raster cells per step. sampling / guidance: None sampling and 'default' guidance take
  ``default_settings`` (sample_c2i.py); guidance None means no classifier-free guidance. num_steps: always N
  (None, -1 or N). forced: tokens that replace whatever is sampled at given steps. trace: per-token logits.
  cache: a cache from a previous call with the same shapes; it is donated and returned in the output.
  """
  return engine.generate_one_per_step(
    chunk_logits_fn,
    make_plan,
    default_settings,
    "LlamaGen",
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
