"""Generation orders: permutations on any grid, the RAR scan orders cell by cell, hierarchical anchors, annealing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from randar_jax.data import orders

GRIDS = [1, 2, 3, (3, 5), (7, 2), 8, 16, (16, 9)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", orders.ORDERS)
def test_every_order_is_a_permutation(name, grid):
  h, w = orders.grid_shape(grid)
  order = orders.draw_order(name, np.random.default_rng(0), grid)
  assert order.dtype == np.int32 and order.shape == (h * w,)
  np.testing.assert_array_equal(np.sort(order), np.arange(h * w))


def _steps(name, grid):
  """Generation step of every cell, as an (h, w) map."""
  h, w = orders.grid_shape(grid)
  step = np.empty(h * w, int)
  step[orders.scan_order(name, grid)] = np.arange(h * w)
  return step.reshape(h, w)


# Worked out by hand from the definitions in the orders module docstring.
EXPECTED_4X4 = {
  "raster": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]],
  "spiral_in": [[6, 5, 4, 3], [7, 14, 13, 2], [8, 15, 12, 1], [9, 10, 11, 0]],
  "spiral_out": [[9, 10, 11, 12], [8, 1, 2, 13], [7, 0, 3, 14], [6, 5, 4, 15]],
  "z_curve": [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]],
  "subsample": [[0, 4, 1, 5], [8, 12, 9, 13], [2, 6, 3, 7], [10, 14, 11, 15]],
  "alternate": [[0, 1, 2, 3], [7, 6, 5, 4], [8, 9, 10, 11], [15, 14, 13, 12]],
}


@pytest.mark.parametrize("name", orders.RAR_ORDERS)
def test_rar_scan_orders_on_4x4(name):
  np.testing.assert_array_equal(_steps(name, 4), EXPECTED_4X4[name])


def test_non_square_spiral_and_alternate():
  np.testing.assert_array_equal(_steps("spiral_in", (3, 5)), [[6, 5, 4, 3, 2], [7, 14, 13, 12, 1], [8, 9, 10, 11, 0]])
  np.testing.assert_array_equal(_steps("alternate", (3, 2)), [[0, 1], [3, 2], [4, 5]])


def test_subsample_visits_coarse_grids_first():
  step = _steps("subsample", 16)
  assert (step[::2, ::2] < 64).all()  # first quarter: the stride-2 sub-image
  assert (step[::4, ::4] < 16).all()  # first sixteenth: the stride-4 sub-image


@pytest.mark.parametrize("grid", [4, (5, 7), 16])
def test_hierarchical_order_puts_anchors_first(grid):
  h, w = orders.grid_shape(grid)
  rng = np.random.default_rng(1)
  order = orders.draw_order("hierarchical", rng, grid)
  rows, cols = np.divmod(order, w)
  anchors = ((h + 1) // 2) * ((w + 1) // 2)
  assert ((rows[:anchors] % 2 == 0) & (cols[:anchors] % 2 == 0)).all()
  assert not ((rows[anchors:] % 2 == 0) & (cols[anchors:] % 2 == 0)).any()
  assert not np.array_equal(order, orders.draw_order("hierarchical", rng, grid))  # both parts are shuffled


def test_random_ratio_schedule():
  start, end = 100, 300
  for step, r in [(0, 1.0), (100, 1.0), (150, 0.75), (200, 0.5), (300, 0.0), (10_000, 0.0)]:
    assert orders.random_ratio(step, start, end) == pytest.approx(r)
  np.testing.assert_allclose(orders.random_ratio(np.array([0, 200, 400]), start, end), [1.0, 0.5, 0.0])
  jitted = jax.jit(lambda s: orders.random_ratio(s, start, end))(jnp.array([50, 250]))
  np.testing.assert_allclose(jitted, [1.0, 0.25])
  assert orders.random_ratio(99, 100, 100) == 1.0 and orders.random_ratio(100, 100, 100) == 0.0
  with pytest.raises(ValueError, match="end after it starts"):
    orders.random_ratio(0, 10, 5)


def test_order_policy():
  rng = np.random.default_rng(0)
  rar = orders.OrderPolicy(anneal=(10, 20))
  assert rar.ratio(0) == 1.0 and rar.ratio(15) == 0.5 and rar.ratio(25) == 0.0
  order, used = rar.draw(rng, 25, 4)
  assert not used and np.array_equal(order, np.arange(16))
  order, used = rar.draw(rng, 0, 4)
  assert used and sorted(order) == list(range(16))
  fixed = orders.OrderPolicy(order="z_curve")
  np.testing.assert_array_equal(fixed.draw(rng, 0, 4)[0], orders.scan_order("z_curve", 4))
  with pytest.raises(ValueError, match="unknown order"):
    orders.OrderPolicy(order="snake")
  with pytest.raises(ValueError, match="unknown scan order"):
    orders.scan_order("snake", 4)


def test_orders_png(tmp_path):
  from randar_jax.cli import main

  assert main(["orders", "--out", str(tmp_path / "orders.png"), "--grid", "8"]) == 0
  from PIL import Image

  assert Image.open(tmp_path / "orders.png").size[0] > 300
