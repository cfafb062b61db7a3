"""A TF-free TFDS builder for a local folder of class sub-folders, written in array_record format.

    path = build('train_images/', 'tfds_data/')            # -> tfds_data/class_folder/1.0.0
    src = tfds.builder_from_directory(path).as_data_source('train')      # {'image', 'label', 'file_name'}
    randar-jax folder-to-tfds train_images/ tfds_data/    # same, from the shell; then `randar-jax extract PATH ...`

TFDS's own ``ImageFolder`` needs TensorFlow and cannot produce an array_record ``data_source`` (it reads
through tf.data), so this builder yields the original file bytes (RGB JPEG/PNG kept as they are; other modes converted
to RGB PNG) and lets TFDS write array_record shards. Labels are the sorted class names. Unreadable files are
reported by path and skipped, or stop the build with ``on_error='fail'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from randar_jax.data.extract import CorruptInput, FolderImages


class ClassFolder(tfds.core.GeneratorBasedBuilder):
  """Splits given as {split name: class-folder tree}; every tree must have the same classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Images of a local class-folder tree."}

  def __init__(self, *, splits: Mapping[str, str], on_error: str = "skip", **kwargs):
    self._trees = {name: FolderImages(path) for name, path in splits.items()}
    classes = {tuple(t.classes) for t in self._trees.values()}
    if len(classes) != 1:
      raise ValueError(f"the splits {sorted(splits)} have different class sub-folders")
    self._classes, self._on_error = list(classes.pop()), on_error
    super().__init__(**kwargs)

  # TFDS 4.9.10 finds a packaged builder's code through the `importlib_resources` backport, which it does not
  # install on Python >= 3.9 (ModuleNotFoundError in download_and_prepare); this file is the code path.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo built here: dataset_info_from_configs() looks for metadata files beside the module and fails.
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
          "label": tfds.features.ClassLabel(names=self._classes),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    return {name: self._generate_examples(tree) for name, tree in self._trees.items()}

  def _generate_examples(self, tree: FolderImages):
    for i, path in enumerate(tree.paths):
      try:
        with Image.open(path) as image:
          image.load()
          keep = image.mode == "RGB" and image.format in ("JPEG", "PNG")
          data = path if keep else image.convert("RGB")  # a path is stored byte for byte
      except Exception as e:  # noqa: BLE001  (any decode error of a user file; reported by path)
        if self._on_error == "fail":
          raise CorruptInput(f"cannot read {path}: {type(e).__name__}: {e}") from None
        print(f"skipping unreadable image {path}: {type(e).__name__}: {e}")
        continue
      name = os.path.relpath(path, tree.root)
      yield name, {"image": data, "label": tree.labels[i], "file_name": name}


def build(root: str | os.PathLike, data_dir: str | os.PathLike, split: str = "train", on_error: str = "skip") -> str:
  """Builds the array_record TFDS dataset of the class-folder tree ``root`` as ``split``; returns its directory."""
  builder = ClassFolder(
    splits={split: os.fspath(root)}, on_error=on_error, data_dir=os.fspath(data_dir), file_format="array_record"
  )
  builder.download_and_prepare()
  return os.fspath(builder.data_dir)
