"""Strict, streaming conversion of PyTorch state dicts into Flax parameter trees.

A converter is a list of :class:`Rule` s. Each rule names a source key template (``{i}`` = layer index), the
target leaves it fills (``/``-separated paths in the NNX state; stacked leaves get the layer as axis 0) and a
transform from the torch tensor to the target arrays. :func:`convert` is strict:

* every source key is used by exactly one rule (or matched by an explicit ignore pattern),
* every target leaf (and every layer slice of a stacked leaf) is filled exactly once,
* every transformed array has exactly the target shape,

otherwise it raises :class:`ConversionError` naming the key and both shapes. Coverage is checked from the key
names alone, before any tensor is read; tensors are then read one at a time (bounded memory: the target tree
plus one tensor) with a progress bar.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

Shape = tuple[int, ...]
# transform(tensor, target_shapes) -> one array per target leaf (per layer slice for stacked leaves)
Transform = Callable[[np.ndarray, Sequence[Shape]], Sequence[np.ndarray]]
_FLOAT_DTYPES = {"F32", "F16", "BF16", "F64", "float32", "float16", "bfloat16", "float64"}


class ConversionError(ValueError):
  """A checkpoint does not fit the model: missing, unexpected or mis-shaped tensors, or an unreadable file."""


class TensorSource(Protocol):
  """Random access to a state dict without loading it: key names, shapes and dtypes first, tensors on demand."""

  path: str

  def keys(self) -> list[str]: ...
  def shape(self, key: str) -> Shape: ...
  def dtype(self, key: str) -> str: ...
  def get(self, key: str) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Rule:
  source: str  # e.g. 'layers.{i}.attention.wo.weight'
  targets: tuple[str, ...]  # e.g. ('layers/attention/wo',)
  transform: Transform

  @property
  def stacked(self) -> bool:
    return "{i}" in self.source

  @property
  def regex(self) -> re.Pattern:
    return re.compile(re.escape(self.source).replace(r"\{i\}", r"(\d+)") + r"\Z")


@dataclasses.dataclass(frozen=True)
class Converter:
  """How one family's PyTorch state dicts convert: recognise the keys, infer the config from tensor shapes
  (for released sizes), and the strict rules (fixed, or built from the abstract parameter tree)."""

  detect: Callable[[list[str]], bool]
  infer_config: Callable[..., object]
  rules: Sequence[Rule] | Callable[[dict], Sequence[Rule]]
  ignore: Sequence[str] = ()  # regexes of source keys that are read past (e.g. KV-cache buffers)

  def rules_for(self, abstract: dict) -> Sequence[Rule]:
    return self.rules(abstract) if callable(self.rules) else self.rules


# ---- transforms ------------------------------------------------------------------------------------------------


def _reshaped(array: np.ndarray, shape: Shape, what: str) -> np.ndarray:
  if array.size != math.prod(shape):
    raise ConversionError(f"{what}: cannot reshape {array.shape} into {shape}")
  return array.reshape(shape)


def copy(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """Same layout (embeddings, norm scales, bare parameters). Shapes must match exactly."""
  if tuple(tensor.shape) != tuple(shapes[0]):
    raise ConversionError(f"shape {tuple(tensor.shape)} does not match the model's {tuple(shapes[0])}")
  return [tensor]


def squeeze(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """Drops leading unit axes of a bare parameter, e.g. (1, 1, D) -> (1, D) or (1, R, D) -> (R, D)."""
  shape = tuple(shapes[0])
  extra = tensor.ndim - len(shape)
  if extra < 0 or tensor.shape[:extra] != (1,) * extra or tuple(tensor.shape[extra:]) != shape:
    raise ConversionError(f"shape {tuple(tensor.shape)} is not the model's {shape} with leading unit axes")
  return [tensor.reshape(shape)]


def vector(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """A 1-D tensor (a bias) split into the target's output axes, e.g. qkv bias (3D,) -> (3, H, hd)."""
  if tensor.ndim != 1:
    raise ConversionError(f"expected a 1-D tensor for the model's {tuple(shapes[0])}, got {tuple(tensor.shape)}")
  return [_reshaped(tensor, tuple(shapes[0]), "vector")]


def linear_in_heads(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """torch Linear (out, heads * head_dim) -> kernel (heads, head_dim, out) (attention output projections)."""
  out_dim = shapes[0][-1]
  if tensor.ndim != 2 or tensor.shape[0] != out_dim or tensor.shape[1] != math.prod(shapes[0][:-1]):
    raise ConversionError(f"shape {tuple(tensor.shape)} does not fit the model's kernel {tuple(shapes[0])}")
  return [tensor.T.reshape(shapes[0])]


def linear(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """torch Linear (out, in) -> kernel (in, *out_dims), e.g. (in, out) or (in, heads, head_dim).

  With several targets the output rows are their concatenation (a fused qkv): it is split in target order,
  e.g. [q | k | v].
  """
  in_dim = shapes[0][0]
  widths = [math.prod(s[1:]) for s in shapes]
  if tensor.ndim != 2 or tensor.shape != (sum(widths), in_dim) or any(s[0] != in_dim for s in shapes):
    expected = (sum(widths), in_dim)
    raise ConversionError(
      f"shape {tuple(tensor.shape)} does not match the model's {expected} (kernels {[tuple(s) for s in shapes]})"
    )
  parts = np.split(tensor, np.cumsum(widths)[:-1], axis=0)
  return [part.T.reshape(shape) for part, shape in zip(parts, shapes)]


def conv(tensor: np.ndarray, shapes: Sequence[Shape]) -> list[np.ndarray]:
  """torch Conv2d (O, I, kh, kw) -> Flax (kh, kw, I, O)."""
  if tensor.ndim != 4:
    raise ConversionError(f"expected a 4-D conv weight, got shape {tuple(tensor.shape)}")
  return copy(tensor.transpose(2, 3, 1, 0), shapes)


# ---- the driver -----------------------------------------------------------------------------------------------


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    out.update(flatten(value, path + "/") if isinstance(value, Mapping) else {path: value})
  return out


def unflatten(flat: Mapping[str, object]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def _plan(
  keys: Iterable[str], rules: Sequence[Rule], ignore: Sequence[str], layers: int
) -> list[tuple[str, Rule, int | None]]:
  """Matches every key to one rule and checks that every (rule, layer) is covered, before reading tensors."""
  plan, unexpected, seen = [], [], {}
  ignored = [re.compile(p) for p in ignore]
  for key in keys:
    matches = [(rule, m) for rule in rules if (m := rule.regex.match(key))]
    if not matches:
      if not any(p.match(key) for p in ignored):
        unexpected.append(key)
      continue
    if len(matches) > 1:
      raise ConversionError(f"key {key!r} matches several rules: {[r.source for r, _ in matches]}")
    rule, match = matches[0]
    layer = int(match.group(1)) if rule.stacked else None
    if layer is not None and layer >= layers:
      unexpected.append(key)
      continue
    seen[(rule.source, layer)] = key
    plan.append((key, rule, layer))
  missing = [
    rule.source.format(i=i) if rule.stacked else rule.source
    for rule in rules
    for i in (range(layers) if rule.stacked else [None])
    if (rule.source, i) not in seen
  ]
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} key(s) the model needs: {_preview(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected key(s) the model has no place for: {_preview(unexpected)}")
  if problems:
    raise ConversionError("; ".join(problems) + " -- does the config match this checkpoint?")
  return plan


def _preview(keys: list[str], n: int = 6) -> str:
  return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def convert(
  source: TensorSource,
  rules: Sequence[Rule],
  abstract: Mapping,
  *,
  ignore: Sequence[str] = (),
  progress: bool = True,
  check_only: bool = False,
) -> dict | None:
  """Fills a parameter tree shaped like ``abstract`` (nested dict of objects with .shape) from ``source``.

  Returns a nested dict of float32 NumPy arrays. Raises ConversionError on any mismatch (see module doc).
  With ``check_only`` every tensor is read and transformed, but nothing is kept (returns None).
  """
  targets = {path: tuple(leaf.shape) for path, leaf in flatten(abstract).items()}
  for rule in rules:
    for path in rule.targets:
      if path not in targets:
        raise ConversionError(f"rule {rule.source!r} targets {path!r}, which the model does not have")
  unfilled = set(targets) - {p for rule in rules for p in rule.targets}
  if unfilled:
    raise ConversionError(f"no rule fills model parameters {sorted(unfilled)}")
  layer_counts = {targets[p][0] for rule in rules if rule.stacked for p in rule.targets}
  if len(layer_counts) > 1:
    raise ConversionError(f"stacked parameters disagree on the number of layers: {sorted(layer_counts)}")
  plan = _plan(source.keys(), rules, ignore, layer_counts.pop() if layer_counts else 0)

  out = {} if check_only else {path: np.empty(shape, np.float32) for path, shape in targets.items()}
  for key, rule, layer in tqdm(plan, desc=f"converting {source.path}", unit="tensor", disable=not progress):
    if source.dtype(key) not in _FLOAT_DTYPES:
      raise ConversionError(f"{key}: expected a floating-point tensor, found dtype {source.dtype(key)}")
    shapes = [targets[p][1:] if layer is not None else targets[p] for p in rule.targets]
    declared, needed = math.prod(source.shape(key)), sum(math.prod(s) for s in shapes)
    if declared != needed:  # checked on the declared shape, before the tensor's bytes are read
      raise ConversionError(
        f"{key}: declared shape {tuple(source.shape(key))} ({declared:,} values) does not match the model's "
        f"{[tuple(s) for s in shapes]} ({needed:,} values) -- does the config match this checkpoint?"
      )
    try:
      arrays = rule.transform(np.asarray(source.get(key), dtype=np.float32), shapes)
    except ConversionError as e:
      raise ConversionError(f"{key}: {e}") from None
    for path, array, shape in zip(rule.targets, arrays, shapes):
      if tuple(array.shape) != tuple(shape):
        raise ConversionError(f"{key}: converted shape {tuple(array.shape)} != model shape {tuple(shape)}")
      if check_only:
        continue
      if layer is None:
        out[path][...] = array
      else:
        out[path][layer] = array
  return None if check_only else unflatten(out)


# Flax leaf -> (PyTorch parameter name, transform) for torch's Conv2d / GroupNorm / Embedding-holding modules.
TORCH_LEAVES: dict[str, tuple[str, Transform]] = {
  "kernel": ("weight", conv),
  "bias": ("bias", copy),
  "scale": ("weight", copy),
  "embedding": ("embedding.weight", copy),
}


def module_rules(abstract: Mapping, leaves: Mapping[str, tuple[str, Transform]] = TORCH_LEAVES) -> list[Rule]:
  """One rule per parameter of a model whose module paths equal the PyTorch module names.

  The target ``encoder/conv_blocks/0/res/1/conv1/kernel`` is filled from ``encoder.conv_blocks.0.res.1.conv1``
  plus the torch name and transform of its leaf (``leaves['kernel'] = ('weight', conv)``). Coverage stays
  strict both ways: a source key the model lacks is unexpected, a parameter the file lacks is missing.
  """
  rules = []
  for path in flatten(abstract):
    *modules, leaf = path.split("/")
    if leaf not in leaves:
      raise ConversionError(f"no PyTorch name is known for parameter {path!r} (leaf {leaf!r})")
    name, transform = leaves[leaf]
    rules.append(Rule(".".join([*modules, name]), (path,), transform))
  return rules


def count_children(keys: Iterable[str], prefix: str) -> int:
  """How many numbered children ``prefix{i}.`` the keys have (e.g. layers, levels or blocks)."""
  return len({m.group(1) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
