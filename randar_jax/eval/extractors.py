"""The pluggable feature extractor behind every metric: Inception for ImageNet, any other network for other data.

    net = extractors.load('ckpt/inception')                  # a converted Inception checkpoint (or the .pth)
    net = extractors.load('inception:ckpt/inception', preprocessing='tf1')
    feats = net.features(images)                             # uint8 (N, H, W, C) -> float32 (N, D)
    logits = net.logits(feats)                               # optional: class logits (N, K), for the IS

Plugging in another network (the digits demo does this with its classifier): implement :class:`FeatureExtractor`
and register a factory under a name; ``randar-jax eval --features NAME:ARG`` and ``cfg-search --features
NAME:ARG`` then use it, and every statistic is tagged with its ``name`` so that statistics of different networks
are never compared::

    class DigitsFeatures:
      name = 'digits_classifier'
      def features(self, images):          # uint8 (N, 8, 8, 1) -> (N, 64) penultimate activations
        ...
      def logits(self, features):          # (N, 64) -> (N, 10), the classifier head on those features
        ...
    extractors.register('digits', lambda arg: DigitsFeatures(arg))   # arg: the text after 'digits:'

``logits`` takes the *features*, not the images: for Inception (and any classifier whose head is a layer on its
features) this avoids a second pass over the images. Extractors without ``logits`` get no Inception Score.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import jax
import numpy as np
from flax import nnx

from randar_jax import checkpoint, families, hub, sharding
from randar_jax.convert import convert_params
from randar_jax.eval.inception import InceptionExtractor


@runtime_checkable
class FeatureExtractor(Protocol):
  """What the metrics need from a network."""

  name: str  # identifies network + preprocessing; stored with statistics, checked before comparing them

  def features(self, images) -> jax.Array:
    """uint8 images (N, H, W, C) -> float32 features (N, D). Called with fixed-size batches (one compile)."""
    ...


Factory = Callable[[str], FeatureExtractor]
EXTRACTORS: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
  """Makes ``NAME:ARG`` loadable: ``factory(ARG)`` returns the extractor (ARG may be '')."""
  if not name or ":" in name:
    raise ValueError(f"extractor names are non-empty and contain no ':', got {name!r}")
  EXTRACTORS[name] = factory


def load_inception(path: str, preprocessing: str = "pytorch_fid") -> FeatureExtractor:
  """The FID Inception from a converted checkpoint directory or directly from the pytorch-fid ``.pth``, its
  parameters replicated over this process's devices (each process extracts its own images)."""
  mesh = sharding.build_mesh(devices=jax.local_devices())
  if os.path.isfile(path):
    params, config = convert_params(path, progress=False)
    if config.FAMILY != "inception_fid":
      raise ValueError(f"{path} holds a {config.FAMILY!r} model, not the FID Inception")
    with sharding.model_context(mesh):
      graphdef, state = nnx.split(nnx.eval_shape(lambda: families.build(config)))
    nnx.replace_by_pure_dict(state, jax.device_put(params, sharding.named_sharding(mesh, ())))
    model = nnx.merge(graphdef, state)
  elif os.path.isdir(path) or hub.is_release(path):
    model = checkpoint.load_model(path, family="inception_fid", mesh=mesh)
  else:
    raise FileNotFoundError(
      f"no Inception weights at {path}: give the converted checkpoint directory or "
      f"pt_inception-2015-12-05-6726825d.pth (see randar_jax/eval/inception.py)"
    )
  return InceptionExtractor(model, preprocessing, mesh=mesh)


def load(spec: str, *, preprocessing: str = "pytorch_fid") -> FeatureExtractor:
  """'NAME:ARG' of a registered extractor, 'inception:PATH', or a bare PATH (the FID Inception)."""
  name, sep, arg = spec.partition(":")
  if sep and name in EXTRACTORS:
    return EXTRACTORS[name](arg)
  if sep and name == "inception":
    return load_inception(arg, preprocessing)
  if sep and not os.path.exists(spec):
    raise ValueError(
      f"unknown feature extractor {name!r} in {spec!r}; registered: "
      f"{sorted(['inception', *EXTRACTORS])} (register more with randar_jax.eval.extractors.register)"
    )
  return load_inception(spec, preprocessing)


def has_logits(extractor: FeatureExtractor) -> bool:
  return callable(getattr(extractor, "logits", None))


def extract(
  extractor: FeatureExtractor, batches: Iterable, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
  """(features, logits or None) on the host for each batch of uint8 images (host or device arrays).

  Short batches are padded to ``batch_size`` (repeating the last image) and trimmed, so the extractor compiles
  once; the next batch is dispatched before the previous result is copied to the host.
  """
  logits = has_logits(extractor)
  pending = None
  for images in batches:
    n = int(images.shape[0])
    if n > batch_size:
      raise ValueError(f"a batch of {n} images is larger than the batch size {batch_size}")
    if n < batch_size:
      xp = np if isinstance(images, np.ndarray) else jax.numpy
      images = xp.concatenate([images, xp.repeat(images[-1:], batch_size - n, axis=0)])
    feats = extractor.features(images)
    current = (feats, extractor.logits(feats) if logits else None, n)
    if pending is not None:
      yield _to_host(*pending)
    pending = current
  if pending is not None:
    yield _to_host(*pending)


def _to_host(feats, logits, n: int) -> tuple[np.ndarray, np.ndarray | None]:
  return np.asarray(feats)[:n], None if logits is None else np.asarray(logits)[:n]
