"""2D rotary position embeddings (RoPE) exactly as LlamaGen / RandAR compute them.

A RoPE *table* holds one row of (cos, sin) pairs per grid cell: shape (cells, head_dim // 2, 2), row-major over
(row, col). The first half of the pairs rotates by ``row * freq_k`` (y first), the second half by ``col * freq_k``
(x second). Rotation acts on *adjacent* pairs ``(v[2j], v[2j+1])`` (interleaved, not NeoX half-split).

    table = rope_table(grid_size=16, head_dim=64)          # (256, 32, 2)
    rows = gather_rows(table, cells)                        # (B, S, 32, 2); cell -1 -> zero row (class token)
    q = apply_rope(q, rows)                                 # q: (B, S, H, 64)

Tables are NumPy float32, computed in the same float32 op order as the PyTorch original, so they match it to
the last bit; they become compile-time constants inside jitted code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def axis_frequencies(head_dim: int, base: float = 10000.0) -> np.ndarray:
  """The head_dim // 4 per-axis frequencies ``base ** (-2k / (head_dim / 2))`` in float32."""
  if head_dim % 4:
    raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
  half = head_dim // 2
  exponents = np.arange(0, half, 2, dtype=np.float32)[: half // 2] / np.float32(half)
  return (np.float32(1.0) / np.power(np.float32(base), exponents)).astype(np.float32)


def table_from_angles(row_angles: np.ndarray, col_angles: np.ndarray) -> np.ndarray:
  """Combines per-axis angles (rows, head_dim // 4) and (cols, head_dim // 4) into a row-major table
  (rows * cols, head_dim // 2, 2)."""
  rows, quarter = row_angles.shape
  cols = col_angles.shape[0]
  angles = np.concatenate(
    [
      np.broadcast_to(row_angles[:, None, :], (rows, cols, quarter)),  # y first
      np.broadcast_to(col_angles[None, :, :], (rows, cols, quarter)),  # x second
    ],
    axis=-1,
  )
  table = np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32)
  return table.reshape(rows * cols, 2 * quarter, 2)


def axis_angles(
  length: int, head_dim: int, base: float = 10000.0, trained: float | None = None, ntk_boundary: int = 2
) -> np.ndarray:
  """Angles (length, head_dim // 4) for positions 0..length-1 along one axis.

  If the axis is longer than the ``trained`` length, NTK mixing applies (RandAR resolution extrapolation):
  frequencies with index < ``ntk_boundary`` (the highest) see the extrapolated positions 0..length-1, the
  others see positions interpolated onto the trained range, ``linspace(0, trained - 1, length)``.
  """
  freqs = axis_frequencies(head_dim, base)
  extrapolated = np.arange(length, dtype=np.float32)
  if trained is None or length <= trained:
    return np.outer(extrapolated, freqs).astype(np.float32)
  interpolated = np.linspace(0, trained - 1, length, dtype=np.float32)
  return np.concatenate(
    [np.outer(extrapolated, freqs[:ntk_boundary]), np.outer(interpolated, freqs[ntk_boundary:])], axis=-1
  ).astype(np.float32)


def rope_table(grid_size: int, head_dim: int, base: float = 10000.0) -> np.ndarray:
  """The standard 2D table for a ``grid_size x grid_size`` grid: (grid_size**2, head_dim // 2, 2) float32."""
  angles = axis_angles(grid_size, head_dim, base)
  return table_from_angles(angles, angles)


def extrapolated_rope_table(
  grid_size: int, head_dim: int, base: float = 10000.0, factor: float = 2.0, ntk_boundary: int = 2
) -> np.ndarray:
  """NTK-mixed table for a ``grid_size``-wide grid from a model trained on ``grid_size / factor``
  (RandAR ``precompute_freqs_cis_2d_extrapolation``)."""
  angles = axis_angles(grid_size, head_dim, base, grid_size / factor, ntk_boundary)
  return table_from_angles(angles, angles)


def canvas_rope_table(
  rows: int, cols: int, head_dim: int, base: float, trained_grid: int, ntk_boundary: int = 2
) -> np.ndarray:
  """Table for a rows x cols canvas (e.g. outpainting 16x16 -> 16x32): axes longer than the trained grid are
  NTK-mixed as in resolution extrapolation; the others keep the trained positions."""
  return table_from_angles(
    axis_angles(rows, head_dim, base, trained_grid, ntk_boundary),
    axis_angles(cols, head_dim, base, trained_grid, ntk_boundary),
  )


def with_class_rows(table: np.ndarray, num_class_tokens: int = 1) -> np.ndarray:
  """Prepends all-zero rows for the class token(s), as the original ``freqs_cis`` buffer does."""
  zeros = np.zeros((num_class_tokens,) + table.shape[1:], table.dtype)
  return np.concatenate([zeros, table], axis=0)


def gather_rows(table: np.ndarray | jax.Array, cells: jax.Array) -> jax.Array:
  """Looks up table rows for cells (any shape, int); cell -1 gives the zero row used for class tokens.

  Returns cells.shape + (head_dim // 2, 2) float32. A zero row turns the rotated vector into exactly 0.
  """
  padded = jnp.concatenate([jnp.zeros((1,) + table.shape[1:], jnp.float32), jnp.asarray(table, jnp.float32)])
  return padded[cells + 1]


def apply_rope(x: jax.Array, rows: jax.Array) -> jax.Array:
  """Rotates adjacent pairs of the last axis of x (..., S, H, head_dim) by rows (..., S, head_dim // 2, 2).

  The rotation runs in float32 and the result is cast back to x.dtype (as the original does).
  """
  pairs = x.astype(jnp.float32).reshape(x.shape[:-1] + (x.shape[-1] // 2, 2))
  cos, sin = rows[..., None, :, 0], rows[..., None, :, 1]  # broadcast over heads
  a, b = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([a * cos - b * sin, b * cos + a * sin], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)
