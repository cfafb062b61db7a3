"""The digits demo end to end on a short budget: train, sample, edit, measure, reuse, refuse a different run.

The full recipe's numbers are in the README (``randar-jax demo``); here a shorter run must still put samples of
the asked class well above chance (10%), and editing must keep every known pixel.
"""

import json
import os

import numpy as np
import pytest

from randar_jax import cli, demo
from randar_jax.data import digits

SHORT_STEPS = 400  # 4/7 of the recipe's budget
PER_CLASS = 20
MIN_ACCURACY = 0.3  # 3x chance; measured on this budget: see the README's demo section


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("digits"))
  return out, demo.run(out, total_steps=SHORT_STEPS, per_class=PER_CLASS, progress=False)


def test_writes_pictures_and_metrics(finished):
  out, metrics = finished
  for name in (
    "samples.npz",
    "samples_64_steps.png",
    "samples_16_steps.png",
    "inpaint.png",
    "outpaint.png",
    "loss.png",
  ):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "metrics.json")) as f:
    assert json.load(f) == metrics
  assert metrics["train_steps"] == SHORT_STEPS and metrics["train_seconds"] > 0
  assert metrics["ceiling_test_accuracy"] > 0.98  # the judge itself, on real test digits
  assert 0.0 <= metrics["memorised_64_steps"] <= 1.0
  with np.load(os.path.join(out, "samples.npz")) as saved:  # for re-scoring with another classifier
    assert saved["images"].shape == (digits.NUM_CLASSES * PER_CLASS, digits.GRID, digits.GRID)
    assert saved["images"].max() < digits.LEVELS
    np.testing.assert_array_equal(saved["labels"], np.repeat(np.arange(digits.NUM_CLASSES), PER_CLASS))
    expected = demo.within_class_diversity(saved["images"], saved["labels"])
  assert metrics["within_class_diversity_64_steps"] == round(expected, 3) > 0


def test_samples_have_the_asked_class(finished):
  _, metrics = finished
  assert metrics["accuracy_64_steps"] >= MIN_ACCURACY, metrics
  assert metrics["accuracy_16_steps"] >= MIN_ACCURACY, metrics


def test_editing_keeps_known_pixels_and_class(finished):
  _, metrics = finished
  assert metrics["inpaint_keeps_known_pixels"] and metrics["outpaint_keeps_known_pixels"]
  assert metrics["inpaint_accuracy"] >= MIN_ACCURACY and metrics["outpaint_accuracy"] >= MIN_ACCURACY, metrics


def test_a_finished_run_is_reused_and_another_setup_refused(finished, capsys):
  out, _ = finished
  assert demo.train_or_reuse(demo.digits_config("random", SHORT_STEPS), os.path.join(out, "train"), False) is None
  with pytest.raises(ValueError, match="different setup"):
    demo.train_or_reuse(demo.digits_config("raster", SHORT_STEPS), os.path.join(out, "train"), False)
  assert cli.main(["demo", "--out", out, "--steps", str(SHORT_STEPS), "--per-class", "1"]) == 0
  assert "reused the finished run" in capsys.readouterr().out


def test_digits_split_is_fixed_and_stratified():
  (train_x, train_y), (test_x, test_y) = digits.load_split()["train"], digits.load_split()["test"]
  assert len(train_x) + len(test_x) == 1797 and len(test_x) == 360
  assert np.abs(np.bincount(test_y) - np.bincount(np.concatenate([train_y, test_y])) * 0.2).max() <= 1  # stratified


@pytest.mark.parametrize("kwargs", [dict(per_class=0), dict(total_steps=0), dict(order="spiral")])
def test_bad_settings_are_refused_before_training(tmp_path, kwargs):
  with pytest.raises(ValueError, match="need order"):
    demo.run(str(tmp_path), **kwargs)
  assert not os.listdir(tmp_path)
