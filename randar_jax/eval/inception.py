"""InceptionV3 as used for FID (pytorch-fid's ``fid_inception_v3``), in Flax NNX: 2048-d pool-3 features and the
1008-way logits for the Inception Score.

    model = checkpoint.load_model('ckpt/inception', family='inception_fid')   # after `randar-jax convert` (below)
    net = InceptionExtractor(model)                    # the FeatureExtractor the metrics use
    feats = net.features(images)                       # uint8 (N, H, W, 3) -> float32 (N, 2048)
    logits = net.logits(feats)                         # -> (N, 1008), pool-3 @ fc without bias (ADM / IS)

Weights: pytorch-fid's port of the TF graph ``inception-2015-12-05`` (the network of the TF FID code and of the ADM
evaluator), ``pt_inception-2015-12-05-6726825d.pth`` from the pytorch-fid release page
https://github.com/mseitzer/pytorch-fid/releases/tag/fid_weights (direct link:
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth).
Download it yourself once; nothing here downloads anything. Convert it (strict key map, no torch needed)::

    randar-jax convert pt_inception-2015-12-05-6726825d.pth ckpt/inception

or pass the ``.pth`` itself wherever a checkpoint is asked for (it is converted in memory on each start).

Architecture (torchvision ``Inception3`` with pytorch-fid's patches, module names equal to the torch ones):
``BasicConv2d`` = conv without bias -> BatchNorm (inference, eps 1e-3) -> ReLU; the 3x3 average pools of the
A / C / E_1 blocks exclude the zero padding from the mean (``count_include_pad=False``, TF's behaviour) and the
last block (``Mixed_7c``) max-pools its pool branch; pool-3 = global average of ``Mixed_7c``.

Preprocessing (:func:`preprocess`), two modes:

* ``'pytorch_fid'`` (default): x = uint8 / 255, bilinear resize to 299x299 with half-pixel centres and no
  antialiasing (``F.interpolate(x, (299, 299), mode='bilinear', align_corners=False)``), then 2x - 1 in [-1, 1].
* ``'tf1'``: the TF graph's own input path, which the ADM evaluator runs: TF1 ``ResizeBilinear``
  (``align_corners=False, half_pixel_centers=False``: source = i * in / out) on [0, 255], then (x - 128) / 128.
  Use it to compare with statistics made by the ADM evaluator (e.g. ``VIRTUAL_imagenet256_labeled.npz``).

Grey images (C = 1) are repeated to three channels. Images already 299x299 are not resampled in either mode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from randar_jax import sharding
from randar_jax.config_io import FamilyConfig
from randar_jax.models.layers import Conv, param, zeros

SIZE = 299  # the network's input side
EPS = 1e-3  # BatchNorm epsilon of the TF graph / torchvision BasicConv2d
PREPROCESSING = ("pytorch_fid", "tf1")


@dataclasses.dataclass(frozen=True)
class InceptionConfig(FamilyConfig):
  """The FID Inception network. Defaults: ``pt_inception-2015-12-05-6726825d.pth`` (1008 classes)."""

  FAMILY: ClassVar[str] = "inception_fid"
  num_classes: int = 1008
  features: int = 2048  # pool-3 width; fixed by the architecture


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BatchNorm(nnx.Module):
  """torch ``BatchNorm2d(eps=1e-3)`` in inference mode. The running statistics are parameters here: this network
  is never trained, and keeping them as ``nnx.Param`` lets the checkpoint and converter treat them as weights."""

  def __init__(self, channels: int):
    # Constant initial values: drawing no keys keeps building the 94 norms fast (each key costs ~15 ms in eval_shape).
    self.scale, self.var = (nnx.Param(jnp.ones((channels,)), out_sharding=(None,)) for _ in range(2))
    self.bias, self.mean = (nnx.Param(jnp.zeros((channels,)), out_sharding=(None,)) for _ in range(2))

  def __call__(self, x: jax.Array) -> jax.Array:
    return (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + EPS) * self.scale[...] + self.bias[...]


class BasicConv2d(nnx.Module):
  """conv (no bias; torch's symmetric zero ``padding``) -> BatchNorm -> ReLU."""

  def __init__(
    self,
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    rngs: nnx.Rngs,
  ):
    ph, pw = _pair(padding)
    self.conv = Conv(cin, cout, _pair(kernel), stride=stride, padding=((ph, ph), (pw, pw)), bias=False, rngs=rngs)
    self.bn = BatchNorm(cout)

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x)))


class Linear(nnx.Module):
  """The classifier ``fc``: kernel (in, out) = torch's weight transposed, and a bias."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
    self.kernel = param(rngs, jax.nn.initializers.lecun_normal(), (cin, cout), (None, None))
    self.bias = param(rngs, zeros, (cout,), (None,))


def max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  """3x3 max pool on NHWC (torch pads with -inf)."""
  pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)


def avg_pool_valid(x: jax.Array) -> jax.Array:
  """3x3 average, stride 1, padding 1, over the in-image pixels only (``count_include_pad=False``)."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  window = (1, 3, 3, 1)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1, 1, 1, 1), pads)
  count = jax.lax.reduce_window(
    jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype), 0.0, jax.lax.add, window, (1, 1, 1, 1), pads
  )
  return total / count


class InceptionA(nnx.Module):
  def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool_valid(x))], axis=-1)


class InceptionB(nnx.Module):
  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch3x3(x), b3, max_pool(x, 2)], axis=-1)


class InceptionC(nnx.Module):
  def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = x
    for conv in (
      self.branch7x7dbl_1,
      self.branch7x7dbl_2,
      self.branch7x7dbl_3,
      self.branch7x7dbl_4,
      self.branch7x7dbl_5,
    ):
      d = conv(d)
    return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(avg_pool_valid(x))], axis=-1)


class InceptionD(nnx.Module):
  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, max_pool(x, 2)], axis=-1)


class InceptionE(nnx.Module):
  """``pool='avg'``: pytorch-fid's FIDInceptionE_1 (Mixed_7b); ``'max'``: FIDInceptionE_2 (Mixed_7c)."""

  def __init__(self, cin: int, pool: str, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)
    self.pool = pool

  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.branch3x3_1(x)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = max_pool(x, 1, pad=1) if self.pool == "max" else avg_pool_valid(x)
    return jnp.concatenate(
      [
        self.branch1x1(x),
        self.branch3x3_2a(b3),
        self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(d),
        self.branch3x3dbl_3b(d),
        self.branch_pool(pooled),
      ],
      axis=-1,
    )


class InceptionV3(nnx.Module):
  """Images in the network's range (N, 299, 299, 3) -> pool-3 features (N, 2048); :meth:`logits` on top."""

  def __init__(self, config: InceptionConfig, *, rngs: nnx.Rngs):
    if config.features != 2048:
      raise ValueError(f"the Inception architecture has 2048 pool-3 features, not {config.features}")
    self.config = config
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)
    self.fc = Linear(2048, config.num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x, 2)))
    x = max_pool(x, 2)
    for block in (
      self.Mixed_5b,
      self.Mixed_5c,
      self.Mixed_5d,
      self.Mixed_6a,
      self.Mixed_6b,
      self.Mixed_6c,
      self.Mixed_6d,
      self.Mixed_6e,
      self.Mixed_7a,
      self.Mixed_7b,
      self.Mixed_7c,
    ):
      x = block(x)
    return jnp.mean(x, axis=(1, 2))

  def logits(self, features: jax.Array, bias: bool = False) -> jax.Array:
    """(N, 2048) -> (N, num_classes). Without bias by default: the ADM evaluator's IS takes the softmax of
    pool-3 @ ``softmax/logits/MatMul`` (no bias add), torch-fidelity's of ``logits_unbiased``."""
    logits = jnp.dot(features, self.fc.kernel[...], precision=jax.lax.Precision.HIGHEST)
    return logits + self.fc.bias[...] if bias else logits


# ---- preprocessing ---------------------------------------------------------------------------------------------


def resize_bilinear(x: jax.Array, size: int) -> jax.Array:
  """float NHWC -> (N, size, size, C); half-pixel centres, edge-clamped, no antialiasing: exactly torch's
  ``F.interpolate(mode='bilinear', align_corners=False)`` (also when shrinking)."""
  n, _, _, c = x.shape
  return jax.image.resize(x, (n, size, size, c), "linear", antialias=False)


def _tf1_axis(length: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """TF1 legacy bilinear sampling along one axis: source = i * length / size (float32, as TF computes it)."""
  src = np.arange(size, dtype=np.float32) * np.float32(length / size)
  low = np.floor(src).astype(np.int32)
  return low, np.minimum(low + 1, length - 1), (src - low).astype(np.float32)


def resize_bilinear_tf1(x: jax.Array, size: int) -> jax.Array:
  """float NHWC -> (N, size, size, C) as TF1 ``tf.image.resize_bilinear(align_corners=False)`` (the TF Inception
  graph's ``ResizeBilinear``): no half-pixel offset, so the image shifts by half a source pixel. Interpolates
  along x first, then y, as TF's kernel does."""
  top, bottom, fy = _tf1_axis(x.shape[1], size)
  left, right, fx = _tf1_axis(x.shape[2], size)
  fx = fx[None, None, :, None]
  rows_top, rows_bottom = x[:, top], x[:, bottom]
  upper = rows_top[:, :, left] + (rows_top[:, :, right] - rows_top[:, :, left]) * fx
  lower = rows_bottom[:, :, left] + (rows_bottom[:, :, right] - rows_bottom[:, :, left]) * fx
  return upper + (lower - upper) * fy[None, :, None, None]


def preprocess(images: jax.Array, mode: str = "pytorch_fid") -> jax.Array:
  """uint8 (N, H, W, 1 or 3) -> float32 (N, 299, 299, 3) in [-1, 1] (see the module docstring for the modes)."""
  if mode not in PREPROCESSING:
    raise ValueError(f"unknown Inception preprocessing {mode!r}; choose one of {PREPROCESSING}")
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  same = x.shape[1:3] == (SIZE, SIZE)
  if mode == "pytorch_fid":
    x = x / 255.0
    return 2.0 * (x if same else resize_bilinear(x, SIZE)) - 1.0
  return ((x if same else resize_bilinear_tf1(x, SIZE)) - 128.0) / 128.0


def check_images(images) -> None:
  """Host-side shape / dtype check: a batch of uint8 images (N, H, W, 1 or 3)."""
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected uint8 images (N, H, W, 3) (or grey (N, H, W, 1)), got shape {tuple(images.shape)}")
  if images.dtype != np.uint8:
    raise ValueError(
      f"expected uint8 images in [0, 255], got dtype {images.dtype}; convert with "
      f"np.clip(x * 255, 0, 255).astype(np.uint8) for floats in [0, 1]"
    )


# ---- the feature extractor -------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdef", "mode"))
def _features(graphdef, state, images: jax.Array, mode: str) -> jax.Array:
  model = nnx.merge(graphdef, state)
  images = sharding.constrain(images, ("batch", None, None, None))
  return model(preprocess(images, mode))


class InceptionExtractor:
  """:class:`randar_jax.eval.extractors.FeatureExtractor` over :class:`InceptionV3`.

  One compiled program per input shape; the batch is split over the devices of ``mesh`` (default: this process's
  devices; the parameters should be replicated there, as ``extractors.load_inception`` places them). ``precision``
  is the conv / matmul precision: 'highest' (default) keeps float32 on GPUs and TPUs, whose defaults (TF32 / bf16
  passes) shift FID slightly.
  """

  def __init__(self, model: InceptionV3, preprocessing: str = "pytorch_fid", *, mesh=None, precision: str = "highest"):
    if preprocessing not in PREPROCESSING:
      raise ValueError(f"unknown Inception preprocessing {preprocessing!r}; choose one of {PREPROCESSING}")
    self.model, self.preprocessing, self.precision = model, preprocessing, precision
    self.mesh = mesh if mesh is not None else sharding.build_mesh(devices=jax.local_devices())
    self._graphdef, self._state = nnx.split(model)
    self.name = f"inception_fid/{preprocessing}"  # statistics from another preprocessing are not comparable
    self.dim = model.config.features

  def features(self, images) -> jax.Array:
    """uint8 (N, H, W, 3 or 1) -> pool-3 features float32 (N, 2048)."""
    check_images(images)
    with sharding.model_context(self.mesh), jax.default_matmul_precision(self.precision):
      return _features(self._graphdef, self._state, jnp.asarray(images), self.preprocessing)

  def logits(self, features) -> jax.Array:
    """pool-3 features (N, 2048) -> 1008-way logits without the fc bias (what the ADM evaluator's IS uses)."""
    return self.model.logits(jnp.asarray(features))  # one matmul: no program of its own needed


def random_state_dict(entries: Sequence[tuple[str, Sequence[int]]], seed: int) -> dict[str, np.ndarray]:
  """A deterministic random pytorch-fid state dict (NumPy float32) for the (key, shape) ``entries`` of a manifest:
  He-scaled conv weights and BatchNorm statistics near identity, so activations keep their scale through the
  network. Used for parity goldens (tools/make_inception_golden.py) and benchmarks without the real weights."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in entries:
    shape = tuple(shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
      continue
    if key == "fc.weight":
      value = rng.normal(0.0, 1.0 / np.sqrt(shape[1]), shape)
    elif leaf == "weight" and len(shape) == 4:
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif leaf == "weight":
      value = rng.uniform(0.8, 1.2, shape)
    elif leaf == "running_var":
      value = rng.uniform(0.6, 1.4, shape)
    else:  # biases, running means
      value = rng.normal(0.0, 0.1, shape)
    out[key] = value.astype(np.float32)
  return out
