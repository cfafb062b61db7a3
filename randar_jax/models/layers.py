"""Small building blocks shared by the transformers: annotated parameters, norms, dense layers, SwiGLU,
dropout, loss, and the scan over stacked blocks.

Every parameter carries logical axis names (``'embed'``, ``'heads'``, ``'mlp'``, ...) as ``out_sharding``
metadata; :mod:`randar_jax.sharding` maps them to mesh axes. Modules hold parameters only: dropout randomness
is passed in as explicit keys, so a module is a plain pytree of arrays that scans, remats and jits cleanly.

    proj = Dense((heads, head_dim), (dim,), ('heads', 'head_dim', 'embed'), init=normal(0.02), rngs=rngs)
    y = proj(x, jnp.float32)                               # contracts x's last two axes
    h, cache, hidden = scan_blocks(model.blocks, n_layer, x, lambda blk, h, cache, i, key: blk(h, ...))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax import sharding

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def param(
  rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], names: Sequence[str | None], dtype: jnp.dtype = jnp.float32
) -> nnx.Param:
  """A parameter initialised with ``init`` and annotated with one logical axis name per dimension."""
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} axis names {tuple(names)} for a parameter of shape {tuple(shape)}")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(names))


def normal(std: float) -> Initializer:
  """N(0, std^2), untruncated (torch ``normal_``)."""
  return jax.nn.initializers.normal(stddev=std)


def ones(key, shape, dtype):  # noqa: ARG001 - initializer signature
  return jnp.ones(shape, dtype)


def zeros(key, shape, dtype):  # noqa: ARG001 - initializer signature
  return jnp.zeros(shape, dtype)


class RMSNorm(nnx.Module):
  """``x * rsqrt(mean(x^2) + eps) * scale``; statistics in float32, result cast back to x's dtype before scaling."""

  def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, ones, (dim,), ("embed",))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return normed.astype(x.dtype) * self.scale[...].astype(x.dtype)


def layer_norm(x: jax.Array, eps: float, scale: jax.Array | None = None, bias: jax.Array | None = None) -> jax.Array:
  """LayerNorm over the last axis (biased variance, as torch); statistics and affine in float32, result in
  x's dtype."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=-1, keepdims=True)
  centred = x32 - mean
  out = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
  if scale is not None:
    out = out * scale.astype(jnp.float32)
  if bias is not None:
    out = out + bias.astype(jnp.float32)
  return out.astype(x.dtype)


class LayerNorm(nnx.Module):
  """Affine LayerNorm (torch ``nn.LayerNorm``): ``scale`` (weight) and ``bias`` of shape (dim,)."""

  def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs, names: Sequence[str | None] = ("embed",)):
    self.eps = eps
    self.scale = param(rngs, ones, (dim,), names)
    self.bias = param(rngs, zeros, (dim,), names)

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, self.eps, self.scale[...], self.bias[...])


class Dense(nnx.Module):
  """``x @ kernel + bias`` contracting the last ``len(in_shape)`` axes of x (a torch Linear, transposed).

  kernel: in_shape + out_shape with one logical name per axis; bias: out_shape (names of the output axes).
  Split output axes (e.g. qkv as (3, heads, head_dim)) keep torch's row order [3][H][hd].
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    names: Sequence[str | None],
    *,
    init: Initializer,
    rngs: nnx.Rngs,
    bias: bool = True,
    bias_init: Initializer | None = None,
  ):
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    self.contract = len(in_shape)
    self.kernel = param(rngs, init, in_shape + out_shape, names)
    self.bias = param(rngs, bias_init or zeros, out_shape, names[len(in_shape) :]) if bias else None

  def __call__(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    y = jnp.tensordot(x.astype(dtype), self.kernel[...].astype(dtype), axes=self.contract)
    return y if self.bias is None else y + self.bias[...].astype(dtype)


class SwiGLU(nnx.Module):
  """LLaMA feed-forward ``w2(silu(w1 x) * w3 x)`` without biases; kernels (D, H) and (H, D)."""

  def __init__(self, dim: int, hidden: int, *, init: Initializer, rngs: nnx.Rngs):
    self.w1 = param(rngs, init, (dim, hidden), ("embed", "mlp"))
    self.w3 = param(rngs, init, (dim, hidden), ("embed", "mlp"))
    self.w2 = param(rngs, init, (hidden, dim), ("mlp", "embed"))

  def __call__(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
    x = x.astype(dtype)
    return silu_gate(x @ self.w1[...].astype(dtype), x @ self.w3[...].astype(dtype)) @ self.w2[...].astype(dtype)


@jax.custom_vjp
def silu_gate(a: jax.Array, b: jax.Array) -> jax.Array:
  """``silu(a) * b``, with its derivative written out: XLA's CPU backend fused the autodiff form of the
  derivative into the transposing copy that feeds the weight-gradient matmul (strided writes; 16 % of the
  digits demo's train step), the explicit form it does not (the step 1.1x faster; same values to float32
  rounding)."""
  return jax.nn.silu(a) * b


def _silu_gate_fwd(a, b):
  return silu_gate(a, b), (a, b)


def _silu_gate_bwd(saved, g):
  a, b = saved
  s = jax.nn.sigmoid(a)
  return g * b * (s * (1 + a * (1 - s))), g * a * s


silu_gate.defvjp(_silu_gate_fwd, _silu_gate_bwd)


def replicated(ndim: int) -> tuple[None, ...]:
  """Logical axis names of a parameter kept whole on every device (convolution networks: batch-parallel only)."""
  return (None,) * ndim


class Conv(nnx.Module):
  """2-D convolution on NHWC; kernel (kh, kw, in, out) = torch's (out, in, kh, kw) transposed.

  ``kernel`` is a side or (kh, kw) (e.g. Inception's 1x7). ``padding`` is 'SAME' (TF semantics; for stride 1 and
  odd kernels equal to torch's ``padding=k // 2``), 'VALID', or explicit ((top, bottom), (left, right)) pairs.
  """

  def __init__(
    self,
    cin: int,
    cout: int,
    kernel: int | tuple[int, int] = 3,
    *,
    stride: int = 1,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    bias: bool = True,
    rngs: nnx.Rngs,
  ):
    init = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # torch's Conv2d default
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    self.kernel = param(rngs, init, (kh, kw, cin, cout), replicated(4))
    self.bias = param(rngs, zeros, (cout,), replicated(1)) if bias else None
    self.stride = stride
    self.padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
      x, self.kernel[...], (self.stride, self.stride), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y if self.bias is None else y + self.bias[...]


def find_multiple(n: int, k: int) -> int:
  """Smallest multiple of k that is >= n (LlamaGen's FFN sizing)."""
  return n if n % k == 0 else n + k - n % k


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; the identity when ``key`` is None (evaluation) or rate is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def drop_labels(labels: jax.Array, rate: float, null_class: int, key: jax.Array | None) -> jax.Array:
  """Label dropout for classifier-free guidance: each label becomes ``null_class`` with probability ``rate``."""
  if key is None or rate == 0.0:
    return labels
  return jnp.where(jax.random.uniform(key, labels.shape) < rate, null_class, labels)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean token cross-entropy in float32. logits (..., V), integer targets (...)."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jnp.mean(log_z - picked)


def scan_blocks(
  blocks: nnx.Module | tuple[nnx.Module, ...],
  count: int,
  x: jax.Array,
  apply: Callable[[nnx.Module, jax.Array, Any, jax.Array | int, jax.Array | None], tuple[jax.Array, Any]],
  *,
  cache: Any = None,
  dropout_rng: jax.Array | None = None,
  remat: bool = False,
  remat_policy: str = "nothing_saveable",
  return_hidden: bool = False,
  scan: bool = True,
) -> tuple[jax.Array, Any, jax.Array | None]:
  """Runs ``count`` blocks stacked on a leading axis (``nnx.vmap`` at creation), or a tuple of per-layer blocks
  (:func:`unstack`).

  ``apply(block, h, cache, layer, dropout_key) -> (h, cache)`` runs one block; ``layer`` is the layer index (for
  the layer-first KV cache), ``dropout_key`` None unless ``dropout_rng`` is given (one key per layer).
  x (B, S, D) enters the residual stream in float32. ``remat`` rematerialises each block in the backward pass
  with the named ``jax.checkpoint_policies`` policy. With ``scan`` (and stacked blocks) one ``lax.scan`` runs
  them: one traced block whatever the depth. Otherwise a Python loop over per-layer blocks: ``count`` traced
  blocks, but no per-iteration copies of a layer's weights out of the stack nor stacking of saved activations,
  which on CPU cost small models (the digits demo) ~25 % of a train step and decoding ~20 % at batch 1.
  Returns (h (B, S, D), cache, per-layer h (count, B, S, D) if ``return_hidden`` else None).
  """
  keys = jax.random.split(dropout_rng, count) if dropout_rng is not None else None
  if isinstance(blocks, tuple):  # already unstacked (the decode program)
    graphdef, states = nnx.graphdef(blocks[0]), [nnx.state(b) for b in blocks]
  else:
    graphdef, stacked = nnx.split(blocks)
    states = None if scan else [_layer(stacked, i) for i in range(count)]

  def body(carry, xs):
    h, cache = carry
    layer_state, layer, key = xs
    h, cache = apply(nnx.merge(graphdef, layer_state), h, cache, layer, key)
    h = sharding.constrain(h, ("batch", None, None))
    return (h, cache), (h if return_hidden else None)

  if remat:
    body = jax.checkpoint(body, policy=getattr(jax.checkpoint_policies, remat_policy), prevent_cse=False)
  x = sharding.constrain(x.astype(jnp.float32), ("batch", None, None))
  if states is None:
    (h, cache), hidden = jax.lax.scan(body, (x, cache), (stacked, jnp.arange(count), keys))
    return h, cache, hidden
  carry, hidden = (x, cache), []
  for i, layer_state in enumerate(states):
    carry, h = body(carry, (layer_state, i, None if keys is None else keys[i]))
    hidden.append(h)
  (h, cache) = carry
  return h, cache, jnp.stack(hidden) if return_hidden else None


def _layer(state: Any, i: int) -> Any:
  """Layer ``i`` of a stacked state (leading layer axis)."""
  return jax.tree.map(lambda a: a[i], state)


def unstack(blocks: nnx.Module, count: int) -> tuple[nnx.Module, ...]:
  """The ``count`` stacked blocks as a tuple of per-layer blocks whose weights are copied out of the stack once,
  here (an optimization barrier keeps XLA from sinking the copies back into a surrounding loop): the decode
  program calls it before its loop over forwards, so each forward reads every layer's weights in place instead
  of copying them out of the stack (a full extra read and write of the weights per forward). Costs one extra
  copy of the block weights in memory while it lives."""
  graphdef, state = nnx.split(blocks)
  states = jax.lax.optimization_barrier([_layer(state, i) for i in range(count)])
  return tuple(nnx.merge(graphdef, s) for s in states)
