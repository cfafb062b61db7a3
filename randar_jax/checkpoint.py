"""Orbax checkpoints: parameters plus the model config, restorable into a model in one call.

Layout (an Orbax CheckpointManager directory; training workdirs use the same item names and add more):

    DIR/<step>/params/   the NNX parameter state as a nested dict (StandardSave)
    DIR/<step>/config/   JSON: the model config, with 'family' ('randar', ...)

    save_params('ckpt/randar_l', params, config.to_dict())
    model = load_model('ckpt/randar_l')                 # latest step, sharded over the active/default mesh
    model = load_model('randar-l')                      # a released model's name (randar_jax.hub) works too
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from randar_jax import families, sharding

PARAMS, CONFIG = "params", "config"


def _manager(directory: str | os.PathLike, create: bool = False) -> ocp.CheckpointManager:
  if not create:
    from randar_jax import hub  # a release name -> its converted directory (downloaded and converted once)

    directory = hub.resolve(directory)
  path = os.path.abspath(os.fspath(directory))
  if not create and not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoint directory at {path} (nor a released model name: randar-jax pull --list)")
  return ocp.CheckpointManager(path, item_names=(PARAMS, CONFIG), options=ocp.CheckpointManagerOptions(create=create))


def save_params(directory: str | os.PathLike, params: Mapping, config: Mapping[str, Any], step: int = 0) -> str:
  """Writes ``params`` (nested dict of arrays) and ``config`` (JSON-able, with 'family') as checkpoint ``step``."""
  if "family" not in config:
    raise ValueError("config must name its model 'family'")
  with _manager(directory, create=True) as mngr:
    mngr.save(
      step,
      args=ocp.args.Composite(**{PARAMS: ocp.args.StandardSave(dict(params)), CONFIG: ocp.args.JsonSave(dict(config))}),
      force=True,
    )
    mngr.wait_until_finished()
  return os.path.abspath(os.fspath(directory))


def _latest_step(mngr: ocp.CheckpointManager, step: int | None) -> int:
  steps = mngr.all_steps()
  if not steps:
    raise FileNotFoundError(f"{mngr.directory} holds no complete checkpoint")
  if step is None:
    return max(steps)
  if step not in steps:
    raise FileNotFoundError(f"{mngr.directory} has no step {step}; available: {sorted(steps)}")
  return step


def read_config(directory: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
  """The config dict stored with a checkpoint (latest step by default)."""
  with _manager(directory) as mngr:
    step = _latest_step(mngr, step)
    return dict(mngr.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[CONFIG])


def load_model(
  directory: str | os.PathLike,
  *,
  family: str | None = None,
  step: int | None = None,
  mesh: Mesh | None = None,
  **overrides: Any,
) -> nnx.Module:
  """Builds the model described by a checkpoint's config and restores its parameters, sharded over ``mesh``.

  ``family`` checks the kind of model ('randar', ...) and fails clearly on another kind; ``overrides``
  change non-architectural config fields (e.g. ``dtype='bfloat16'``, ``remat=False``).
  """
  values = {**read_config(directory, step), **overrides}
  if family is not None and values.get("family") != family:
    raise ValueError(
      f"{directory} holds a {values.get('family')!r} checkpoint, but a {family!r} model is expected here"
    )
  config = families.config_from_dict(values)
  with sharding.model_context(mesh) as mesh:
    graphdef, state = nnx.get_abstract_model(lambda: families.build(config), mesh)  # shapes + NamedShardings
    target = nnx.to_pure_dict(state)
    with _manager(directory) as mngr:
      step = _latest_step(mngr, step)
      try:
        restored = mngr.restore(step, args=ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(target)}))
      except (ValueError, KeyError) as e:
        raise ValueError(f"{directory}: parameters do not fit the config {config}: {e}") from None
  nnx.replace_by_pure_dict(state, restored[PARAMS])
  return nnx.merge(graphdef, state)


def model_with_params(config, params: Mapping) -> nnx.Module:
  """The model for ``config`` holding ``params`` (a nested dict of arrays, e.g. from ``convert_params``), built
  on the default mesh without initialising weights first."""
  with sharding.model_context():
    graphdef, state = nnx.split(nnx.eval_shape(lambda: families.build(config)))
  nnx.replace_by_pure_dict(state, jax.tree.map(jax.numpy.asarray, params))
  return nnx.merge(graphdef, state)


def model_params(model: nnx.Module) -> dict:
  """The model's parameters as a nested dict of arrays (what save_params stores)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def abstract_params(config) -> dict:
  """Nested dict of ShapeDtypeStruct for a config, without allocating memory."""
  return nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: _build_unsharded(config)), nnx.Param))


def _build_unsharded(config) -> nnx.Module:
  with nnx.use_eager_sharding(False):
    return families.build(config)


def param_count(params: Mapping) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
