"""Checks a training setup before the first step: every problem is one line (:class:`SetupError`), found before
anything is compiled, loaded or written.

    model_config, optim_config, mesh = check_config(config)     # fields, batch, mesh, sample / eval hooks
    check_source(source, model_config, 'codes/...')             # vocabulary, grid, classes; spot-checked records
    check_tokenizer('pixels:17', model_config)                  # the sample grids' tokenizer fits the model
    check_workdir(workdir, trainer.abstract)                    # writable, room for two checkpoints
    suggest('optim.lrr', known_keys)                            # "did you mean 'optim.lr'?" for override typos
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from randar_jax import families, sharding
from randar_jax.train.optim import OptimConfig

SPOT_CHECKS = 64  # records read from the data source before training (spread evenly over it)
SAMPLE_SETTINGS = ("cfg", "cfg_interval", "temperature", "top_k", "top_p", "order")  # decode_settings' overrides


class SetupError(ValueError):
  """A training setup that cannot work (one line, for the user; the launcher exits with code 2)."""


def flat_keys(config: Mapping, prefix: str = "") -> list[str]:
  """'a.b.c' for every leaf of a nested config."""
  keys = []
  for k, v in config.items():
    nested = isinstance(v, Mapping | ml_collections.ConfigDict)
    keys += flat_keys(v, f"{prefix}{k}.") if nested else [f"{prefix}{k}"]
  return keys


def suggest(name: str, known: Iterable[str]) -> str:
  """' (did you mean 'x' or 'y'?)' for the nearest known names (whole dotted name, else the last part), or ''."""
  known = list(known)
  close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
  if not close:
    leaves = {}
    for k in known:
      leaves.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    for leaf in difflib.get_close_matches(name.rsplit(".", 1)[-1], list(leaves), n=3, cutoff=0.6):
      close += leaves[leaf]
  return f" (did you mean {' or '.join(repr(n) for n in close[:3])}?)" if close else ""


def check_config(config: ml_collections.ConfigDict) -> tuple[Any, OptimConfig, jax.sharding.Mesh]:
  """(model config, optim config, mesh) of a run config, or SetupError naming the field."""
  for key in ("total_steps", "batch_size", "log_every", "ckpt_every"):
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
      raise SetupError(f"config.{key} must be a positive integer, got {value!r}")
  try:
    model_config = families.config_from_dict(config.model.to_dict())
  except (ValueError, TypeError, KeyError) as e:
    raise SetupError(f"config.model: {one_line(e)}") from None
  try:
    optim_config = OptimConfig.from_dict(config.optim)
  except (ValueError, TypeError) as e:
    raise SetupError(f"config.optim: {one_line(e)}") from None
  try:
    mesh = sharding.build_mesh(dict(config.mesh))
  except ValueError as e:
    raise SetupError(f"config.mesh: {one_line(e)}") from None
  shards = mesh.shape["data"] * mesh.shape["fsdp"] * optim_config.grad_accum
  if config.batch_size % shards:
    raise SetupError(
      f"config.batch_size {config.batch_size} must divide into {mesh.shape['data']} x {mesh.shape['fsdp']} "
      f"batch shards x {optim_config.grad_accum} micro-batches"
    )
  if config.batch_size % jax.process_count():
    raise SetupError(f"config.batch_size {config.batch_size} does not divide over {jax.process_count()} processes")
  if config.sample.every:  # the sample hook's settings must fit the model before step 1, not at its first call
    kwargs = dict(config.sample.kwargs)
    try:
      families.of(model_config).decode_settings(
        model_config, steps=kwargs.get("num_steps"), **{k: kwargs[k] for k in SAMPLE_SETTINGS if k in kwargs}
      )
    except (ValueError, TypeError) as e:
      raise SetupError(f"config.sample.kwargs do not fit the model: {one_line(e)}") from None
  if config.sample.every and config.get("tokenizer"):
    check_tokenizer(config.tokenizer, model_config)
  if config.eval.every and config.eval.batches <= 0:
    raise SetupError(f"config.eval.batches must be positive when eval.every is set, got {config.eval.batches}")
  return model_config, optim_config, mesh


def check_tokenizer(spec: str, model_config) -> None:
  """The sample grids' tokenizer decodes the model's codes: same vocabulary (read without loading weights)."""
  try:
    if spec.startswith("pixels:"):
      vocab = int(spec.split(":", 1)[1])
    else:
      from flax import nnx

      from randar_jax import checkpoint

      cfg = families.config_from_dict(checkpoint.read_config(spec))
      vocab = nnx.eval_shape(lambda: families.build(cfg, 0)).vocab_size
  except Exception as e:  # noqa: BLE001 - missing, unreadable or not a tokenizer: the user's to fix
    raise SetupError(f"config.tokenizer {spec!r}: {one_line(e)}") from None
  if vocab != model_config.vocab_size:
    raise SetupError(
      f"config.tokenizer {spec!r} has {vocab} codes; the model's vocabulary is {model_config.vocab_size}"
    )


def check_source(source, model_config, spec: str) -> None:
  """The codes fit the model: vocabulary and classes from the source's metadata, then ``SPOT_CHECKS`` records
  (ids in [0, vocab_size), labels in [0, num_classes)); a bad record is named by shard and record."""
  vocab, classes = model_config.vocab_size, model_config.num_classes
  if getattr(source, "vocab_size", None) and source.vocab_size > vocab:
    raise SetupError(f"{spec} holds codes of a {source.vocab_size}-token vocabulary; the model has {vocab}")
  meta_classes = getattr(source, "meta", {}).get("num_classes") if hasattr(source, "meta") else None
  if meta_classes and meta_classes > classes:
    raise SetupError(f"{spec} holds {meta_classes} classes; the model has {classes} (model.num_classes)")
  n = len(source)
  if n == 0:
    raise SetupError(f"{spec} holds no records")
  for i in np.unique(np.linspace(0, n - 1, min(n, SPOT_CHECKS)).astype(np.int64)):
    where = source.locate(int(i)) if hasattr(source, "locate") else f"record {i}"
    try:
      record = source[int(i)]
    except Exception as e:  # noqa: BLE001 - any read failure is a damaged source, named by its record
      raise SetupError(f"{spec}: cannot read {where}: {one_line(e)}") from None
    codes, label = np.asarray(record["codes"]), int(record["label"])
    if codes.size and (codes.min() < 0 or codes.max() >= vocab):
      raise SetupError(
        f"{spec}: {where} holds token id {int(codes.max() if codes.max() >= vocab else codes.min())} outside the "
        f"model's vocabulary [0, {vocab}) (model.vocab_size)"
      )
    if not 0 <= label < classes:
      raise SetupError(f"{spec}: {where} has label {label} outside [0, {classes}) (model.num_classes)")


def state_bytes(abstract: Any) -> int:
  """Bytes of a (abstract) train state: what one checkpoint holds."""
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract))


def check_workdir(workdir: str, abstract: Any) -> None:
  """``workdir`` (or the directory that would hold it) is writable with room for two checkpoints."""
  if "://" in workdir:  # object stores: nothing to check cheaply here
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise SetupError(f"--workdir {workdir} exists and is not a directory")
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.access(existing, os.W_OK | os.X_OK):
    raise SetupError(f"--workdir {workdir}: {existing} is not writable")
  need, free = 2 * state_bytes(abstract), shutil.disk_usage(existing).free
  if free < need:
    raise SetupError(
      f"--workdir {workdir}: {free / 2**30:.2f} GiB free, two checkpoints need {need / 2**30:.2f} GiB "
      f"(parameters and optimizer state)"
    )


def one_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0] if lines else type(e).__name__
