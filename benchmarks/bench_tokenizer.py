"""Encode / decode throughput of the VQ tokenizers at their released sizes (random weights, nothing downloaded).

    python -m benchmarks.bench_tokenizer                          # both tokenizers, 8 images of 256x256
    python -m benchmarks.bench_tokenizer --family vq_maskgit --batch 64 --repeats 5

Prints one JSON line: images/s for ``encode`` (uint8 images -> codes) and ``decode`` (codes -> uint8 images)
per family, from the median of ``--repeats`` timed calls after one compile-and-run call (``first_s``).
"""

from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np
from flax import nnx

from benchmarks.common import report, timed
from randar_jax import checkpoint, families, sharding

FAMILIES = ("vq_llamagen", "vq_maskgit")


def measure(family: str, batch: int, size: int, repeats: int) -> dict:
  config = families.get(family).config.released()
  with sharding.model_context():
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: families.build(config)))
    state = jax.jit(lambda: nnx.split(families.build(config))[1])()  # initialised on device
    tok = nnx.merge(graphdef, state)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, config.image_channels), dtype=np.uint8)
    grid = size // config.downsample
    codes = rng.integers(0, tok.vocab_size, (batch, grid, grid), dtype=np.int32)
    result = {"family": family, "params": checkpoint.param_count(checkpoint.model_params(tok)), "grid": grid}
    for name, fn in (("encode", lambda: tok.encode(images)), ("decode", lambda: tok.decode(codes))):
      first, times = timed(fn, repeats)
      seconds = statistics.median(times)
      result[name] = {
        "images_per_s": round(batch / seconds, 3),
        "batch_s": round(seconds, 3),
        "first_s": round(first, 2),
      }
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--family", default="both", choices=[*FAMILIES, "both"])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=256, help="image side in pixels (a multiple of 16)")
  parser.add_argument("--repeats", type=int, default=2, help="timed calls per direction (after one warm-up)")
  args = parser.parse_args()
  results = [
    measure(f, args.batch, args.size, args.repeats) for f in (FAMILIES if args.family == "both" else [args.family])
  ]
  report(
    {
      "encode_images_per_s": {r["family"]: r["encode"]["images_per_s"] for r in results},
      "decode_images_per_s": {r["family"]: r["decode"]["images_per_s"] for r in results},
      "batch": args.batch,
      "size": args.size,
      "results": results,
    }
  )


if __name__ == "__main__":
  main()
