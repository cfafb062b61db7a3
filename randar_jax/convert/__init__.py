"""PyTorch checkpoint -> Orbax conversion for every model family.

    params, config = convert_params('randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors')
    convert_checkpoint('randar_l.safetensors', 'ckpt/randar_l')        # what `randar-jax convert` runs
    convert_checkpoint('rar_l.bin', 'ckpt/rar_l')                      # RAR (raw torch state dict, safe reader)
    convert_checkpoint('vq_ds16_c2i.pt', 'ckpt/vq_llamagen')          # tokenizers: .pt / .bin / .safetensors
    convert_checkpoint('pt_inception-2015-12-05-6726825d.pth', 'ckpt/inception')   # the FID Inception
    convert_checkpoint('tiny.safetensors', 'ckpt/tiny', config_from_spec('tiny_args.json:n_layer=4'))  # own sizes
    model = checkpoint.load_model('ckpt/randar_l')

Each family's spec (:mod:`randar_jax.families`) holds a :class:`~randar_jax.convert.core.Converter`: how to
recognise its state dict, how to infer its config from tensor shapes, and its strict key map (``convert/<family>.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from randar_jax import checkpoint, config_io, families
from randar_jax.convert.core import ConversionError, TensorSource, convert
from randar_jax.convert.sources import open_source
from randar_jax.utils import files


def detect_family(source: TensorSource) -> families.Family:
  """The one registered family whose converter recognises the state dict's keys."""
  keys = source.keys()
  convertible = [spec for spec in families.SPECS.values() if spec.converter is not None]
  found = [spec for spec in convertible if spec.converter.detect(keys)]
  if len(found) != 1:
    raise ConversionError(
      f"{source.path}: cannot tell which model this state dict belongs to "
      f"(matches {[f.name for f in found]} of {[f.name for f in convertible]}); "
      f"first keys: {keys[:5]}"
    )
  return found[0]


def config_from_spec(spec: str):
  """``convert --config``: a recipe or config file (``randar:variant=L``; its model config), or a JSON of the
  original constructor's arguments with overrides (``args.json[:key=value,...]``; a dict, typed by
  :func:`convert_params` once the weights tell the family)."""
  if spec.partition(":")[0].endswith(".json"):
    return config_io.load_original(spec)
  return families.config_from_dict(config_io.load_config(spec).model.to_dict())


def convert_params(
  path: str | os.PathLike, config=None, *, progress: bool = True, check_only: bool = False
) -> tuple[dict | None, Any]:
  """Reads a PyTorch checkpoint into (params, typed config). Without ``config`` it is inferred from shapes; a
  dict ``config`` holds the original constructor's arguments (:func:`config_from_spec`).

  ``check_only`` validates every key and shape without keeping the parameters (params is None).
  """
  source = open_source(path)
  family = detect_family(source)
  if config is None:
    try:
      config = family.converter.infer_config(source)
    except KeyError as e:
      raise ConversionError(
        f"{path}: looks like a {family.name} checkpoint but has no tensor {e}, so its "
        f"config cannot be inferred; is the file complete?"
      ) from None
  elif isinstance(config, Mapping):
    config = family.config.from_original(config)
  elif config.FAMILY != family.name:
    raise ConversionError(f"{path} is a {family.name} checkpoint but the config is for {config.FAMILY}")
  abstract = checkpoint.abstract_params(config)
  converter = family.converter
  params = convert(
    source, converter.rules_for(abstract), abstract, ignore=converter.ignore, progress=progress, check_only=check_only
  )
  return params, config


TRAINING_ITEMS = ("opt_state", "run_config", "data", "ema")  # what a training workdir's steps hold besides params


def check_output(out: str | os.PathLike, *, overwrite: bool = False) -> None:
  """Refuses, before any conversion work, an output that cannot become a converted checkpoint: a file, an unwritable
  place, a training workdir (its newest training step would shadow the converted one), a folder holding something
  else, or an existing checkpoint without ``overwrite``."""
  path = os.path.abspath(os.fspath(out))
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ValueError(f"output {out} is a file, not a checkpoint directory; choose a new directory")
  if os.path.isdir(path) and os.listdir(path):
    entries = sorted(os.listdir(path))
    steps = [e for e in entries if e.isdigit() and os.path.isdir(os.path.join(path, e))]
    training = sorted({i for s in steps for i in os.listdir(os.path.join(path, s)) if i in TRAINING_ITEMS})
    if training:
      raise ValueError(
        f"output {out} holds a training run (its steps have {', '.join(training)}); readers load its newest "
        f"step, so a converted checkpoint there would never be used: choose another directory"
      )
    if len(steps) != len(entries):
      others = [e for e in entries if e not in steps][:3]
      raise ValueError(f"output {out} is a folder holding other files ({', '.join(others)}); choose a new directory")
    if not overwrite:
      raise ValueError(f"output {out} already holds a checkpoint; pass --overwrite to replace it")
  files.check_output_dir(path, "output")


def save_checkpoint(out: str | os.PathLike, params, config, *, overwrite: bool = False) -> str:
  """Writes a converted checkpoint whole or not at all: under a temporary name, renamed when complete (an existing
  one is replaced only then, with ``overwrite``)."""
  check_output(out, overwrite=overwrite)
  with files.atomic_path(out) as tmp:
    checkpoint.save_params(tmp, params, config.to_dict())
  return os.path.abspath(os.fspath(out))


def convert_checkpoint(
  path: str | os.PathLike, out_dir: str | os.PathLike, config=None, *, progress: bool = True, overwrite: bool = False
) -> str:
  """Converts a PyTorch checkpoint into an Orbax checkpoint directory that ``checkpoint.load_model`` reads."""
  check_output(out_dir, overwrite=overwrite)
  params, config = convert_params(path, config, progress=progress)
  return save_checkpoint(out_dir, params, config, overwrite=overwrite)


__all__ = [
  "ConversionError",
  "check_output",
  "config_from_spec",
  "convert_checkpoint",
  "convert_params",
  "detect_family",
  "save_checkpoint",
]
