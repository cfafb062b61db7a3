"""Latent-code extraction: crops, codes equal direct encoding, resume, processes, corrupt files, TFDS, tar, import."""

import json
import os
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from randar_jax.data import extract, records, tfds_folder
from randar_jax.tokenizers.preprocess import center_crop_arr, load_image, ten_crop

IMAGE_SIZE = 64  # 4 x 4 tokens with the 16-pixel test tokenizer: small and fast, same code paths as 256


class PatchTokenizer:
  """Deterministic stand-in for a VQ model (Tokenizer protocol): code = quantised sum of each 16x16 patch.

  Integer arithmetic, so the jitted batch (padded, sharded) and a direct call agree exactly.
  """

  vocab_size, downsample, channels = 4096, 16, 3

  def encode(self, images: jax.Array) -> jax.Array:
    b, h, w, c = images.shape
    f = self.downsample
    sums = images.astype(jnp.int32).reshape(b, h // f, f, w // f, f, c).sum(axis=(2, 4, 5))
    return (sums * self.vocab_size) // (255 * f * f * c + 1)

  def decode(self, codes: jax.Array) -> jax.Array:
    level = (codes * 255 // self.vocab_size).astype(jnp.uint8)
    return jnp.repeat(jnp.repeat(level, 16, 1), 16, 2)[..., None].repeat(3, -1)


class NNXPatchTokenizer(nnx.Module):
  """The same tokenizer as an NNX module with a parameter (the path real VQ models take: weights as arguments)."""

  vocab_size, downsample, channels = 4096, 16, 3

  def __init__(self):
    self.offset = nnx.Param(jnp.zeros((), jnp.int32))

  def encode(self, images):
    return PatchTokenizer().encode(images) + self.offset[...]


class InterruptedImages(extract.FolderImages):
  """A run killed (Ctrl-C) while reading item ``stop_at``, i.e. in the middle of a shard."""

  def __init__(self, root, stop_at: int):
    super().__init__(root)
    self.stop_at = stop_at

  def read(self, i):
    if i == self.stop_at:
      raise KeyboardInterrupt
    return super().read(i)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  """3 classes x 3 smooth random images of assorted sizes (one large enough for ADM's BOX halving)."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  sizes = [(64, 64), (80, 130), (150, 90), (300, 260), (64, 100), (97, 64), (70, 70), (128, 200), (66, 180)]
  for k, (h, w) in enumerate(sizes):
    cls = ["cat", "dog", "owl"][k % 3]
    os.makedirs(root / cls, exist_ok=True)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    image.save(root / cls / f"img{k}.{'png' if k % 2 else 'jpg'}")
  return root


@pytest.fixture(scope="module")
def corrupt_folder(image_folder, tmp_path_factory):
  root = tmp_path_factory.mktemp("with_corrupt")
  for cls in os.listdir(image_folder):
    os.makedirs(root / cls)
    for f in os.listdir(image_folder / cls):
      os.link(image_folder / cls / f, root / cls / f)
  (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
  return root


def read_all(directory):
  src = records.CodeShards(directory)
  return [src[i] for i in range(len(src))]


def shard_bytes(directory):
  return {
    f: open(os.path.join(directory, f), "rb").read()
    for f in sorted(os.listdir(directory))
    if f.endswith(".array_record")
  }


# --- preprocessing ------------------------------------------------------------------------------------------


def test_center_crop_arr():
  rng = np.random.default_rng(0)
  square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  np.testing.assert_array_equal(center_crop_arr(Image.fromarray(square), 64), square)  # already the right size
  wide = rng.integers(0, 256, (64, 101, 3), dtype=np.uint8)
  np.testing.assert_array_equal(center_crop_arr(Image.fromarray(wide), 64), wide[:, 18:82])  # floor((101-64)/2)
  # 256 x 384 -> BOX-halved twice (short side 256 >= 128, then 128 >= 128) -> 64 x 96 -> centre columns 16..80.
  # Constant 4x4 blocks make both halvings exact, so the result is the block image itself.
  blocks = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
  big = blocks.repeat(4, 0).repeat(4, 1)
  np.testing.assert_array_equal(center_crop_arr(Image.fromarray(big), 64), blocks[:, 16:80])
  out = center_crop_arr(Image.fromarray(rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)), 64)
  assert out.shape == (64, 64, 3) and out.dtype == np.uint8  # bicubic branch


def test_ten_crop_positions_follow_torchvision():
  h, w = 281, 290
  coords = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).astype(np.uint16)
  image = Image.fromarray(np.concatenate([coords % 256, coords // 256], -1)[..., [0, 1, 2]].astype(np.uint8))
  crops = ten_crop(image, 256)
  assert len(crops) == 10 and all(c.shape == (256, 256, 3) for c in crops)
  arr = np.asarray(image)
  # tl, tr, bl, br, centre (offsets round((281-256)/2) = 12, round((290-256)/2) = 17), then the flipped image's
  for crop, (y, x) in zip(crops[:5], [(0, 0), (0, 34), (25, 0), (25, 34), (12, 17)]):
    np.testing.assert_array_equal(crop, arr[y : y + 256, x : x + 256])
  flipped = arr[:, ::-1]
  for crop, (y, x) in zip(crops[5:], [(0, 0), (0, 34), (25, 0), (25, 34), (12, 17)]):
    np.testing.assert_array_equal(crop, flipped[y : y + 256, x : x + 256])


# --- extraction ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adm_codes(image_folder, tmp_path_factory):
  out = tmp_path_factory.mktemp("adm")
  extract.extract(
    extract.FolderImages(image_folder),
    PatchTokenizer(),
    out,
    image_size=IMAGE_SIZE,
    batch_size=4,
    shard_size=4,
    progress=False,
  )
  return out


@pytest.mark.parametrize("aug", ["adm", "ten-crop"])
def test_codes_equal_direct_encoding(image_folder, adm_codes, tmp_path, aug):
  if aug == "adm":
    out = adm_codes
  else:
    out = tmp_path / aug
    extract.extract(
      extract.FolderImages(image_folder),
      PatchTokenizer(),
      out,
      aug=aug,
      image_size=IMAGE_SIZE,
      batch_size=3,
      shard_size=5,
      progress=False,
    )
  images = extract.FolderImages(image_folder)
  got = read_all(out)
  assert len(got) == len(images) == 9
  meta = records.read_meta(out)
  assert meta["grid"] == [4, 4] and meta["num_aug"] == extract.AUGMENTATIONS[aug] and meta["dtype"] == "int16"
  tok = PatchTokenizer()
  for r in got:
    image = load_image(images.paths[r["index"]])
    if aug == "adm":
      crop = center_crop_arr(image, IMAGE_SIZE)
      crops = np.stack([crop, crop[:, ::-1]])
    else:
      crops = np.stack(ten_crop(Image.fromarray(center_crop_arr(image, int(IMAGE_SIZE * 1.1))), IMAGE_SIZE))
    np.testing.assert_array_equal(r["codes"], np.asarray(tok.encode(crops)).reshape(len(crops), -1))
    assert r["label"] == images.labels[r["index"]]
  assert len({r["codes"].tobytes() for r in got}) == len(got)  # the images really differ


def test_resume_after_interruption_gives_identical_shards(image_folder, adm_codes, tmp_path):
  images = extract.FolderImages(image_folder)
  kwargs = dict(image_size=IMAGE_SIZE, batch_size=4, shard_size=4, progress=False)
  with pytest.raises(KeyboardInterrupt):
    extract.extract(InterruptedImages(image_folder, stop_at=5), PatchTokenizer(), tmp_path, **kwargs)  # shard 1
  assert list(shard_bytes(tmp_path)) == [records.shard_name(0, 3)]
  assert any(f.endswith(".tmp") for f in os.listdir(tmp_path))  # the half-written shard
  with pytest.raises(ValueError, match="not finished|unfinished"):
    records.CodeShards(tmp_path)
  written = extract.extract(images, PatchTokenizer(), tmp_path, **kwargs)
  assert [os.path.basename(p) for p in written] == [records.shard_name(1, 3), records.shard_name(2, 3)]
  assert shard_bytes(tmp_path) == shard_bytes(adm_codes)
  assert extract.extract(images, PatchTokenizer(), tmp_path, **kwargs) == []  # all done: nothing to redo


def test_processes_write_disjoint_shards_of_the_same_dataset(image_folder, adm_codes, tmp_path):
  images = extract.FolderImages(image_folder)
  for p in range(2):
    extract.extract(
      images,
      PatchTokenizer(),
      tmp_path,
      image_size=IMAGE_SIZE,
      batch_size=4,
      shard_size=4,
      process_index=p,
      process_count=2,
      progress=False,
    )
  assert shard_bytes(tmp_path) == shard_bytes(adm_codes)


def test_nnx_tokenizer(image_folder, adm_codes, tmp_path):
  extract.extract(
    extract.FolderImages(image_folder),
    NNXPatchTokenizer(),
    tmp_path,
    image_size=IMAGE_SIZE,
    batch_size=4,
    shard_size=4,
    progress=False,
  )
  assert shard_bytes(tmp_path) == shard_bytes(adm_codes)


def test_mismatched_rerun_is_refused(image_folder, adm_codes):
  with pytest.raises(ValueError, match="different extraction"):
    extract.extract(
      extract.FolderImages(image_folder),
      PatchTokenizer(),
      adm_codes,
      aug="ten-crop",
      image_size=IMAGE_SIZE,
      batch_size=4,
      shard_size=4,
      progress=False,
    )


def test_corrupt_image_is_reported_by_path(corrupt_folder, tmp_path, capsys):
  images = extract.FolderImages(corrupt_folder)
  bad = str(corrupt_folder / "dog" / "broken.jpg")
  with pytest.raises(extract.CorruptInput, match=bad):
    extract.extract(
      images,
      PatchTokenizer(),
      tmp_path / "fail",
      on_error="fail",
      image_size=IMAGE_SIZE,
      batch_size=4,
      shard_size=4,
      progress=False,
    )
  extract.extract(
    images, PatchTokenizer(), tmp_path / "skip", image_size=IMAGE_SIZE, batch_size=4, shard_size=4, progress=False
  )
  assert bad in capsys.readouterr().err
  got = read_all(tmp_path / "skip")
  assert len(got) == len(images) - 1 and bad not in [images.paths[r["index"]] for r in got]
  reports = [
    json.load(open(tmp_path / "skip" / f))
    for f in sorted(os.listdir(tmp_path / "skip"))
    if f.startswith("codes-") and f.endswith(".json")
  ]
  assert [s[0] for r in reports for s in r["skipped"]] == [bad]


def test_tar_input_matches_folder(image_folder, adm_codes, tmp_path):
  path = tmp_path / "train.tar"
  with tarfile.open(path, "w") as tar:  # ImageNet layout: one tar per class inside the outer tar
    for cls in sorted(os.listdir(image_folder)):
      inner = tmp_path / f"{cls}.tar"
      with tarfile.open(inner, "w") as t:
        for f in sorted(os.listdir(image_folder / cls)):
          t.add(image_folder / cls / f, arcname=f)
      tar.add(inner, arcname=f"{cls}.tar")
  images = extract.open_images(str(path))
  assert isinstance(images, extract.TarImages) and len(images) == 9
  extract.extract(
    images, PatchTokenizer(), tmp_path / "codes", image_size=IMAGE_SIZE, batch_size=4, shard_size=4, progress=False
  )
  assert shard_bytes(tmp_path / "codes") == shard_bytes(adm_codes)


def test_tfds_folder_dataset(corrupt_folder, tmp_path, capsys):
  path = tfds_folder.build(corrupt_folder, tmp_path / "tfds")  # the broken file is skipped, and said so
  assert "broken.jpg" in capsys.readouterr().out
  images = extract.open_images(path)
  assert isinstance(images, extract.TfdsImages) and len(images) == 9
  out = tmp_path / "codes"
  extract.extract(images, PatchTokenizer(), out, image_size=IMAGE_SIZE, batch_size=4, shard_size=4, progress=False)
  import tensorflow_datasets as tfds

  ds = tfds.builder_from_directory(path).as_data_source("train")
  classes = sorted(os.listdir(corrupt_folder))
  tok = PatchTokenizer()
  for r in read_all(out):
    name = ds[int(r["index"])]["file_name"]
    name = name.decode() if isinstance(name, bytes) else name
    crop = center_crop_arr(load_image(corrupt_folder / name), IMAGE_SIZE)
    expected = np.asarray(tok.encode(np.stack([crop, crop[:, ::-1]]))).reshape(2, -1)
    np.testing.assert_array_equal(r["codes"], expected)
    assert classes[r["label"]] == name.split("/")[0]


def test_import_randar_codes(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "imagenet-llamagen-adm-256_codes"
  expected = {}
  for label in (0, 3):
    os.makedirs(root / str(label))
    for index in (5, 12, 40):
      codes = rng.integers(0, 16384, (2, 256))  # int64, like RandAR's files
      np.save(root / str(label) / f"{index}.npy", codes)
      expected[(label, index)] = codes
  extract.import_randar_codes(root, tmp_path / "codes", vocab_size=16384, shard_size=4, progress=False)
  src = records.CodeShards(tmp_path / "codes")
  assert src.grid == (16, 16) and src.num_aug == 2 and len(src) == 6
  for i in range(len(src)):
    r = src[i]
    np.testing.assert_array_equal(r["codes"], expected[(int(r["label"]), int(r["index"]))])
  np.save(root / "3" / "41.npy", rng.integers(0, 16384, (2, 255)))
  with pytest.raises(extract.CorruptInput, match="41.npy"):
    extract.import_randar_codes(root, tmp_path / "codes2", vocab_size=16384, progress=False)


def test_cli_extract_with_a_converted_vq_tokenizer(fixtures, image_folder, tmp_path, capsys):
  """End to end: convert the MaskGIT fixture tokenizer, extract with the CLI, codes equal direct encoding."""
  from conftest import fixture_file
  from randar_jax import tokenizers
  from randar_jax.cli import main
  from randar_jax.convert import convert_checkpoint

  vq = convert_checkpoint(fixture_file(fixtures, "vq_maskgit_tiny.safetensors"), tmp_path / "vq", progress=False)
  out = tmp_path / "codes"
  assert (
    main(
      [
        "extract",
        str(image_folder),
        str(out),
        "--tokenizer",
        vq,
        "--image-size",
        str(IMAGE_SIZE),
        "--batch-size",
        "4",
        "--shard-size",
        "4",
      ]
    )
    == 0
  )
  assert "wrote 3 shards of 9 inputs" in capsys.readouterr().out
  assert records.read_meta(out)["tokenizer"] == os.path.abspath(vq)
  tok = tokenizers.load(vq)
  for r in read_all(out):
    crop = center_crop_arr(extract.FolderImages(image_folder).read(int(r["index"]))[0], IMAGE_SIZE)
    np.testing.assert_array_equal(r["codes"], np.asarray(tok.encode(np.stack([crop, crop[:, ::-1]]))).reshape(2, -1))


def test_cli_extract_reports_missing_tokenizer(image_folder, tmp_path, capsys):
  from randar_jax.cli import main

  assert main(["extract", str(image_folder), str(tmp_path / "codes"), "--tokenizer", str(tmp_path / "nope")]) == 2
  assert "no checkpoint directory" in capsys.readouterr().err


def test_records_reject_foreign_bytes():
  with pytest.raises(ValueError, match="bad magic"):
    records.decode_record(b"\x00" * 40)


def test_tfds_name_source(tmp_path):
  """``tfds:NAME`` goes through tfds.data_source (here TFDS's mocked imagenet2012: random sizes, labels 0..999)."""
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=5):
    images = extract.open_images("tfds:imagenet2012", split="train")
    assert isinstance(images, extract.TfdsImages) and len(images) == 5
    extract.extract(
      images, PatchTokenizer(), tmp_path, image_size=IMAGE_SIZE, batch_size=4, shard_size=4, progress=False
    )
    ds = tfds.data_source("imagenet2012", split="train")
    tok = PatchTokenizer()
    for r in read_all(tmp_path):
      crop = center_crop_arr(Image.fromarray(ds[int(r["index"])]["image"]), IMAGE_SIZE)
      np.testing.assert_array_equal(r["codes"], np.asarray(tok.encode(np.stack([crop, crop[:, ::-1]]))).reshape(2, -1))
      assert r["label"] == ds[int(r["index"])]["label"]
