"""Convolutional building blocks shared by the VQ tokenizers (NHWC activations, HWIO kernels).

    conv = Conv(128, 256, 3, rngs=rngs)            # 'SAME' padding, stride 1, with bias
    block = ResnetBlock(128, 256, bias=True, shortcut_on_output=False, rngs=rngs)
    codes = Codebook(16384, 8, l2_norm=True, rngs=rngs).nearest(z)   # z (B, h, w, 8) -> (B, h, w) int32

Both originals use GroupNorm(32 groups, eps 1e-6) and swish; they differ in conv biases, the resampling ops
and where the 1x1 shortcut of a channel-changing residual block is applied (see :class:`ResnetBlock`).
The tokenizers are small (<= 72 M parameters), so their parameters carry no sharded axis names: they are
replicated, and the batch is what gets split over devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from randar_jax.models.layers import Conv, normal, ones, param, replicated, zeros

GROUPS, EPS = 32, 1e-6  # GroupNorm of both originals


class GroupNorm(nnx.Module):
  """torch ``GroupNorm(32, C, eps=1e-6)`` on NHWC: statistics per sample and group over H, W and the group's
  channels (biased variance), then a per-channel affine."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    if channels % GROUPS:
      raise ValueError(f"GroupNorm needs channels divisible by {GROUPS}, got {channels}")
    self.scale = param(rngs, ones, (channels,), replicated(1))
    self.bias = param(rngs, zeros, (channels,), replicated(1))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, GROUPS, c // GROUPS)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * jax.lax.rsqrt(var + EPS)
    return g.reshape(x.shape) * self.scale[...] + self.bias[...]


class ResnetBlock(nnx.Module):
  """norm1 -> swish -> conv1 (3x3) -> norm2 -> swish -> conv2 (3x3), plus a residual.

  When the channels change, the residual is a 1x1 ``nin_shortcut``: LlamaGen applies it to the block's input
  (``nin(x) + h``, kernel in -> out); MaskGIT (``shortcut_on_output``) to the block's own output
  (``h + nin(h)``, kernel out -> out, the input is discarded) - a quirk of the original JAX code that the
  released weights depend on. Dropout is 0 in both released configs and omitted (inference only).
  """

  def __init__(self, cin: int, cout: int, *, bias: bool, shortcut_on_output: bool, rngs: nnx.Rngs):
    self.norm1 = GroupNorm(cin, rngs=rngs)
    self.conv1 = Conv(cin, cout, 3, bias=bias, rngs=rngs)
    self.norm2 = GroupNorm(cout, rngs=rngs)
    self.conv2 = Conv(cout, cout, 3, bias=bias, rngs=rngs)
    self.shortcut_on_output = shortcut_on_output
    self.nin_shortcut = (
      Conv(cout if shortcut_on_output else cin, cout, 1, bias=bias, rngs=rngs) if cin != cout else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.nin_shortcut is None:
      return x + h
    if self.shortcut_on_output:
      return h + self.nin_shortcut(h)
    return self.nin_shortcut(x) + h


def sequential(blocks, x: jax.Array) -> jax.Array:
  """Applies modules in order (torch ``for block in blocks: x = block(x)``)."""
  for block in blocks:
    x = block(x)
  return x


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 on H and W (exactly torch's ``interpolate(scale_factor=2, mode='nearest')``)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def l2_normalize(x: jax.Array) -> jax.Array:
  """torch ``F.normalize(x, dim=-1)``: x / max(||x||, 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Codebook(nnx.Module):
  """The VQ codebook ``embedding`` (V, D), stored as released (unnormalised for LlamaGen's L2 variant).

  Nearest-code search uses squared Euclidean distances |z|^2 + |e|^2 - 2 z.e as both originals do, with the
  dot product at highest precision on every backend: a TF32 / bf16 pass could flip near-tied codes.
  """

  def __init__(self, size: int, dim: int, *, l2_norm: bool, rngs: nnx.Rngs):
    self.embedding = param(rngs, normal(1.0), (size, dim), replicated(2))
    self.l2_norm = l2_norm

  def vectors(self) -> jax.Array:
    """The code vectors (V, D) that latents are compared with and decoded from."""
    e = self.embedding[...]
    return l2_normalize(e) if self.l2_norm else e

  def nearest(self, z: jax.Array) -> jax.Array:
    """Latents (..., D) -> int32 indices (...) of the nearest code."""
    e = self.vectors()
    z = l2_normalize(z) if self.l2_norm else z
    dots = jnp.einsum("...d,vd->...v", z, e, precision=jax.lax.Precision.HIGHEST)
    d = jnp.sum(z * z, axis=-1, keepdims=True) + jnp.sum(e * e, axis=-1) - 2 * dots
    return jnp.argmin(d, axis=-1).astype(jnp.int32)

  def lookup(self, codes: jax.Array) -> jax.Array:
    """int codes (...) -> code vectors (..., D)."""
    return jnp.take(self.vectors(), codes, axis=0)
