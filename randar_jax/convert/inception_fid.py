"""pytorch-fid's FID Inception (``pt_inception-2015-12-05-6726825d.pth``, a raw ``state_dict()``) -> Flax params.

Module names are identical on both sides (``eval/inception.py``), so the key map is per leaf:

| PyTorch key                                         | Flax leaf                          | transform    |
|-----------------------------------------------------|------------------------------------|--------------|
| ``<conv>.conv.weight`` (O, I, kh, kw), no bias      | ``<conv>/conv/kernel`` (kh, kw, I, O) | OIHW -> HWIO |
| ``<conv>.bn.weight`` / ``.bias``                    | ``<conv>/bn/scale`` / ``bias``     | copy         |
| ``<conv>.bn.running_mean`` / ``.running_var``       | ``<conv>/bn/mean`` / ``var``       | copy         |
| ``fc.weight`` (1008, 2048) / ``fc.bias`` (1008,)    | ``fc/kernel`` (2048, 1008) / ``fc/bias`` | transpose / copy |

``<conv>`` is one of the 94 ``BasicConv2d`` s: ``Conv2d_{1a,2a,2b}_3x3``, ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3`` and the
branches of ``Mixed_{5b,5c,5d,6a,6b,6c,6d,6e,7a,7b,7c}`` (e.g. ``Mixed_6b.branch7x7dbl_3``). The BatchNorm step
counters ``*.num_batches_tracked`` (absent from older files) are ignored. torchvision's ImageNet Inception
(1000 classes, ``AuxLogits``) is a different network and is refused (its ``AuxLogits.*`` keys are unexpected).
"""

from __future__ import annotations

from collections.abc import Mapping

from randar_jax.convert.core import (
  ConversionError,
  Rule,
  TensorSource,
  conv,
  copy,
  flatten,
  linear,
  module_rules,
  unflatten,
)
from randar_jax.eval.inception import InceptionConfig

IGNORE = (r".*\.num_batches_tracked\Z",)
LEAVES = {
  "kernel": ("weight", conv),
  "scale": ("weight", copy),
  "bias": ("bias", copy),
  "mean": ("running_mean", copy),
  "var": ("running_var", copy),
}


def is_inception_fid(keys: list[str]) -> bool:
  return "Mixed_7c.branch_pool.conv.weight" in keys and "Conv2d_1a_3x3.conv.weight" in keys


def infer_config(source: TensorSource) -> InceptionConfig:
  """The number of classes from ``fc.weight``; everything else is fixed by the architecture."""
  if not is_inception_fid(source.keys()):
    raise ConversionError(f"{source.path} is not an Inception checkpoint (no Conv2d_1a_3x3 / Mixed_7c)")
  return InceptionConfig(num_classes=source.shape("fc.weight")[0])


def rules(abstract: Mapping) -> list[Rule]:
  """Per-leaf rules for the BasicConv2d modules, plus the classifier (a Linear, not a conv)."""
  body = unflatten({path: leaf for path, leaf in flatten(abstract).items() if not path.startswith("fc/")})
  return module_rules(body, LEAVES) + [Rule("fc.weight", ("fc/kernel",), linear), Rule("fc.bias", ("fc/bias",), copy)]
