"""Generation orders over an h x w token grid, and RAR's randomness annealing.

An order is an int32 permutation of the h*w raster cells: ``order[k]`` is the cell generated at step k.

    scan_order('z_curve', 16)                     # (256,) fixed scan orders, any grid (h, or (h, w))
    draw_order('random', rng, (16, 16))           # a uniform permutation from a np.random.Generator
    policy = OrderPolicy(anneal=(125_000, 187_500))   # RAR: random with prob r(step), else raster
    order, is_random = policy.draw(rng, step, (16, 16))
    plot_orders(RAR_ORDERS, 16, 'orders.png')     # = `randar-jax orders --out orders.png`

Fixed scan orders (RAR paper table 3 / figure 6; the same six as taming-transformers' ``permuter.py``, whose
conventions we follow, generalised to any h x w):
- ``raster``: row-major.
- ``spiral_in``: the outer ring first, peeling inward ring by ring, starting at the bottom-right corner and going
  counter-clockwise (up the right column, left along the top row, down the left column, right along the bottom).
- ``spiral_out``: ``spiral_in`` reversed: starts in the centre and winds outward, ending at the bottom-right corner.
- ``z_curve``: Morton order; the row bit is the more significant of each interleaved pair (2 x 2 blocks in the
  order top-left, top-right, bottom-left, bottom-right, recursively). Non-power-of-two grids keep the same sort.
- ``subsample``: recursive 2 x 2 subsampling: first every cell with (row, col) both even in their coarser
  subsample order, then (even, odd), (odd, even), (odd, odd); i.e. Morton order on bit-reversed coordinates, so the
  first quarter of the sequence is a stride-2 sub-image, the first sixteenth a stride-4 one, and so on.
- ``alternate``: boustrophedon rows: even rows left to right, odd rows right to left.
Random orders: ``random`` (uniform permutation) and ``hierarchical`` (RandAR's resolution-extrapolation order: the
anchor cells with even row and even column in random order, then all other cells in random order).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

Grid = int | tuple[int, int]
RAR_ORDERS = ("raster", "spiral_in", "spiral_out", "z_curve", "subsample", "alternate")
RANDOM_ORDERS = ("random", "hierarchical")
ORDERS = RAR_ORDERS + RANDOM_ORDERS


def grid_shape(grid: Grid) -> tuple[int, int]:
  """(h, w) from an int (square) or a pair."""
  h, w = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(grid)
  if h < 1 or w < 1:
    raise ValueError(f"grid must be positive, got {grid}")
  return int(h), int(w)


def _clockwise_spiral(cells: np.ndarray) -> list[int]:
  """Clockwise spiral from the top-left corner: read the top row, rotate the rest counter-clockwise, repeat."""
  out: list[int] = []
  while cells.size:
    out.extend(cells[0].tolist())
    cells = np.rot90(cells[1:])
  return out


def _interleaved_key(rows: np.ndarray, cols: np.ndarray, bits: int) -> np.ndarray:
  """Morton key with the row bit above the column bit at each level."""
  key = np.zeros_like(rows)
  for b in range(bits):
    key |= ((cols >> b) & 1) << (2 * b) | ((rows >> b) & 1) << (2 * b + 1)
  return key


def _bit_reverse(x: np.ndarray, bits: int) -> np.ndarray:
  out = np.zeros_like(x)
  for b in range(bits):
    out |= ((x >> b) & 1) << (bits - 1 - b)
  return out


@functools.lru_cache(maxsize=64)
def _scan_order(name: str, h: int, w: int) -> np.ndarray:
  cells = np.arange(h * w, dtype=np.int64).reshape(h, w)
  rows, cols = np.divmod(cells.ravel(), w)
  bits = max(h - 1, w - 1, 1).bit_length()
  if name == "raster":
    order = cells.ravel()
  elif name == "spiral_in":
    order = np.array(_clockwise_spiral(cells[::-1, ::-1].T))  # ccw from bottom-right == cw of this view
  elif name == "spiral_out":
    order = _scan_order("spiral_in", h, w)[::-1]
  elif name == "z_curve":
    order = np.argsort(_interleaved_key(rows, cols, bits), kind="stable")
  elif name == "subsample":
    order = np.argsort(_interleaved_key(_bit_reverse(rows, bits), _bit_reverse(cols, bits), bits), kind="stable")
  elif name == "alternate":
    order = np.where((np.arange(h) % 2 == 1)[:, None], cells[:, ::-1], cells).ravel()
  else:
    raise ValueError(f"unknown scan order {name!r}; fixed orders: {RAR_ORDERS}, random orders: {RANDOM_ORDERS}")
  order = np.asarray(order, dtype=np.int32)
  order.setflags(write=False)  # cached and shared: nobody may modify it
  return order


def scan_order(name: str, grid: Grid) -> np.ndarray:
  """A fixed scan order: int32 (h*w,) raster cells in generation order (read-only, cached)."""
  return _scan_order(name, *grid_shape(grid))


def draw_order(name: str, rng: np.random.Generator, grid: Grid) -> np.ndarray:
  """Any order by name; random ones ('random', 'hierarchical') are drawn from ``rng``. int32 (h*w,)."""
  h, w = grid_shape(grid)
  if name == "random":
    return rng.permutation(h * w).astype(np.int32)
  if name == "hierarchical":
    rows, cols = np.divmod(np.arange(h * w), w)
    anchor = (rows % 2 == 0) & (cols % 2 == 0)
    return np.concatenate([rng.permutation(np.flatnonzero(anchor)), rng.permutation(np.flatnonzero(~anchor))]).astype(
      np.int32
    )
  return scan_order(name, (h, w))


def random_ratio(step, start: int, end: int):
  """RAR's annealing r(step): 1 before ``start``, linear to 0 at ``end``, 0 after (numpy or jax, any shape).

  ``start == end`` is a hard switch at that step (r = 0 from ``end`` on); the original divides by zero there.
  """
  if end < start:
    raise ValueError(f"annealing must end after it starts, got start={start}, end={end}")
  if end == start:
    return (step < start) * 1.0
  x = (step - start) / (end - start)
  return 1.0 - (x.clip(0.0, 1.0) if hasattr(x, "clip") else min(max(x, 0.0), 1.0))


@dataclasses.dataclass(frozen=True)
class OrderPolicy:
  """How a training example's order is drawn.

  RandAR: ``OrderPolicy()`` (always random). RAR: ``OrderPolicy(anneal=(125_000, 187_500))``: the random order
  with probability r(step), else ``fallback`` (raster). A fixed scan order (RAR's table 3 ablation):
  ``OrderPolicy(order='z_curve')``.
  """

  order: str = "random"  # any of ORDERS
  anneal: tuple[int, int] | None = None  # (start, end) steps of RAR's annealing; None: no annealing
  fallback: str = "raster"  # the fixed order used with probability 1 - r(step)

  def __post_init__(self):
    for name in (self.order, self.fallback):
      if name not in ORDERS:
        raise ValueError(f"unknown order {name!r}; known: {ORDERS}")
    if self.anneal is not None:
      random_ratio(0, *self.anneal)  # validates the pair

  def ratio(self, step: int) -> float:
    """Probability that an example at ``step`` gets ``order`` rather than ``fallback``."""
    return 1.0 if self.anneal is None else float(random_ratio(step, *self.anneal))

  def draw(self, rng: np.random.Generator, step: int, grid: Grid) -> tuple[np.ndarray, bool]:
    """(order int32 (h*w,), whether ``order`` (not ``fallback``) was used)."""
    use = self.anneal is None or rng.random() < self.ratio(step)
    return draw_order(self.order if use else self.fallback, rng, grid), use


def plot_orders(names, grid: Grid, path: str | os.PathLike, seed: int = 0) -> str:
  """Saves a PNG with one panel per order: the generation step of each cell (colour) and, for orders that move
  locally, the path through the cells."""
  from matplotlib.figure import Figure  # not pyplot: no global backend switch (a notebook keeps its inline one)

  h, w = grid_shape(grid)
  rng = np.random.default_rng(seed)
  cols = min(3, len(names))
  rows = -(-len(names) // cols)
  fig = Figure(figsize=(3.2 * cols, 3.6 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  for ax, name in zip(axes.ravel(), names):
    order = draw_order(name, rng, (h, w))
    step = np.empty(h * w, np.int32)
    step[order] = np.arange(h * w)
    ax.imshow(step.reshape(h, w), cmap="viridis", interpolation="nearest")
    y, x = np.divmod(order, w)
    if np.hypot(np.diff(x), np.diff(y)).mean() < 2:  # a path through jumpy orders is only clutter
      ax.plot(x, y, color="white", linewidth=0.8, alpha=0.8)
    ax.plot(x[0], y[0], "o", color="red", markersize=4)  # where generation starts
    ax.set_title(name.replace("_", " "))
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in axes.ravel()[len(names) :]:
    ax.axis("off")
  fig.suptitle(f"generation orders on a {h}x{w} grid (colour: step, dark = early; red dot: first cell)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return os.fspath(path)
