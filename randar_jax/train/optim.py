"""Optimizer pieces of the training recipes: LR schedules, AdamW with a decay mask, clipping, the skip rule, EMA.

    cfg = OptimConfig.from_dict(config.optim)            # RandAR and RAR recipes are both just field values
    tx = transform(cfg, model.weight_decay_mask())       # Adam moments + decoupled weight decay (no LR inside)
    params, opt_state, stats = update(cfg, tx, params, opt_state, grads, step, total_steps)

The learning rate is a function of the global iteration ``step`` that the train state keeps, not of the
optimizer's internal count: RandAR's skip rule (docs/randar.md §7) drops an update, leaving the parameters *and* the
Adam moments and count untouched, while the schedule still advances. ``update`` therefore applies
``-lr(step) * (adam + wd * p)`` itself (torch AdamW: ``p -= lr * wd * p + lr * adam``, identical).

RandAR: betas (0.9, 0.95), wd 0.05 on ndim >= 2, cosine to 5% of the peak after 50k warm-up steps, skip when the
sum of per-tensor gradient norms (after clipping to global norm 1) is >= 10 after iteration 100.
RAR (docs/rar.md §6.3): betas (0.9, 0.96), wd 0.03 with its name-rule mask, cosine to an absolute 1e-5, no skip rule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from randar_jax.config_io import FrozenConfig

SCHEDULES = ("cosine", "linear", "constant")


@dataclasses.dataclass(frozen=True)
class OptimConfig(FrozenConfig):
  """Defaults: RandAR (docs/randar.md §7). ``OptimConfig.from_dict(config.optim)``: strict (unknown keys refused)."""

  LABEL = "optim"
  lr: float = 4e-4  # peak learning rate
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.05  # decoupled (AdamW), on the model's weight_decay_mask()
  schedule: str = "cosine"  # after warm-up: cosine | linear | constant
  warmup_steps: int = 50_000  # linear from 0: lr(t) = lr * t / warmup_steps
  end_lr_ratio: float = 0.05  # floor of cosine / linear decay, as a fraction of lr ...
  end_lr: float | None = None  # ... or as an absolute value (RAR: 1e-5); wins when set
  clip_norm: float | None = 1.0  # global L2 norm (torch clip_grad_norm_); None: no clipping
  skip_threshold: float | None = 10.0  # skip the update when sum of per-tensor norms >= this; None: never
  skip_after: int = 100  # ... but never before this iteration
  fused_tensors: str = "wq+wk+wv"  # sibling leaves that are one tensor in the original (norm taken jointly)
  grad_accum: int = 1  # micro-batches per step (the global batch is split, not enlarged)
  ema_decay: float = 0.0  # > 0: keep an EMA of the parameters
  mu_dtype: str | None = None  # e.g. 'bfloat16' for Adam's first moment
  max_nonfinite: int = 20  # stop the run after this many consecutive non-finite (skipped) steps

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"unknown schedule {self.schedule!r}; choose from {SCHEDULES}")
    if self.warmup_steps < 0 or self.grad_accum < 1 or not 0.0 <= self.ema_decay < 1.0 or self.max_nonfinite < 1:
      raise ValueError(f"need warmup_steps >= 0, grad_accum >= 1, 0 <= ema_decay < 1, max_nonfinite >= 1; got {self}")


def learning_rate(cfg: OptimConfig, total_steps: int) -> Callable[[Any], jax.Array]:
  """lr(step) for 0-based iterations: linear warm-up from 0, then the decay to the floor at ``total_steps``."""
  peak = cfg.lr
  floor = cfg.end_lr if cfg.end_lr is not None else cfg.end_lr_ratio * peak
  warm, decay_steps = cfg.warmup_steps, max(1, total_steps - cfg.warmup_steps)

  def lr(step):
    t = jnp.asarray(step, jnp.float32)
    progress = jnp.clip((t - warm) / decay_steps, 0.0, 1.0)
    if cfg.schedule == "cosine":
      after = floor + (peak - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    elif cfg.schedule == "linear":
      after = floor + (peak - floor) * (1.0 - progress)
    else:
      after = jnp.asarray(peak, jnp.float32)
    return jnp.where(t < warm, peak * t / max(warm, 1), after)

  return lr


def transform(cfg: OptimConfig, decay_mask: Any) -> optax.GradientTransformation:
  """Adam direction plus decoupled weight decay on ``decay_mask`` (a pytree of bools shaped like the params)."""
  return optax.chain(
    optax.scale_by_adam(cfg.b1, cfg.b2, cfg.eps, mu_dtype=cfg.mu_dtype),
    optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
  )


def global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip(grads: Any, max_norm: float | None) -> tuple[Any, jax.Array]:
  """torch ``clip_grad_norm_``: scale by min(1, max_norm / (norm + 1e-6)). Returns (grads, norm before)."""
  norm = global_norm(grads)
  if max_norm is None:
    return grads, norm
  scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
  return jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads), norm


def tensor_norm_sum(grads: Mapping, fused: str = "") -> jax.Array:
  """Sum over the original's tensors of their L2 norms (the skip rule's statistic).

  Leaves under a top-level 'layers' subtree are stacked over layers (leading axis) and count once per layer;
  the sibling leaves named in ``fused`` ('wq+wk+wv') form one tensor (RandAR's fused wqkv).
  """
  group = set(filter(None, fused.split("+")))
  squares: dict[tuple, jax.Array] = {}
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    names = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
    stacked = names[0] == "layers"
    axes = tuple(range(1, g.ndim)) if stacked else None
    sq = jnp.sum(jnp.square(g.astype(jnp.float32)), axis=axes)
    key = names[:-1] + ("+".join(sorted(group)),) if names[-1] in group else names
    squares[key] = squares.get(key, 0.0) + sq
  return sum(jnp.sum(jnp.sqrt(sq)) for sq in squares.values())


def update(
  cfg: OptimConfig,
  tx: optax.GradientTransformation,
  params: Any,
  opt_state: Any,
  grads: Any,
  step: jax.Array,
  total_steps: int,
  loss: jax.Array | None = None,
) -> tuple[Any, Any, dict[str, jax.Array]]:
  """One optimizer iteration ``step`` (0-based): clip, skip rule, AdamW with lr(step).

  Returns (params, opt_state, stats) with stats 'lr', 'grad_norm' (global, before clipping), 'grad_norm_sum'
  (the skip statistic, after clipping), 'nonfinite' (bool: the loss or a gradient norm is NaN / inf) and
  'skipped' (bool). A skipped update returns the inputs unchanged. A non-finite step is always skipped, whatever
  the skip rule says (``norm_sum >= threshold`` is False for NaN, so the rule alone would let it through).
  """
  grads, norm = clip(grads, cfg.clip_norm)
  norm_sum = tensor_norm_sum(grads, cfg.fused_tensors)
  nonfinite = ~(jnp.isfinite(norm) & jnp.isfinite(norm_sum))
  if loss is not None:
    nonfinite = nonfinite | ~jnp.isfinite(loss)
  skip = nonfinite
  if cfg.skip_threshold is not None:
    skip = skip | ((step >= cfg.skip_after) & (norm_sum >= cfg.skip_threshold))
  lr = learning_rate(cfg, total_steps)(step)
  direction, new_opt_state = tx.update(grads, opt_state, params)
  new_params = jax.tree.map(lambda p, u: (p - lr * u).astype(p.dtype), params, direction)

  def keep(old, new):
    return jax.tree.map(lambda o, n: jnp.where(skip, o, n), old, new)

  stats = {"lr": lr, "grad_norm": norm, "grad_norm_sum": norm_sum, "skipped": skip, "nonfinite": nonfinite}
  return keep(params, new_params), keep(opt_state, new_opt_state), stats


def ema_update(ema: Any, params: Any, decay: float, skipped: jax.Array) -> Any:
  """ema <- decay * ema + (1 - decay) * params, except on skipped iterations."""
  return jax.tree.map(lambda e, p: jnp.where(skipped, e, decay * e + (1.0 - decay) * p), ema, params)


def describe(cfg: OptimConfig, total_steps: int) -> str:
  floor = cfg.end_lr if cfg.end_lr is not None else cfg.end_lr_ratio * cfg.lr
  skip = f"skip if norm sum >= {cfg.skip_threshold} after {cfg.skip_after}" if cfg.skip_threshold else "no skip rule"
  skip += f" (non-finite steps skipped; stop after {cfg.max_nonfinite} in a row)"
  return (
    f"AdamW({cfg.b1}, {cfg.b2}) wd {cfg.weight_decay}, lr {cfg.lr:g} warm-up {cfg.warmup_steps} then "
    f"{cfg.schedule} to {floor:g} at {total_steps}, clip {cfg.clip_norm}, {skip}"
  )
