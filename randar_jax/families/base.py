"""The family spec: everything the shared code (checkpoint, converter, CLI, decode, eval, training, benchmarks)
asks about one kind of model, so that none of it holds a family ``if`` or a copied default.

    spec = Family(name="rar", kind="generator", config=RARConfig, model=RAR, converter=Converter(...),
                  generate=decode.rar.generate, default_settings=decode.rar.default_settings,
                  forward_flops=models.rar.forward_flops)
    settings = spec.decode_settings(config, steps=None, cfg="powcos:8,1.2")   # defaults + overrides, checked
    out = spec.generate(model, labels, key, **settings.kwargs())
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from flax import nnx

from randar_jax.convert.core import Converter
from randar_jax.decode.sampling import DecodeSettings, Guidance, Sampling

KINDS = ("generator", "tokenizer", "features")


@dataclasses.dataclass(frozen=True)
class Family:
  """One model family. ``name`` is what every checkpoint's config stores under 'family'."""

  name: str
  kind: str  # 'generator' | 'tokenizer' | 'features'
  config: type  # frozen FamilyConfig dataclass with FAMILY == name
  model: type[nnx.Module]  # model(config, rngs=nnx.Rngs(seed))
  converter: Converter | None = None  # PyTorch state dict -> parameters
  generate: Callable[..., Any] | None = None  # (model, labels, key, **DecodeSettings.kwargs()) -> DecodeOutput
  default_settings: Callable[[Any], DecodeSettings] | None = None  # how the authors sample a config
  parallel: bool = False  # may decode several tokens per forward (num_steps < N)
  forward_flops: Callable[[Any], float] | None = None  # matmul FLOPs of one teacher-forced training example

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"family {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
    if self.config.FAMILY != self.name:
      raise ValueError(f"family {self.name}: its config class says {self.config.FAMILY!r}")
    if (self.kind == "generator") != (self.generate is not None and self.default_settings is not None):
      raise ValueError(f"family {self.name}: generators (and only they) need generate and default_settings")

  def build(self, config, seed: int = 0) -> nnx.Module:
    """A freshly initialised model (call under sharding.model_context for sharded parameters)."""
    return self.model(config, rngs=nnx.Rngs(seed))

  def decode_settings(
    self,
    config,
    *,
    steps: int | None = None,
    cfg: str | Guidance | None = "default",
    cfg_interval: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    order: str | None = None,
  ) -> DecodeSettings:
    """The family's defaults for ``config`` with the given overrides (None / 'default': keep the default),
    checked against the model before any weights are loaded. ``cfg``: a Guidance or a ``Guidance.parse`` spec
    ('none', 'S', 'S0,S1', 'powcos:S,P'); ``cfg_interval`` stops guidance after that token (LlamaGen's)."""
    if self.kind != "generator":
      raise ValueError(f"a {self.name!r} checkpoint is a {self.kind}, not an image generator")
    defaults = self.default_settings(config)
    n = config.num_tokens
    steps = defaults.num_steps if steps is None else steps
    if self.parallel and not (steps == -1 or 1 <= steps <= n):
      raise ValueError(
        f"num_steps must be in [1, {n}] (or -1 for one token per step) for this {n}-token model, got {steps}"
      )
    if not self.parallel and steps not in (-1, n):
      raise ValueError(f"{self.name} decodes one token per step: num_steps must be {n} (or -1), got {steps}")
    guidance = defaults.guidance if isinstance(cfg, str) and cfg == "default" else cfg
    guidance = Guidance.parse(guidance) if isinstance(guidance, str) or guidance is None else guidance
    if cfg_interval is not None:
      if not math.isfinite(cfg_interval):
        raise ValueError(f"cfg_interval must be a finite number (-1: guide every token), got {cfg_interval}")
      if guidance is None:
        raise ValueError("cfg_interval needs classifier-free guidance (a scale above 1)")
      guidance = guidance.replace(interval=float(cfg_interval))
    if guidance is not None:
      _ = config.null_class  # raises if the model has no null class
    base = defaults.sampling
    sampling = Sampling.make(
      base.temperature if temperature is None else temperature,
      base.top_k if top_k is None else top_k,
      base.top_p if top_p is None else top_p,
    )
    order = defaults.order if order is None else order
    if order not in ("random", "raster"):
      raise ValueError(f"order must be 'random' or 'raster', got {order!r}")
    return DecodeSettings(num_steps=steps, guidance=guidance, sampling=sampling, order=order)
