"""Writes the Inception parity data under tests/data/ from the reference implementation (pytorch-fid 0.3.0).

Run once, in a separate venv with torch (the project and its tests never need torch):

    python3 -m venv /tmp/ref-venv
    /tmp/ref-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 pytorch-fid==0.3.0 -r requirements.txt -e .
    /tmp/ref-venv/bin/python tools/make_inception_golden.py

Weights are random but reproducible without storing them: ``randar_jax.eval.inception.random_state_dict`` draws
them with NumPy from the key / shape manifest and SEED, and the test redraws the same ones. pytorch-fid's own
``InceptionV3`` (resize + normalise + the FID blocks) is built with ``load_state_dict_from_url`` patched to return
those weights instead of downloading, so the reference code path runs unchanged.

Outputs:
  inception_fid_manifest.json  (key, shape, dtype) of every tensor in fid_inception_v3's state dict
  inception_fid_golden.npz     inputs, resized inputs (strided subsets), pool-3 features, logits (with and
                               without the fc bias) of pytorch-fid's network on the random weights
  torch_legacy.pth             a small state dict in torch's legacy (pre-1.6, non-zip) format, for the reader
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np

# The PyPI torchvision wheel is a CUDA build whose C++ ops cannot load beside torch+cpu; registering their meta
# kernels then fails at import. The Inception modules used here are pure Python, so skip that registration.
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_fid import inception as pfid  # noqa: E402

from randar_jax.eval.inception import random_state_dict  # noqa: E402

SEED = 2015
STRIDE = 7  # resized images are stored at every 7th pixel (the full 299x299 floats would be megabytes)
OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data")


def smooth_images(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
  """uint8 (n, h, w, 3): coarse random colour fields upsampled plus pixel noise (edges and gradients both)."""
  coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 6, 5)).astype(np.float32))
  fields = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).numpy().transpose(0, 2, 3, 1)
  return np.clip(fields + rng.normal(0, 12, fields.shape), 0, 255).astype(np.uint8)


def to_torch(images: np.ndarray) -> torch.Tensor:
  """pytorch-fid's input: float (N, 3, H, W) = ToTensor = uint8 / 255."""
  return torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def main() -> None:
  torch.manual_seed(0)
  os.makedirs(OUT, exist_ok=True)
  bare = pfid._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # what fid_inception_v3 builds
  manifest = [(k, list(v.shape), str(v.dtype)) for k, v in bare.state_dict().items()]
  with open(os.path.join(OUT, "inception_fid_manifest.json"), "w") as f:
    json.dump(
      {
        "source": "pytorch_fid 0.3.0 fid_inception_v3() state_dict (torchvision 0.28.0)",
        "seed": SEED,
        "state_dict": manifest,
      },
      f,
      indent=0,
    )

  weights = random_state_dict([(k, s) for k, s, _ in manifest], SEED)
  pfid.load_state_dict_from_url = lambda *args, **kwargs: {k: torch.from_numpy(v) for k, v in weights.items()}
  net = pfid.InceptionV3([3]).eval()  # resize_input and normalize_input on, as pytorch-fid runs it

  rng = np.random.default_rng(SEED)
  images = smooth_images(rng, 2, 192, 160)  # upsampled to 299 (non-square)
  large = smooth_images(rng, 1, 320, 305)  # downsampled to 299
  with torch.no_grad():
    pool = net(to_torch(images))[0][:, :, 0, 0]
    fc_w, fc_b = torch.from_numpy(weights["fc.weight"]), torch.from_numpy(weights["fc.bias"])
    resized = F.interpolate(to_torch(images), size=(299, 299), mode="bilinear", align_corners=False)
    resized_large = F.interpolate(to_torch(large), size=(299, 299), mode="bilinear", align_corners=False)
  nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1)[:, ::STRIDE, ::STRIDE]  # noqa: E731
  np.savez_compressed(
    os.path.join(OUT, "inception_fid_golden.npz"),
    seed=SEED,
    stride=STRIDE,
    images=images,
    large=large,
    resized=nhwc(resized),
    resized_large=nhwc(resized_large),
    features=pool.numpy(),
    logits=(pool @ fc_w.T).numpy(),
    logits_bias=(pool @ fc_w.T + fc_b).numpy(),
  )

  legacy = {
    "conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
    "bn.running_var": torch.tensor([0.5, 2.0], dtype=torch.float64),
    "steps": torch.tensor(7, dtype=torch.int64),
    "view": torch.arange(12, dtype=torch.float16).reshape(3, 4)[:, 1:3],
  }  # a strided view of a storage
  torch.save(legacy, os.path.join(OUT, "torch_legacy.pth"), _use_new_zipfile_serialization=False)
  print(
    f"wrote {OUT}: manifest of {len(manifest)} tensors, features {tuple(pool.shape)}, "
    f"feature range [{pool.min():.3f}, {pool.max():.3f}]"
  )


if __name__ == "__main__":
  main()
