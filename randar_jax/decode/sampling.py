"""Token sampling and classifier-free guidance, shared by every decoder (RandAR, RAR, zero-shot editing).

    sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0)
    guidance = Guidance.linear(1.0, 4.0)           # RandAR default; Guidance.pow_cosine(16.0, 2.75) for RAR-B
    tokens = sample(guidance.combine(branch_logits, progress), sampling, key)

Numbers (temperature, top_p, guidance scales) are traced values: changing them never recompiles. The
structure (top-k on/off and k, which guidance schedule, how many branches) is static.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Sampling:
  """temperature -> optional top-k -> optional top-p (HF style) -> categorical; per query, independently."""

  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = struct.field(pytree_node=False, default=0)  # 0: off
  use_top_p: bool = struct.field(pytree_node=False, default=False)

  @classmethod
  def make(cls, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Sampling:
    if not math.isfinite(temperature) or temperature < 0:
      raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0:
      raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return cls(temperature=temperature, top_p=top_p, top_k=int(top_k), use_top_p=top_p < 1.0)


def _sortable(x: jax.Array) -> jax.Array:
  """float32 -> uint32 with the same order (sign bit flipped for positives, all bits for negatives)."""
  bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _keep_from(keys: jax.Array, weights: jax.Array, limit) -> jax.Array:
  """Per row of keys (..., V): the mask of entries whose strictly-greater entries weigh <= ``limit``.

  That set is {keys >= T} for the smallest T with weight(keys > T) <= limit; T is found by bisection over the
  32-bit key range (32 passes over V, no sort)."""

  def halve(_, bounds):
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    fits = jnp.sum(jnp.where(keys > mid, weights, 0), axis=-1, keepdims=True) <= limit
    return jnp.where(fits, lo, mid + 1), jnp.where(fits, mid, hi)

  bounds = (jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32), jnp.full(keys.shape[:-1] + (1,), 0xFFFFFFFF, jnp.uint32))
  lo, _ = jax.lax.fori_loop(0, 32, halve, bounds)
  return keys >= lo


def filter_logits(logits: jax.Array, sampling: Sampling) -> jax.Array:
  """Scaled and filtered logits (..., V) in float32; removed entries are -inf.

  Top-k keeps the entries with fewer than k strictly larger ones; top-p (HF's rule) keeps the most likely
  tokens until their probability first exceeds p, the one crossing it included, i.e. the entries whose
  strictly more likely tokens weigh <= p. Both thresholds are found by bisection over the float order
  (:func:`_keep_from`), not by sorting the vocabulary (XLA's CPU sort of 16384 entries per query costs more
  than the forward pass). Ties with the last kept value are all kept.
  """
  logits = logits.astype(jnp.float32) / jnp.maximum(sampling.temperature, 1e-5)
  keys = _sortable(logits)
  if sampling.top_k:
    keep = _keep_from(keys, jnp.ones((), jnp.int32), min(sampling.top_k, logits.shape[-1]) - 1)
    logits = jnp.where(keep, logits, -jnp.inf)
  if sampling.use_top_p:
    keep = _keep_from(keys, jax.nn.softmax(logits, axis=-1), sampling.top_p)
    logits = jnp.where(keep, logits, -jnp.inf)
  return logits


def sample(logits: jax.Array, sampling: Sampling, key: jax.Array) -> jax.Array:
  """Draws one token per row of logits (B, ..., V) -> int32 (B, ...). Top-k 1 (greedy) is an argmax: no draw.
  ``key``: one key, or a key per sample (B,) so that sample b's draws depend on its own key only (not on the batch
  it shares)."""
  if sampling.top_k == 1:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits, sampling)
  if per_row(key):
    return jax.vmap(lambda k, lg: jax.random.categorical(k, lg, axis=-1))(key, logits).astype(jnp.int32)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def per_row(key: jax.Array) -> bool:
  """Whether ``key`` is a batch of keys (B,) rather than one key (typed, or a raw uint32 (2,))."""
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  return key.ndim > (0 if typed else 1)


def fold_in(key: jax.Array, data) -> jax.Array:
  """``jax.random.fold_in`` for one key or for each key of a batch (B,)."""
  return jax.vmap(jax.random.fold_in, (0, None))(key, data) if per_row(key) else jax.random.fold_in(key, data)


def split(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Two keys from one key, or two batches of keys (B,) from a batch (each sample's own pair)."""
  if per_row(key):
    pairs = jax.vmap(jax.random.split)(key)
    return pairs[:, 0], pairs[:, 1]
  first, second = jax.random.split(key)
  return first, second


@struct.dataclass
class Guidance:
  """Classifier-free guidance over branches [conditional, unconditional]: ``u + s * (c - u)``.

  Schedules of the scale s over the decoded fraction t in [0, 1):
    'linear'     s = start + (end - start) * t        (RandAR; t = tokens decoded before the forward / N)
    'pow_cosine' s = (end - 1) * (1 - cos(pi * t**power)) / 2 + 1   (RAR; t = step / N; start unused)
  A constant scale is 'linear' with start == end. ``interval`` (LlamaGen's ``cfg_interval``; -1 = off) stops
  guidance after it: token j > 0 takes the conditional logits unchanged once j - 1 > interval.
  """

  start: float = 1.0
  end: float = 4.0
  power: float = 1.0
  interval: float = -1.0
  schedule: str = struct.field(pytree_node=False, default="linear")
  branches: int = struct.field(pytree_node=False, default=2)

  @classmethod
  def linear(cls, start: float, end: float) -> Guidance:
    return cls(start=float(start), end=float(end), schedule="linear")

  @classmethod
  def constant(cls, scale: float) -> Guidance:
    return cls.linear(scale, scale)

  @classmethod
  def pow_cosine(cls, scale: float, power: float) -> Guidance:
    return cls(start=1.0, end=float(scale), power=float(power), schedule="pow_cosine")

  @classmethod
  def parse(cls, spec: str | None) -> Guidance | None:
    """'none' | 'S' (constant) | 'S0,S1' (linear, as RandAR's --cfg-scales) | 'powcos:S,P' (RAR; S = 0 is off)."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
      return None
    try:
      if spec.startswith("powcos:"):
        scale, power = (float(v) for v in spec[len("powcos:") :].split(","))
        return cls.from_rar(scale, power)
      values = [float(v) for v in spec.split(",")]
      if not all(math.isfinite(v) for v in values):
        raise ValueError
    except ValueError:
      raise ValueError(f"malformed guidance {spec!r}: use 'none', 'S', 'S0,S1' or 'powcos:S,P'") from None
    if len(values) == 1:
      return cls.constant(values[0])
    if len(values) == 2:
      return cls.linear(*values)
    raise ValueError(f"malformed guidance {spec!r}: use 'none', 'S', 'S0,S1' or 'powcos:S,P'")

  @classmethod
  def from_original(cls, cfg_scales) -> Guidance | None:
    """RandAR's ``cfg_scales=(s0, s1)``: guidance is on only when s1 > 1."""
    s0, s1 = (float(v) for v in cfg_scales)
    return cls.linear(s0, s1) if s1 > 1.0 else None

  @classmethod
  def from_rar(cls, guidance_scale: float, guidance_scale_pow: float) -> Guidance | None:
    """RAR's ``generate(guidance_scale, guidance_scale_pow)``: guidance (batch doubled) whenever the scale is
    not 0 -- even at 1.0, where it changes nothing but cost; pow-cosine schedule."""
    return cls.pow_cosine(guidance_scale, guidance_scale_pow) if float(guidance_scale) != 0.0 else None

  @classmethod
  def from_llamagen(cls, cfg_scale: float, cfg_interval: float = -1.0) -> Guidance | None:
    """LlamaGen's ``generate(cfg_scale, cfg_interval)``: a constant scale, on only when cfg_scale > 1."""
    if float(cfg_scale) <= 1.0:
      return None
    return cls(start=float(cfg_scale), end=float(cfg_scale), interval=float(cfg_interval), schedule="linear")

  def with_scale(self, scale: float) -> Guidance:
    """The same schedule peaking at ``scale`` (a CFG search varies this): linear 1 -> s, constant s,
    pow-cosine to s."""
    start = float(scale) if self.schedule == "linear" and self.start == self.end else self.start
    return self.replace(start=start, end=float(scale))

  @property
  def schedule_name(self) -> str:
    """'linear' | 'constant' | 'powcos:POWER': the schedule without its scale."""
    if self.schedule == "pow_cosine":
      return f"powcos:{self.power:g}"
    return "constant" if self.start == self.end else "linear"

  def scale(self, t: jax.Array) -> jax.Array:
    if self.schedule == "linear":
      return self.start + (self.end - self.start) * t
    if self.schedule == "pow_cosine":
      return (self.end - 1.0) * (1.0 - jnp.cos(jnp.pi * t**self.power)) / 2.0 + 1.0
    raise ValueError(f"unknown guidance schedule {self.schedule!r}")

  def branch_labels(self, labels: jax.Array, null: jax.Array) -> jax.Array:
    """(B,) -> (B, branches): [class, null class]."""
    return jnp.stack([labels, null], axis=1)

  def combine(self, logits: jax.Array, step: jax.Array, num_tokens: int) -> jax.Array:
    """logits (B, branches, ..., V) -> guided (B, ..., V) for a forward whose first query is generation index
    ``step`` (int) of ``num_tokens``."""
    cond, uncond = logits[:, 0], logits[:, 1]
    guided = uncond + self.scale(step.astype(jnp.float32) / num_tokens) * (cond - uncond)
    active = (self.interval <= -1) | (step == 0) | (step - 1 <= self.interval)
    return jnp.where(active, guided, cond)


@struct.dataclass
class SpatialGuidance:
  """RandAR's spatial guidance for resolution extrapolation: three branches per sample,
  c = (class, all anchors), s = (null class, all anchors), u = (null class, some anchor embeddings zeroed):

      l = l_u + cfg * (l_c - l_s) + spatial * (l_s - l_u),  both scales linear in the decoded fraction.
  """

  cfg_start: float = 3.0
  cfg_end: float = 3.0
  spatial_start: float = 2.5
  spatial_end: float = 2.5
  branches: int = struct.field(pytree_node=False, default=3)

  def branch_labels(self, labels: jax.Array, null: jax.Array) -> jax.Array:
    return jnp.stack([labels, null, null], axis=1)

  def combine(self, logits: jax.Array, step: jax.Array, num_tokens: int) -> jax.Array:
    t = step.astype(jnp.float32) / num_tokens
    cond, spatial, uncond = logits[:, 0], logits[:, 1], logits[:, 2]
    cfg = self.cfg_start + (self.cfg_end - self.cfg_start) * t
    scfg = self.spatial_start + (self.spatial_end - self.spatial_start) * t
    return uncond + cfg * (cond - spatial) + scfg * (spatial - uncond)


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How to sample from a model: what a family's ``default_settings(config)`` gives and the CLI overrides.

  num_steps: forward passes (-1: one token per forward); guidance: None for no CFG; order: 'random' | 'raster'.
  """

  num_steps: int
  guidance: Guidance | None
  sampling: Sampling
  order: str

  def kwargs(self) -> dict:
    """The family ``generate`` keyword arguments."""
    return dict(num_steps=self.num_steps, guidance=self.guidance, sampling=self.sampling, order=self.order)
