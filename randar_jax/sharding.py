"""Meshes and logical-axis sharding rules: the one place that maps model axis names onto devices.

Parameters carry logical names (see :mod:`randar_jax.models.layers`); ``RULES`` maps each name to mesh axes.
The same code runs on one CPU (a 1x1x1 mesh), fake CPU devices, a GPU node or a TPU pod slice:

    mesh = build_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})      # -1 takes the remaining devices
    with model_context(mesh):                                      # mesh + rules active
      model = RandAR(cfg, rngs=nnx.Rngs(0))                        # parameters created already sharded
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axes. Data parallel + FSDP over 'embed'; optional tensor parallelism over heads / MLP / vocab.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
  ("batch", BATCH_AXES),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("mlp", "tensor"),
  ("vocab", "tensor"),
  ("classes", None),
  ("layers", None),
  ("cache_slots", None),
)


def build_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axes; one size may be -1 (all remaining devices).

  The default puts every device on 'data'. Auto axes let XLA propagate shardings (GSPMD); jax.make_mesh's
  default (Explicit axes) would demand an out_sharding on every contraction over a sharded axis.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = {axis: 1 for axis in MESH_AXES}
  sizes.update(dict(shape or {"data": -1}))
  if set(sizes) != set(MESH_AXES):
    raise ValueError(f"mesh axes must be {MESH_AXES}, got {tuple(sizes)}")
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {free}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if len(devices) % fixed:
      raise ValueError(f"{len(devices)} devices do not divide into a mesh with fixed sizes {sizes}")
    sizes[free[0]] = len(devices) // fixed
  if math.prod(sizes.values()) != len(devices):
    raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, {len(devices)} are available")
  grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def model_context(mesh: Mesh | None = None, rules=RULES) -> Iterator[Mesh]:
  """Activates a mesh (default: every device on 'data') and the logical rules, for creating or running models."""
  mesh = build_mesh() if mesh is None else mesh
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    yield mesh


def logical_spec(names: Sequence[str | None], rules=RULES) -> PartitionSpec:
  """PartitionSpec for logical axis names, e.g. ('batch', None, 'embed') -> P(('data', 'fsdp'), None, 'fsdp')."""
  table = dict(rules)
  return PartitionSpec(*(table.get(n) if n is not None else None for n in names))


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules=RULES) -> NamedSharding:
  return NamedSharding(mesh, logical_spec(names, rules))


def constrain(x: jax.Array, names: Sequence[str | None], rules=RULES) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op when no mesh is active.

  A dimension that its mesh axes do not divide (e.g. a batch of 2 on 8 devices) is left replicated.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, fitted_spec(x.shape, names, mesh, rules))


def fitted_spec(shape: Sequence[int], names: Sequence[str | None], mesh, rules=RULES) -> PartitionSpec:
  """The PartitionSpec of logical ``names`` for an array of ``shape`` on ``mesh`` (concrete or abstract), with
  every dimension its mesh axes do not divide left replicated."""
  spec = []
  for size, axes in zip(shape, logical_spec(names, rules)):
    parts = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    spec.append(axes if size % parts == 0 else None)
  return PartitionSpec(*spec)


def place_like_outputs(x: jax.Array, names: Sequence[str | None], like: jax.Array, rules=RULES) -> jax.Array:
  """``x`` committed to the sharding a jitted program's output constrained to ``names`` gets when its inputs
  live on ``like``'s mesh: the logical spec under an active mesh (as :func:`constrain`), else replicated. A
  buffer created outside the program (a fresh KV cache) then matches the one it returns and donates back, so
  the second call reuses the first call's executable instead of compiling again for another input sharding."""
  mesh = getattr(like.sharding, "mesh", None)
  if not isinstance(mesh, Mesh):
    return x
  active = jax.sharding.get_abstract_mesh()
  spec = PartitionSpec() if active.empty else fitted_spec(x.shape, names, mesh, rules)
  return jax.device_put(x, NamedSharding(mesh, spec))


def state_shardings(state: nnx.State, mesh: Mesh, rules=RULES) -> nnx.State:
  """NamedShardings for every leaf of an NNX state from its logical annotations."""
  with nnx.logical_axis_rules(rules):
    return nnx.get_named_sharding(state, mesh)
