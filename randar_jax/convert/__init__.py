"""PyTorch checkpoint -> Orbax conversion for every model family.

    params, config = convert_params('randar_0.3b_llamagen_360k_bs_1024_lr_0.0004.safetensors')
    convert_checkpoint('randar_l.safetensors', 'ckpt/randar_l')        # what `randar-jax convert` runs
    convert_checkpoint('rar_l.bin', 'ckpt/rar_l')                      # RAR (raw torch state dict, safe reader)
    convert_checkpoint('c2i_XL_384.pt', 'ckpt/llamagen_xl')            # LlamaGen GPT ({"model": sd} or FSDP raw)
    convert_checkpoint('vq_ds16_c2i.pt', 'ckpt/vq_llamagen')          # tokenizers: .pt / .bin / .safetensors
    convert_checkpoint('pt_inception-2015-12-05-6726825d.pth', 'ckpt/inception')   # the FID Inception
    model = checkpoint.load_model('ckpt/randar_l')

Each family registers how to recognise its state dict, how to infer its config from tensor shapes, and its
strict key map (``convert/<family>.py``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from randar_jax import checkpoint
from randar_jax.convert import inception_fid, llamagen, randar, rar, vq_llamagen, vq_maskgit
from randar_jax.convert.core import ConversionError, Rule, TensorSource, convert, module_rules
from randar_jax.convert.sources import open_source


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  detect: Callable[[list[str]], bool]
  infer_config: Callable[..., Any]
  rules: Sequence[Rule] | Callable[[dict], Sequence[Rule]]   # fixed, or built from the abstract param tree
  ignore: Sequence[str] = ()

  def rules_for(self, abstract: dict) -> Sequence[Rule]:
    return self.rules(abstract) if callable(self.rules) else self.rules


FAMILIES = (
    Family("randar", randar.is_randar, randar.infer_config, randar.RULES, randar.IGNORE),
    Family("rar", rar.is_rar, rar.infer_config, rar.RULES, rar.IGNORE),
    Family("llamagen", llamagen.is_llamagen, llamagen.infer_config, llamagen.RULES, llamagen.IGNORE),
    Family("vq_llamagen", vq_llamagen.is_vq_llamagen, vq_llamagen.infer_config, module_rules, vq_llamagen.IGNORE),
    Family("vq_maskgit", vq_maskgit.is_vq_maskgit, vq_maskgit.infer_config, module_rules, vq_maskgit.IGNORE),
    Family("inception_fid", inception_fid.is_inception_fid, inception_fid.infer_config, inception_fid.rules,
           inception_fid.IGNORE),
)


def detect_family(source: TensorSource) -> Family:
  keys = source.keys()
  found = [f for f in FAMILIES if f.detect(keys)]
  if len(found) != 1:
    raise ConversionError(f"{source.path}: cannot tell which model this state dict belongs to "
                          f"(matches {[f.name for f in found]} of {[f.name for f in FAMILIES]}); "
                          f"first keys: {keys[:5]}")
  return found[0]


def convert_params(path: str | os.PathLike, config=None, *, progress: bool = True,
                   check_only: bool = False) -> tuple[dict | None, Any]:
  """Reads a PyTorch checkpoint into (params, typed config). Without ``config`` it is inferred from shapes.

  ``check_only`` validates every key and shape without keeping the parameters (params is None).
  """
  source = open_source(path)
  family = detect_family(source)
  if config is None:
    try:
      config = family.infer_config(source)
    except KeyError as e:
      raise ConversionError(f"{path}: looks like a {family.name} checkpoint but has no tensor {e}, so its "
                            f"config cannot be inferred; is the file complete?") from None
  elif config.to_dict()["family"] != family.name:
    raise ConversionError(f"{path} is a {family.name} checkpoint but the config is for "
                          f"{config.to_dict()['family']}")
  abstract = checkpoint.abstract_params(config)
  params = convert(source, family.rules_for(abstract), abstract, ignore=family.ignore, progress=progress,
                   check_only=check_only)
  return params, config


def convert_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike, config=None, *,
                       progress: bool = True) -> str:
  """Converts a PyTorch checkpoint into an Orbax checkpoint directory that ``checkpoint.load_model`` reads."""
  params, config = convert_params(path, config, progress=progress)
  return checkpoint.save_params(out_dir, params, config.to_dict())


__all__ = ["ConversionError", "convert_checkpoint", "convert_params", "detect_family"]
