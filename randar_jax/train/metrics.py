"""Training logs a person can read: progress bar with ETA, JSON lines, TensorBoard events, a loss-curve PNG;
and the analytic FLOP count behind the MFU estimate.

    writer = MetricWriter(workdir, total_steps, start_step, enabled=jax.process_index() == 0)
    writer.write(step, [metrics of each step since the last write], seconds, flops_per_step, peak)
    writer.plot()                                   # WORKDIR/loss.png (also every plot_every_s from write)
    writer.close()

Files: ``WORKDIR/metrics.jsonl`` (one JSON object per logged step: step, loss, accuracy, grad_norm,
grad_norm_sum, lr, skipped (this interval), nonfinite (of them, with a NaN / inf loss or gradient norm),
skipped_total, tokens_per_s, mfu, time), ``WORKDIR/tb/``
(TensorBoard events written by tensorboardX, no TensorFlow needed: ``tensorboard --logdir WORKDIR/tb``) and
``WORKDIR/loss.png``. On resume from step k, logged steps after k are dropped from the JSON lines and TensorBoard
(``purge_step``), so the logs read as one uninterrupted run.

FLOPs (model FLOPs, the MFU convention: forward + backward = 3x forward matmul FLOPs, rematerialisation not
counted, attention over the full S x S causal square as the XLA kernel computes it) come from each family's
``forward_flops`` (e.g. ``models.randar.forward_flops``); families without one fall back to 6 * params * N per
example (Kaplan), flagged as approximate.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from randar_jax import families

# Dense peak FLOP/s per device for MFU (bf16 unless noted). CPU has none: pass a measured peak (bench_train).
# First match wins ('TPU v5 lite' before 'TPU v5', the device kind of v5p).
PEAK_FLOPS = {
  "H100": 989e12,
  "H200": 989e12,
  "A100": 312e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v5": 459e12,
  "TPU v6 lite": 918e12,
  "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> float | None:
  """The table's peak for a jax device_kind ('NVIDIA H100 80GB HBM3', 'TPU v5 lite', ...), else None."""
  for name, peak in PEAK_FLOPS.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def train_flops_per_example(cfg, num_params: int | None = None) -> tuple[float, bool]:
  """(model FLOPs of one training example, exact?) for a generator config: 3x its family's forward counter
  (``Family.forward_flops``), else 6 * params * tokens (Kaplan), flagged as approximate."""
  forward = families.of(cfg).forward_flops
  if forward is not None:
    return 3 * forward(cfg), True
  if num_params is None:
    raise ValueError(f"no FLOP counter for {cfg.FAMILY!r}; pass num_params for the 6 * N * tokens estimate")
  return 6.0 * num_params * cfg.num_tokens, False


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Means over an interval of per-step metrics; the last lr and skipped_total; skipped and nonfinite summed."""
  counts = [k for k in ("skipped", "nonfinite") if k in records[0]]
  out = {k: float(np.mean([r[k] for r in records])) for k in records[0] if k not in ("lr", "skipped_total", *counts)}
  out["lr"] = float(records[-1]["lr"])
  for k in counts:
    out[k] = int(sum(int(r[k]) for r in records))
  out["skipped_total"] = int(records[-1]["skipped_total"])
  return out


class MetricWriter:
  """Process 0's logs (``enabled=False`` on the others: then only the bookkeeping runs)."""

  def __init__(
    self,
    workdir: str,
    total_steps: int,
    start_step: int = 0,
    *,
    enabled: bool = True,
    tokens_per_step: int = 0,
    progress: bool = True,
    plot_every_s: float = 300.0,
  ):
    self.workdir, self.enabled, self.tokens_per_step = workdir, enabled, tokens_per_step
    self.plot_every_s, self.last_plot = plot_every_s, time.time()
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    self.bar = tqdm(
      total=total_steps,
      initial=start_step,
      desc="train",
      unit="step",
      dynamic_ncols=True,
      disable=not (enabled and progress),
    )
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._truncate(start_step)
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1, flush_secs=30)

  def _truncate(self, start_step: int) -> None:
    """Drops lines logged after ``start_step`` (a previous run got further than its last checkpoint)."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)["step"] <= start_step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(self.path + ".tmp", self.path)

  def write(
    self,
    step: int,
    records: Sequence[Mapping[str, Any]],
    seconds: float | None = None,
    flops_per_step: float | None = None,
    peak: float | None = None,
  ) -> dict[str, Any]:
    """Logs the interval ending at ``step`` (``records``: host metrics of each step in it)."""
    row: dict[str, Any] = {"step": step, **summarize(records)}
    if seconds:
      steps_per_s = len(records) / seconds
      row["tokens_per_s"] = steps_per_s * self.tokens_per_step
      if flops_per_step and peak:
        row["mfu"] = steps_per_s * flops_per_step / peak
    row["time"] = time.time()
    self.bar.update(len(records))
    postfix = {"loss": f"{row['loss']:.4f}", "lr": f"{row['lr']:.2e}"}
    if row.get("skipped_total"):
      postfix["skipped"] = row["skipped_total"]
    if row.get("nonfinite"):
      postfix["nonfinite"] = row["nonfinite"]
    self.bar.set_postfix(postfix, refresh=False)
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
      for key, value in row.items():
        if key not in ("step", "time") and math.isfinite(value):
          self.tb.add_scalar(f"train/{key}", value, step)
      if time.time() - self.last_plot > self.plot_every_s:
        self.plot()
    return row

  def write_scalars(self, step: int, prefix: str, values: Mapping[str, float]) -> None:
    if self.enabled:
      for key, value in values.items():
        self.tb.add_scalar(f"{prefix}/{key}", float(value), step)
      with open(os.path.join(self.workdir, f"{prefix}.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")

  def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
    if self.enabled:
      self.tb.add_image(tag, image, step, dataformats="HWC")

  def plot(self) -> str | None:
    """WORKDIR/loss.png: loss (and accuracy, lr) against step from metrics.jsonl."""
    if not self.enabled or not os.path.exists(self.path):
      return None
    with open(self.path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
      return None
    from matplotlib.figure import Figure  # not pyplot: no global backend switch (a notebook keeps its inline one)

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    for ax, key in zip(axes, ("loss", "accuracy", "lr")):
      ax.plot(steps, [r[key] for r in rows], lw=1)
      ax.set_xlabel("step")
      ax.set_title(key)
      ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(self.workdir, "loss.png")
    fig.savefig(path, dpi=100)
    self.last_plot = time.time()
    return path

  def close(self) -> None:
    self.bar.close()
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The JSON lines of a run (for tests and notebooks)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
