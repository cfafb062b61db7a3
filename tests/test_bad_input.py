"""Bad input at every command: exit code 2, one line on stderr naming the argument or file, no traceback, nothing
written, and (for the checks the issue puts at the boundary) no weights loaded and nothing compiled.

Each case runs ``cli.main`` in-process against module-scoped tiny checkpoints converted once from the fixtures.
Sizes in the cases (grid, vocabulary, classes, layers, downsampling) come from those fixtures' configs.
The second half feeds valid but unusual inputs (16-bit grey, palette, RGBA, CMYK, tiny images; a 16-token model)
and checks the result.
"""

from __future__ import annotations

import binascii
import dataclasses
import os
import struct
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from conftest import fixture_file, load_json, tensor_pickle, torch_zip
from randar_jax import checkpoint, cli
from randar_jax.utils.compiles import compile_events


@dataclasses.dataclass(frozen=True)
class Workspace:
  root: str
  model: str  # RandAR tiny checkpoint
  rar: str  # RAR tiny checkpoint (another family)
  vq: str  # LlamaGen VQ tiny tokenizer, native size recorded
  grid: int  # model tokens per side
  vocab: int
  classes: int
  layers: int
  downsample: int  # the VQ tokenizer's
  size: int  # model grid * tokenizer downsampling: the side the zero-shot commands work at

  def p(self, *names: str) -> str:
    return os.path.join(self.root, *names)


def _png_with_size(path: str, width: int, height: int) -> str:
  """A PNG whose header claims width x height (a decompression bomb; the pixel data is a 1x1 image's)."""
  Image.new("L", (1, 1)).save(path)
  data = bytearray(open(path, "rb").read())
  start = data.index(b"IHDR")
  data[start + 4 : start + 12] = struct.pack(">II", width, height)
  data[start + 17 : start + 21] = struct.pack(">I", binascii.crc32(bytes(data[start : start + 17])))
  open(path, "wb").write(bytes(data))
  return path


@pytest.fixture(scope="module")
def ws(fixtures, tmp_path_factory) -> Workspace:
  from randar_jax.convert import convert_checkpoint
  from randar_jax.models.randar import RandARConfig
  from randar_jax.models.rar import RARConfig

  root = str(tmp_path_factory.mktemp("bad_input"))
  config = RandARConfig.from_torch_args(
    load_json(fixture_file(fixtures, "randar_tiny_config.json"))["constructor_args"]
  )
  model = convert_checkpoint(fixture_file(fixtures, "randar_tiny.safetensors"), f"{root}/model", config, progress=False)
  rar_config = RARConfig.from_original(load_json(fixture_file(fixtures, "rar_tiny_config.json"))["config"])
  rar = convert_checkpoint(fixture_file(fixtures, "rar_tiny.safetensors"), f"{root}/rar", rar_config, progress=False)
  vq = f"{root}/vq"
  downsample = 2 ** (
    len(load_json(fixture_file(fixtures, "vq_llamagen_tiny_config.json"))["constructor_args"]["encoder_ch_mult"]) - 1
  )
  size = config.grid_size * downsample
  assert cli.main(["convert", str(fixture_file(fixtures, "vq_llamagen_tiny.pt")), vq, "--image-size", str(size)]) == 0
  w = Workspace(
    root, model, rar, vq, config.grid_size, config.vocab_size, config.num_classes, config.n_layer, downsample, size
  )

  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(w.p("img.png"))
  Image.new("L", (size, size)).save(w.p("black.png"))
  big = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  Image.fromarray(big).save(w.p("full.png"))
  data = open(w.p("full.png"), "rb").read()
  open(w.p("truncated.png"), "wb").write(data[: len(data) // 2])
  open(w.p("notimage.png"), "w").write("not an image\n")
  _png_with_size(w.p("bomb.png"), 100_000, 100_000)
  open(w.p("afile"), "w").write("a file\n")
  os.makedirs(w.p("adir"))
  os.makedirs(w.p("adir.npy"))  # a folder with an output file's name
  os.makedirs(w.p("train", "100", "opt_state"))  # what a training workdir's step holds besides params / config
  os.makedirs(w.p("train", "100", "params"))
  os.makedirs(w.p("stuff"))
  open(w.p("stuff", "notes.txt"), "w").write("keep me\n")
  os.makedirs(w.p("inception"))
  np.save(w.p("codes.npy"), rng.integers(0, config.vocab_size, (2, config.grid_size, config.grid_size)))
  np.save(w.p("codes_big.npy"), np.full((1, config.grid_size, config.grid_size), config.vocab_size))
  np.save(w.p("codes_float.npy"), np.zeros((1, config.grid_size, config.grid_size), np.float32))
  np.savez(w.p("ref.npz"), arr_0=rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8))
  # a .pt whose pickle declares a 1 GiB storage for a 64 KiB file: refused from the record, nothing read
  numel = 2**28
  pickle = tensor_pickle({"tok_embeddings.weight": ("0", numel, 0, (2**14, 2**14), (2**14, 1))})
  torch_zip(w.p("huge.pt"), pickle, {"0": bytes(2**16)})
  os.makedirs(w.p("codes_dir"))
  return w


# ---- the table ---------------------------------------------------------------------------------------------------
# (case id, argv from the workspace and a fresh output path, text the one line must contain, early):
# early = the check runs before any weights are loaded (checkpoint.load_model must not be called).

Case = tuple[str, Callable[[Workspace, str], list[str]], str, bool]


def _sample(w: Workspace, out: str, *extra: str) -> list[str]:
  return ["sample", w.model, "--out", out, "--classes", "1", *extra]


def _zs(cmd: str, w: Workspace, out: str, *extra: str, image: str = "img.png", model=None, tok=None) -> list[str]:
  model, tok = model or w.model, tok or w.vq
  return [cmd, w.p(image), "--model", model, "--tokenizer", tok, "--out", out, "--class", "1", *extra]


def _box(w: Workspace) -> str:
  return f"0,0,{w.size // 2},{w.size // 2}"


def _xp(w: Workspace, out: str, classes: str, *extra: str) -> list[str]:
  return ["extrapolate", "--model", w.model, "--tokenizer", w.vq, "--out", out, "--classes", classes, *extra]


def _feat(w: Workspace, out: str, *extra: str, image: str = "img.png") -> list[str]:
  return ["features", w.p(image), "--model", w.model, "--tokenizer", w.vq, "--out", out, *extra]


def _tok(w: Workspace, out: str, *extra: str, image: str = "img.png") -> list[str]:
  return ["tokenize", w.p(image), "--tokenizer", w.vq, "--out", out + ".npy", *extra]


def _detok(w: Workspace, out: str, codes: str = "codes.npy", *extra: str) -> list[str]:
  return ["detokenize", w.p(codes), "--tokenizer", w.vq, "--out", out, *extra]


def _extract(w: Workspace, out: str, *extra: str) -> list[str]:
  return ["extract", w.p("adir"), out, "--tokenizer", w.vq, "--image-size", str(w.size), *extra]


def _eval(w: Workspace, out: str, *extra: str) -> list[str]:
  return ["eval", w.p("ref.npz"), "--ref", w.p("ref.npz"), "--inception", w.p("inception"), *extra]


def _cfg(w: Workspace, out: str, *extra: str, model: str | None = None, tok: str | None = None) -> list[str]:
  base = ["cfg-search", "--model", model or w.model, "--tokenizer", tok or w.vq, "--ref", w.p("ref.npz")]
  return base + ["--inception", w.p("inception"), "--out", out, *extra]


CASES: list[Case] = [
  # convert
  ("convert/missing-weights", lambda w, o: ["convert", w.p("nope.pt"), o], "nope.pt", True),
  ("convert/out-is-file", lambda w, o: ["convert", w.p("huge.pt"), w.p("afile")], "is a file", True),
  ("convert/out-parent-is-file", lambda w, o: ["convert", w.p("huge.pt"), w.p("afile", "x")], "afile", True),
  ("convert/training-workdir", lambda w, o: ["convert", w.p("huge.pt"), w.p("train")], "training run", True),
  ("convert/existing-checkpoint", lambda w, o: ["convert", w.p("huge.pt"), w.model], "--overwrite", True),
  ("convert/other-files", lambda w, o: ["convert", w.p("huge.pt"), w.p("stuff")], "notes.txt", True),
  ("convert/huge-storage", lambda w, o: ["convert", w.p("huge.pt"), o], "declares a storage", True),
  ("convert/not-a-checkpoint", lambda w, o: ["convert", w.p("notimage.png"), o], "notimage.png", True),
  (
    "convert/image-size-negative",
    lambda w, o: ["convert", w.p("huge.pt"), o, "--image-size", "-1"],
    "--image-size",
    True,
  ),
  ("convert/no-out", lambda w, o: ["convert", w.p("huge.pt")], "output directory", True),
  # sample
  ("sample/missing-checkpoint", lambda w, o: ["sample", w.p("nope"), "--out", o, "--classes", "1"], "nope", True),
  ("sample/tokenizer-as-model", lambda w, o: ["sample", w.vq, "--out", o, "--classes", "1"], "--tokenizer", True),
  ("sample/family-flag", lambda w, o: _sample(w, o, "--model", "rar"), "'rar'", True),
  ("sample/tokenizer-vocab", lambda w, o: _sample(w, o, "--tokenizer", "pixels:17"), "17 codes", True),
  ("sample/tokenizer-pixels-abc", lambda w, o: _sample(w, o, "--tokenizer", "pixels:abc"), "pixels:abc", True),
  ("sample/generator-as-tokenizer", lambda w, o: _sample(w, o, "--tokenizer", w.rar), "not an image tokenizer", True),
  ("sample/classes-reversed", lambda w, o: ["sample", w.model, "--out", o, "--classes", "5-3"], "--classes", True),
  (
    "sample/classes-range",
    lambda w, o: ["sample", w.model, "--out", o, "--classes", str(w.classes)],
    "--classes",
    True,
  ),
  ("sample/classes-malformed", lambda w, o: ["sample", w.model, "--out", o, "--classes", "a,b"], "--classes", True),
  ("sample/num-per-class", lambda w, o: _sample(w, o, "--num-per-class", "-2"), "--num-per-class", True),
  (
    "sample/num-samples",
    lambda w, o: ["sample", w.model, "--out", o, "--num-samples", "0"],
    "--num-samples",
    True,
  ),
  ("sample/cfg-nan", lambda w, o: _sample(w, o, "--cfg", "nan"), "--cfg", True),
  ("sample/cfg-interval-inf", lambda w, o: _sample(w, o, "--cfg", "3", "--cfg-interval", "inf"), "cfg_interval", True),
  ("sample/temperature-nan", lambda w, o: _sample(w, o, "--temperature", "nan"), "temperature", True),
  ("sample/top-p", lambda w, o: _sample(w, o, "--top-p", "2"), "top_p", True),
  ("sample/top-k", lambda w, o: _sample(w, o, "--top-k", "-1"), "top_k", True),
  ("sample/steps", lambda w, o: _sample(w, o, "--steps", "0"), "num_steps", True),
  ("sample/batch-size", lambda w, o: _sample(w, o, "--batch-size", "0"), "--batch-size", True),
  ("sample/batch-size-int", lambda w, o: _sample(w, o, "--batch-size", "abc"), "--batch-size", True),
  ("sample/memory", lambda w, o: _sample(w, o, "--batch-size", str(10**9)), "--batch-size", True),
  ("sample/out-is-file", lambda w, o: ["sample", w.model, "--out", w.p("afile"), "--classes", "1"], "afile", True),
  ("sample/shard-size", lambda w, o: _sample(w, o, "--shard-size", "0"), "--shard-size", True),
  ("sample/grid-rows", lambda w, o: _sample(w, o, "--grid-rows", "0"), "--grid-rows", True),
  ("sample/grid-scale", lambda w, o: _sample(w, o, "--grid-scale", "-1"), "--grid-scale", True),
  ("sample/png-without-tokenizer", lambda w, o: _sample(w, o, "--png"), "--png", True),
  ("sample/profile-is-file", lambda w, o: _sample(w, o, "--profile", w.p("afile")), "--profile", True),
  # inpaint / edit / outpaint / extrapolate / features
  ("inpaint/box-negative", lambda w, o: _zs("inpaint", w, o, "--box", "0,0,-1,-1"), "--box", True),
  ("inpaint/box-outside", lambda w, o: _zs("inpaint", w, o, "--box", f"0,0,{w.size + 1},{w.size}"), "--box", True),
  ("inpaint/box-malformed", lambda w, o: _zs("inpaint", w, o, "--box", "1,1"), "--box", True),
  (
    "inpaint/box-and-mask",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), "--mask", w.p("black.png")),
    "--mask",
    True,
  ),
  ("inpaint/no-region", lambda w, o: _zs("inpaint", w, o), "--box", True),
  ("inpaint/mask-black", lambda w, o: _zs("inpaint", w, o, "--mask", w.p("black.png")), "black.png", True),
  ("inpaint/mask-unreadable", lambda w, o: _zs("inpaint", w, o, "--mask", w.p("truncated.png")), "truncated.png", True),
  ("inpaint/mask-missing", lambda w, o: _zs("inpaint", w, o, "--mask", w.p("nope.png")), "nope.png", True),
  ("inpaint/image-missing", lambda w, o: _zs("inpaint", w, o, "--box", _box(w), image="nope.png"), "nope.png", True),
  (
    "inpaint/image-not-image",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), image="notimage.png"),
    "notimage.png",
    True,
  ),
  ("inpaint/image-bomb", lambda w, o: _zs("inpaint", w, o, "--box", _box(w), image="bomb.png"), "bomb.png", True),
  (
    "edit/image-truncated",
    lambda w, o: _zs("edit", w, o, "--box", _box(w), image="truncated.png"),
    "truncated.png",
    True,
  ),
  ("features/image-truncated", lambda w, o: _feat(w, o, image="truncated.png"), "truncated.png", True),
  (
    "inpaint/class-range",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), "--class", str(w.classes)),
    "--class",
    True,
  ),
  ("inpaint/steps", lambda w, o: _zs("inpaint", w, o, "--box", _box(w), "--steps", "0"), "--steps", True),
  (
    "inpaint/temperature-inf",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), "--temperature", "inf"),
    "temperature",
    True,
  ),
  ("inpaint/cfg-malformed", lambda w, o: _zs("inpaint", w, o, "--box", _box(w), "--cfg", "x"), "--cfg", True),
  (
    "inpaint/rar-model",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), model=w.rar, tok=w.vq),
    "'randar'",
    True,
  ),
  (
    "inpaint/tokenizer-as-model",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), model=w.vq, tok=w.vq),
    "--tokenizer",
    True,
  ),
  (
    "inpaint/tokenizer-vocab",
    lambda w, o: _zs("inpaint", w, o, "--box", _box(w), model=w.model, tok="pixels:17"),
    "17 codes",
    True,
  ),
  ("inpaint/out-is-file", lambda w, o: _zs("inpaint", w, w.p("afile"), "--box", _box(w)), "afile", True),
  ("edit/box-empty", lambda w, o: _zs("edit", w, o, "--box", "2,2,2,4"), "--box", True),
  ("outpaint/keep-all", lambda w, o: _zs("outpaint", w, o, "--keep-box", f"0,0,{w.size},{w.size}"), "--keep-box", True),
  ("outpaint/extend-huge", lambda w, o: _zs("outpaint", w, o, "--extend", "right=100000"), "needs ~", True),
  ("outpaint/extend-side", lambda w, o: _zs("outpaint", w, o, "--extend", "up=3"), "--extend", True),
  ("outpaint/extend-negative", lambda w, o: _zs("outpaint", w, o, "--extend", "right=-1"), "--extend", True),
  ("outpaint/extend-malformed", lambda w, o: _zs("outpaint", w, o, "--extend", "right=x"), "--extend", True),
  ("outpaint/extend-zero", lambda w, o: _zs("outpaint", w, o, "--extend", "right=0"), "--extend", True),
  (
    "outpaint/extend-and-keep",
    lambda w, o: _zs("outpaint", w, o, "--extend", "right=1", "--keep-box", _box(w)),
    "--extend",
    True,
  ),
  (
    "extrapolate/factor",
    lambda w, o: _xp(w, o, "1", "--factor", "1"),
    "--factor",
    True,
  ),
  (
    "extrapolate/factor-huge",
    lambda w, o: _xp(w, o, "1", "--factor", "2000"),
    "needs ~",
    True,
  ),
  (
    "extrapolate/spatial",
    lambda w, o: _xp(w, o, "1", "--spatial", "a"),
    "--spatial",
    True,
  ),
  (
    "extrapolate/classes",
    lambda w, o: ["extrapolate", "--model", w.model, "--tokenizer", w.vq, "--out", o, "--classes", "-1"],
    "--classes",
    True,
  ),
  ("features/layer", lambda w, o: _feat(w, o, "--layer", str(w.layers)), "--layer", True),
  ("features/image-unreadable", lambda w, o: _feat(w, o, image="notimage.png"), "notimage.png", True),
  # tokenize / detokenize
  ("tokenize/image-missing", lambda w, o: _tok(w, o, image="nope.png"), "nope.png", True),
  ("tokenize/image-not-image", lambda w, o: _tok(w, o, image="notimage.png"), "notimage.png", True),
  ("tokenize/image-bomb", lambda w, o: _tok(w, o, image="bomb.png"), "bomb.png", True),
  ("tokenize/image-truncated", lambda w, o: _tok(w, o, image="truncated.png"), "truncated.png", True),
  (
    "tokenize/out-suffix",
    lambda w, o: ["tokenize", w.p("img.png"), "--tokenizer", w.vq, "--out", o + ".txt"],
    ".npy",
    True,
  ),
  (
    "tokenize/out-is-dir",
    lambda w, o: ["tokenize", w.p("img.png"), "--tokenizer", w.vq, "--out", w.p("adir.npy")],
    "directory",
    True,
  ),
  ("tokenize/image-size", lambda w, o: _tok(w, o, "--image-size", str(w.size + 1)), "--image-size", True),
  ("tokenize/image-size-memory", lambda w, o: _tok(w, o, "--image-size", str(2**14)), "needs ~", True),
  ("tokenize/batch-size", lambda w, o: _tok(w, o, "--batch-size", "0"), "--batch-size", True),
  ("tokenize/crop", lambda w, o: _tok(w, o, "--crop", "bogus"), "--crop", True),
  (
    "tokenize/generator-as-tokenizer",
    lambda w, o: ["tokenize", w.p("img.png"), "--tokenizer", w.model, "--out", o + ".npy"],
    "not an image tokenizer",
    True,
  ),
  (
    "tokenize/pixels-no-size",
    lambda w, o: ["tokenize", w.p("img.png"), "--tokenizer", "pixels:17", "--out", o + ".npy"],
    "--image-size",
    True,
  ),
  (
    "tokenize/tokenizer-missing",
    lambda w, o: ["tokenize", w.p("img.png"), "--tokenizer", w.p("nope"), "--out", o + ".npy"],
    "nope",
    True,
  ),
  ("detokenize/codes-missing", lambda w, o: _detok(w, o, "nope.npy"), "nope.npy", True),
  ("detokenize/codes-range", lambda w, o: _detok(w, o, "codes_big.npy"), "codes must lie in", True),
  ("detokenize/codes-float", lambda w, o: _detok(w, o, "codes_float.npy"), "integers", True),
  ("detokenize/codes-not-npy", lambda w, o: _detok(w, o, "notimage.png"), "notimage.png", True),
  ("detokenize/codes-npz", lambda w, o: _detok(w, o, "ref.npz"), "ref.npz", True),
  ("detokenize/out-is-file", lambda w, o: _detok(w, w.p("afile")), "afile", True),
  ("detokenize/batch-size", lambda w, o: _detok(w, o, "codes.npy", "--batch-size", "0"), "--batch-size", True),
  # extract / import-codes
  ("extract/image-size", lambda w, o: _extract(w, o, "--image-size", str(w.size + 1)), "--image-size", True),
  ("extract/batch-size", lambda w, o: _extract(w, o, "--batch-size", "0"), "--batch-size", True),
  ("extract/shard-size", lambda w, o: _extract(w, o, "--shard-size", "-1"), "--shard-size", True),
  ("extract/workers", lambda w, o: _extract(w, o, "--workers", "0"), "--workers", True),
  (
    "extract/process-index",
    lambda w, o: _extract(w, o, "--process-index", "2", "--process-count", "2"),
    "--process-index",
    True,
  ),
  (
    "extract/images-missing",
    lambda w, o: ["extract", w.p("nope"), o, "--tokenizer", w.vq, "--image-size", str(w.size)],
    "nope",
    True,
  ),
  (
    "extract/generator-as-tokenizer",
    lambda w, o: ["extract", w.p("adir"), o, "--tokenizer", w.model],
    "not an image tokenizer",
    True,
  ),
  ("extract/out-is-file", lambda w, o: _extract(w, w.p("afile")), "afile", True),
  ("extract/aug", lambda w, o: _extract(w, o, "--aug", "flip"), "--aug", True),
  (
    "import-codes/vocab-size",
    lambda w, o: ["import-codes", w.p("codes_dir"), o, "--vocab-size", "0"],
    "--vocab-size",
    True,
  ),
  (
    "import-codes/shard-size",
    lambda w, o: ["import-codes", w.p("codes_dir"), o, "--vocab-size", "4", "--shard-size", "0"],
    "--shard-size",
    True,
  ),
  ("import-codes/missing", lambda w, o: ["import-codes", w.p("nope"), o, "--vocab-size", "4"], "nope", True),
  (
    "import-codes/process",
    lambda w, o: ["import-codes", w.p("codes_dir"), o, "--vocab-size", "4", "--process-count", "0"],
    "--process-index",
    True,
  ),
  # eval
  (
    "eval/samples-missing",
    lambda w, o: ["eval", w.p("nope.npz"), "--ref", w.p("ref.npz"), "--inception", w.p("inception")],
    "nope.npz",
    True,
  ),
  (
    "eval/samples-not-npz",
    lambda w, o: ["eval", w.p("afile"), "--ref", w.p("ref.npz"), "--inception", w.p("inception")],
    "afile",
    True,
  ),
  (
    "eval/ref-missing",
    lambda w, o: ["eval", w.p("ref.npz"), "--ref", w.p("nope.npz"), "--inception", w.p("inception")],
    "--ref",
    True,
  ),
  ("eval/no-extractor", lambda w, o: ["eval", w.p("ref.npz"), "--ref", w.p("ref.npz")], "--inception", True),
  ("eval/batch-size", lambda w, o: _eval(w, o, "--batch-size", "0"), "--batch-size", True),
  ("eval/out-is-dir", lambda w, o: _eval(w, o, "--out", w.p("adir")), "--out", True),
  ("eval/save-ref-suffix", lambda w, o: _eval(w, o, "--save-ref", o + ".txt"), "--save-ref", True),
  # cfg-search
  ("cfg-search/scales-nan", lambda w, o: _cfg(w, o, "--scales", "nan:2:1"), "--scales", True),
  ("cfg-search/scales-reversed", lambda w, o: _cfg(w, o, "--scales", "8:2:1"), "--scales", True),
  ("cfg-search/scales-list", lambda w, o: _cfg(w, o, "--scales", "2,inf"), "--scales", True),
  ("cfg-search/tokenizer-as-model", lambda w, o: _cfg(w, o, model=w.vq), "--tokenizer", True),
  ("cfg-search/tokenizer-vocab", lambda w, o: _cfg(w, o, tok="pixels:17"), "17 codes", True),
  ("cfg-search/num-samples", lambda w, o: _cfg(w, o, "--num-samples", "1"), "num_samples", True),
  ("cfg-search/temperature", lambda w, o: _cfg(w, o, "--temperature", "nan"), "temperature", True),
  ("cfg-search/ref-missing", lambda w, o: _cfg(w, o, "--ref", w.p("nope.npz")), "--ref", True),
  ("cfg-search/out-is-file", lambda w, o: _cfg(w, w.p("afile")), "afile", True),
  ("cfg-search/batch-size-memory", lambda w, o: _cfg(w, o, "--batch-size", str(10**9)), "--batch-size", True),
  # demo
  ("demo/steps", lambda w, o: ["demo", "--out", o, "--steps", "0"], "--steps", True),
  ("demo/per-class", lambda w, o: ["demo", "--out", o, "--per-class", "-1"], "--per-class", True),
  ("demo/cfg-nan", lambda w, o: ["demo", "--out", o, "--cfg", "nan"], "--cfg", True),
  ("demo/out-is-file", lambda w, o: ["demo", "--out", w.p("afile")], "afile", True),
  ("demo/order", lambda w, o: ["demo", "--out", o, "--order", "spiral"], "--order", True),
]


def _tree(root: str) -> dict[str, float]:
  """Every path under root with its size: what a failed command must leave unchanged."""
  out = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      out[path] = os.path.getsize(path) if os.path.isfile(path) else -1
  return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: Case, ws: Workspace, capsys, monkeypatch):
  name, argv, expected, early = case
  if early:
    monkeypatch.setattr(checkpoint, "load_model", _refuse_load)
  out = ws.p("out", name.replace("/", "_"))
  argv = argv(ws, out)
  before = _tree(ws.root)
  capsys.readouterr()
  with compile_events() as compiles:
    try:
      rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors (a flag's type or choices)
      rc = e.code
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert rc == 2, err
  assert len(lines) == 1, err
  command = argv[0]
  assert lines[0].startswith(f"randar-jax {command}: error: "), err
  assert expected in lines[0], err
  assert "Traceback" not in err
  assert _tree(ws.root) == before, "a failed command left files behind or changed them"
  assert compiles.count == 0, f"{name}: compiled {compiles.count} program(s) before refusing"


def _refuse_load(*args, **kwargs):
  raise AssertionError("weights were loaded before the bad input was refused")


def test_table_covers_every_command():
  counts: dict[str, int] = {}
  for name, *_ in CASES:
    group = name.split("/")[0]
    group = "zero-shot" if group in ("inpaint", "edit", "outpaint", "extrapolate", "features") else group
    counts[group] = counts.get(group, 0) + 1
  assert set(counts) == {
    "convert",
    "sample",
    "zero-shot",
    "tokenize",
    "detokenize",
    "extract",
    "import-codes",
    "eval",
    "cfg-search",
    "demo",
  }
  assert len(CASES) >= 60, counts


# ---- valid but unusual inputs ---------------------------------------------------------------------------------


def _grey_codes(ws: Workspace, tmp_path, image: Image.Image, name: str, capsys) -> np.ndarray:
  """Codes of ``image`` through `tokenize` with the 256-level pixel tokenizer (code = the pixel's 8-bit grey)."""
  path = str(tmp_path / name)
  image.save(path)
  out = str(tmp_path / f"{name}.npy")
  assert (
    cli.main(["tokenize", path, "--tokenizer", "pixels:256", "--out", out, "--image-size", "4", "--crop", "resize"])
    == 0
  ), capsys.readouterr().err
  return np.load(out)


def test_unusual_image_modes_convert_correctly(ws, tmp_path, capsys):
  grey16 = Image.fromarray(np.full((6, 6), 0x8000, np.uint16))  # 16-bit grey: half scale, not saturated white
  assert grey16.mode.startswith("I")
  np.testing.assert_array_equal(_grey_codes(ws, tmp_path, grey16, "grey16.png", capsys), 128)
  rgba = Image.new("RGBA", (6, 6), (255, 0, 0, 0))  # fully transparent: composited over white
  np.testing.assert_array_equal(_grey_codes(ws, tmp_path, rgba, "rgba.png", capsys), 255)
  palette = Image.new("P", (6, 6), 1)
  palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)  # index 1 = (30, 60, 90): grey level = mean = 60
  np.testing.assert_array_equal(_grey_codes(ws, tmp_path, palette, "palette.png", capsys), 60)
  cmyk = Image.new("CMYK", (6, 6), (0, 0, 0, 0))  # no ink: white
  np.testing.assert_array_equal(_grey_codes(ws, tmp_path, cmyk, "cmyk.jpg", capsys), 255)
  tiny = Image.new("L", (1, 1), 77)  # a 1x1 image is resized up, not refused
  np.testing.assert_array_equal(_grey_codes(ws, tmp_path, tiny, "tiny.png", capsys), 77)


def test_tokenize_uses_the_tokenizer_native_size(ws, tmp_path, capsys):
  """The VQ checkpoint records its native size (converted with --image-size); tokenize resizes to it by default."""
  assert checkpoint.read_config(ws.vq)["image_size"] == ws.size
  rgba = tmp_path / "photo.png"
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (3 * ws.size, 2 * ws.size, 4), dtype=np.uint8)).save(rgba)
  out = tmp_path / "codes.npy"
  assert cli.main(["tokenize", str(rgba), "--tokenizer", ws.vq, "--out", str(out)]) == 0, capsys.readouterr().err
  codes = np.load(out)
  assert codes.shape == (1, ws.size // ws.downsample, ws.size // ws.downsample) and codes.max() < ws.vocab


def test_convert_overwrite_replaces_atomically(ws, fixtures, tmp_path, capsys):
  out = tmp_path / "vq"
  source = str(fixture_file(fixtures, "vq_llamagen_tiny.pt"))
  assert cli.main(["convert", source, str(out), "--image-size", "4"]) == 0
  assert cli.main(["convert", source, str(out), "--image-size", str(ws.size), "--overwrite"]) == 0
  assert checkpoint.read_config(out)["image_size"] == ws.size
  assert sorted(os.listdir(tmp_path)) == ["vq"], "no temporary or set-aside folder is left"
  capsys.readouterr()


def test_grey_tokenizer_samples_are_written_as_rgb(ws, tmp_path, capsys):
  """A 1-channel tokenizer (pixel levels) through sample: the ADM file is RGB with the grey level repeated."""
  out = tmp_path / "s"
  argv = [
    "sample",
    ws.model,
    "--out",
    str(out),
    "--classes",
    "0,1",
    "--tokenizer",
    f"pixels:{ws.vocab}",
    "--steps",
    "4",
    "--cfg",
    "none",
  ]
  assert cli.main(argv) == 0, capsys.readouterr().err
  images = np.load(out / "samples.npz")["arr_0"]
  assert images.shape == (2, ws.grid, ws.grid, 3)
  np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_inpaint_a_single_pixel_on_a_few_token_model(ws, tmp_path, capsys):
  """The smallest valid region (one pixel) on the 16-token model with its pixel-level tokenizer (a grey image of
  grid x grid pixels): every other pixel is kept."""
  image = tmp_path / "grey.png"
  levels = np.random.default_rng(2).integers(0, ws.vocab, (ws.grid, ws.grid))
  Image.fromarray((levels * 255 // (ws.vocab - 1)).astype(np.uint8)).save(image)
  out = tmp_path / "e"
  argv = ["inpaint", str(image), "--model", ws.model, "--tokenizer", f"pixels:{ws.vocab}", "--out", str(out)]
  assert cli.main(argv + ["--class", "1", "--box", "0,0,1,1", "--steps", "1"]) == 0, capsys.readouterr().err
  result = np.asarray(Image.open(out / "grey_inpaint_result.png").convert("L"))
  original = np.asarray(Image.open(image))
  assert result.shape == original.shape
  keep = np.ones(original.shape, bool)
  keep[0, 0] = False
  np.testing.assert_array_equal(result[keep], original[keep])


def test_memory_prediction_message(monkeypatch):
  from randar_jax.utils import memory

  monkeypatch.setattr(memory, "available_bytes", lambda: (2 * 2**30, "the GPU has"))
  memory.check_fits(2**30, "x", batch=8)
  with pytest.raises(ValueError, match=r"x needs ~8 GB, the GPU has 2 GB; try --batch-size 2$"):
    memory.check_fits(8 * 2**30, "x", batch=8)


def test_os_errors_and_out_of_memory_are_one_line(monkeypatch, capsys):
  """A file-system error (read-only, disk full) and an allocation failure: one line, exit code 2."""
  import errno

  from randar_jax import demo

  for error, text in (
    (OSError(errno.EROFS, "Read-only file system", "/ro/out"), "Read-only file system: /ro/out"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (MemoryError(), "out of host memory"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 42 TB\nmore"), "out of device memory"),
  ):
    monkeypatch.setattr(demo, "run", lambda *a, error=error, **k: (_ for _ in ()).throw(error))
    assert cli.main(["demo", "--out", "/tmp/never-written-by-this-test"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], lines
  monkeypatch.setattr(demo, "run", lambda *a, **k: (_ for _ in ()).throw(KeyError("a bug")))
  with pytest.raises(KeyError):  # bugs keep their traceback
    cli.main(["demo", "--out", "/tmp/never-written-by-this-test"])
