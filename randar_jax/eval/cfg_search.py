"""The classifier-free-guidance scale search (RandAR ``tools/search_cfg_weights.py``, docs/randar.md section 13):
sample ``num_samples`` images per scale, score each scale against the reference, then optionally a larger run at
the best scale. Resumable and multi-host.

    search = SearchConfig(scales=parse_scales('2.0:8.0:0.2'), num_samples=10000, final_samples=50000)
    summary = run(model, tokenizer, extractor, reference, 'runs/cfg', search)

Layout of the output directory (every file written by process 0, atomically):

    search.json                  the settings; a re-run with other settings is refused (use another directory)
    scales/cfg_4.2000.json       one finished scale: fid, inception_score, precision, recall, seconds, ...
    fid_vs_cfg.png               FID (and IS) against the scale, the best one marked
    summary.json                 every scale, the best, and the final run
    final_cfg_4.2000.json        the final run at the best scale (``final_samples`` > 0)
    samples_cfg_4.2000[_p{i}of{n}].npz   its images in the ADM format (``save_samples``), one file per process

A re-run skips every scale whose result file exists, so an interrupted search continues where it stopped (a result
can also be placed there by hand). The final run draws fresh labels and samples (seed + 1), so the chosen scale is
not scored on the samples that chose it. Guidance for scale s: RandAR's linear ramp 1 -> s over the decoded
fraction (``schedule='linear'``), a constant s, or RAR's ``powcos:P`` (s with power P).

Multi-host: the class labels (uniformly random, the same for every scale) are split into one contiguous share per
process; sample i is drawn with the key ``fold_in(key(seed), i)`` as ``randar-jax sample`` draws it
(:func:`randar_jax.decode.batched.decode_batches`), so the samples do not depend on the process count; each process
decodes its share and extracts features on its own devices; the features are then gathered
(``process_allgather``) and process 0 computes the metrics and writes the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from randar_jax import sharding
from randar_jax.decode import batched
from randar_jax.decode.sampling import Guidance, Sampling
from randar_jax.eval import extractors, metrics
from randar_jax.eval.evaluate import Statistics, compare, gather_rows
from randar_jax.eval.samples import AdmNpzWriter
from randar_jax.utils import images as image_utils


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  scales: tuple[float, ...]
  num_samples: int = 10000
  final_samples: int = 0  # 0: no final run
  steps: int = -1  # forwards per image (-1: one token each); the CLI gives the family's default
  batch_size: int = 64
  seed: int = 0
  schedule: str = "linear"  # 'linear' (1 -> s), 'constant' (s), 'powcos:P'
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  save_samples: bool = False  # write the final run's images as ADM .npz

  def __post_init__(self):
    if not self.scales:
      raise ValueError("no guidance scales to search")
    if self.num_samples < 2 or self.final_samples < 0 or self.batch_size < 1:
      raise ValueError(
        f"need num_samples >= 2, final_samples >= 0 and batch_size >= 1, got {self.num_samples}, "
        f"{self.final_samples}, {self.batch_size}"
      )
    guidance(self.schedule, 1.0)  # validates the schedule
    Sampling.make(self.temperature, self.top_k, self.top_p)

  def settings(self) -> dict[str, Any]:
    """What a result depends on (the scale list may grow between runs)."""
    values = dataclasses.asdict(self)
    del values["scales"], values["final_samples"], values["save_samples"]
    return values


def parse_scales(spec: str) -> tuple[float, ...]:
  """'2.0:8.0:0.2' (inclusive range) or '1.5,3,4.5'."""
  try:
    if ":" in spec:
      start, stop, step = (float(v) for v in spec.split(":"))
      if not all(np.isfinite([start, stop, step])) or step <= 0 or stop < start or (stop - start) / step > 10_000:
        raise ValueError
      count = int(np.floor((stop - start) / step + 1e-6)) + 1
      scales = tuple(round(start + i * step, 6) for i in range(count))
    else:
      scales = tuple(float(v) for v in spec.split(","))
    if not all(np.isfinite(scales)) or min(scales) < 0:
      raise ValueError
    return scales
  except ValueError:
    raise ValueError(
      f"malformed --scales {spec!r}: use finite scales >= 0 as START:STOP:STEP (e.g. 2.0:8.0:0.2, at most "
      f"10,000 of them) or a list '2,3,4'"
    ) from None


def guidance(schedule: str, scale: float) -> Guidance:
  if schedule == "linear":
    return Guidance.linear(1.0, scale)
  if schedule == "constant":
    return Guidance.constant(scale)
  if schedule.startswith("powcos:"):
    try:
      return Guidance.pow_cosine(scale, float(schedule.split(":", 1)[1]))
    except ValueError:
      pass
  raise ValueError(f"unknown guidance schedule {schedule!r}: use 'linear', 'constant' or 'powcos:POWER'")


def _name(scale: float) -> str:
  return f"cfg_{scale:.4f}"


def _write_json(path: str, value: Any) -> None:
  partial = path + ".partial"
  with open(partial, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(partial, path)


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"cannot read {path} ({e}); delete it to recompute") from None


def _share(count: int) -> slice:
  """This process's contiguous part of ``count`` items."""
  p, n = jax.process_index(), jax.process_count()
  return slice(count * p // n, count * (p + 1) // n)


def _agree(flags: np.ndarray) -> np.ndarray:
  """Process 0's decision, on every process."""
  if jax.process_count() == 1:
    return flags
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.broadcast_one_to_all(flags))


def sample_statistics(
  model,
  tokenizer,
  extractor,
  labels: np.ndarray,
  scale: float,
  search: SearchConfig,
  *,
  mesh=None,
  save: str | None = None,
  progress: bool = True,
) -> Statistics | None:
  """Samples this process's share of ``labels`` at one scale, decodes and extracts features batch by batch;
  returns the statistics of every process's samples on process 0 (None elsewhere)."""
  indices = np.arange(len(labels))[_share(len(labels))]
  share = labels[indices]
  sampling = Sampling.make(search.temperature, search.top_k, search.top_p)
  mesh = mesh if mesh is not None else sharding.build_mesh(devices=jax.local_devices())
  with sharding.model_context(mesh):
    tokens, _ = batched.sample_labels(
      model,
      share,
      batch_size=search.batch_size,
      seed=search.seed,
      indices=indices,
      num_steps=search.steps,
      sampling=sampling,
      guidance=guidance(search.schedule, scale),
      progress=progress,
    )
  side = model.config.grid_size * tokenizer.downsample
  feats, logits = [], []
  with (  # the ADM format is RGB: grey images are written with their level repeated
    AdmNpzWriter(save, len(share), (side, side, 3), labels=share) if save else contextlib.nullcontext()
  ) as writer:
    for f, lg in extractors.extract(
      extractor, _decoded(tokenizer, tokens, search.batch_size, writer, progress), search.batch_size
    ):
      feats.append(f)
      logits.append(lg)
  feats = gather_rows(np.concatenate(feats))
  logits = gather_rows(None if logits[0] is None else np.concatenate(logits))
  if jax.process_index() != 0:
    return None
  running = metrics.RunningStats()
  for start in range(0, len(feats), 4096):
    running.update(feats[start : start + 4096], None if logits is None else logits[start : start + 4096])
  return Statistics.from_running(running, extractor.name)


def _decoded(tokenizer, tokens: np.ndarray, batch_size: int, writer: AdmNpzWriter | None, progress: bool):
  """Device images per batch of token grids; batches are padded for the decoder (one compile) and trimmed."""
  for start in tqdm(
    range(0, len(tokens), batch_size), desc="decoding + features", unit="batch", leave=False, disable=not progress
  ):
    chunk = tokens[start : start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    images = tokenizer.decode(chunk)[:n]
    if writer is not None:
      writer.write(image_utils.as_rgb(np.asarray(images)))
    yield images


def plot(results: list[dict], path: str, best: dict | None = None) -> str:
  """FID against the guidance scale (IS on a second axis where known), the best scale marked."""
  from matplotlib.figure import Figure  # not pyplot: no global backend switch (a notebook keeps its inline one)

  results = sorted(results, key=lambda r: r["scale"])
  scales = [r["scale"] for r in results]
  fig = Figure(figsize=(7, 4.2), dpi=120)
  ax = fig.subplots()
  ax.plot(scales, [r["fid"] for r in results], "o-", color="tab:blue", label="FID")
  ax.set_xlabel("guidance scale")
  ax.set_ylabel(f"FID ({results[0].get('num_samples', '?')} samples)", color="tab:blue")
  if best is not None:
    ax.axvline(best["scale"], color="tab:blue", ls=":", lw=1)
    ax.annotate(
      f"best {best['scale']:g}: FID {best['fid']:.2f}",
      (best["scale"], best["fid"]),
      textcoords="offset points",
      xytext=(6, 8),
      color="tab:blue",
    )
  if all("inception_score" in r for r in results):
    twin = ax.twinx()
    twin.plot(scales, [r["inception_score"] for r in results], "s--", color="tab:orange", ms=4)
    twin.set_ylabel("Inception Score", color="tab:orange")
  ax.set_title("CFG search")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  return path


def on_lead(fn, *args, **kwargs):
  """Runs ``fn`` on process 0 only and shares whether it succeeded: on failure process 0 raises the error and
  every other process stops too (instead of waiting forever in the next collective). Returns fn's result on
  process 0, None elsewhere."""
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised below, after the other processes were told
      error = e
  failed = bool(_agree(np.array([error is not None]))[0])
  if error is not None:
    raise error
  if failed:
    raise RuntimeError("process 0 stopped with an error (see its log)")
  return result


def prepare(out_dir: str, search: SearchConfig, extractor: str, inputs: dict | None = None) -> None:
  """Creates the output directory, or checks that the search stored there has the same settings (every process
  stops if not). Call it before reusing anything cached in ``out_dir``; :func:`run` calls it too."""
  on_lead(
    _check_settings,
    os.path.join(out_dir, "search.json"),
    {**search.settings(), "extractor": extractor, **(inputs or {})},
  )


def run(
  model,
  tokenizer,
  extractor,
  reference: Statistics | None,
  out_dir: str,
  search: SearchConfig,
  *,
  mesh=None,
  inputs: dict | None = None,
) -> dict | None:
  """Runs (or continues) the search; returns the summary on process 0 (None elsewhere). ``reference`` is needed
  on process 0 only. ``inputs`` (e.g. the model and reference paths) joins the settings a re-run must share."""
  lead = jax.process_index() == 0
  scale_dir = os.path.join(out_dir, "scales")
  if lead and reference is None:
    raise ValueError("process 0 needs the reference statistics")
  prepare(out_dir, search, extractor.name, inputs)
  labels = batched.parse_labels(None, None, model.config.num_classes, search.num_samples, search.seed)
  done = np.array(
    [os.path.isfile(os.path.join(scale_dir, _name(s) + ".json")) if lead else False for s in search.scales]
  )
  done = _agree(done)
  if done.any() and lead:
    print(f"resuming: {int(done.sum())} of {len(done)} scales already evaluated in {scale_dir}")
  for scale in tqdm(
    [s for s, d in zip(search.scales, done) if not d], desc="cfg scales", unit="scale", disable=not lead
  ):
    start = time.time()
    stats = sample_statistics(model, tokenizer, extractor, labels, scale, search, mesh=mesh, progress=lead)
    if lead:
      result = {"scale": scale, **compare(stats, reference), "seconds": round(time.time() - start, 1)}
      _write_json(os.path.join(scale_dir, _name(scale) + ".json"), result)
      tqdm.write(
        f"cfg {scale:g}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "scale")
      )
  summary = _summarise(out_dir, search) if lead else None
  best_scale = float(_agree(np.array([summary["best"]["scale"] if lead else 0.0]))[0])
  if search.final_samples:
    final = _final(model, tokenizer, extractor, reference, out_dir, search, best_scale, mesh)
    if lead:
      summary["final"] = final
      _write_json(os.path.join(out_dir, "summary.json"), summary)
  return summary


def _check_settings(path: str, settings: dict) -> None:
  os.makedirs(os.path.join(os.path.dirname(path), "scales"), exist_ok=True)
  if os.path.isfile(path):
    stored = _read_json(path)
    changed = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
    if changed:
      raise ValueError(
        f"{os.path.dirname(path)} holds a search with other settings ({changed}, as "
        f"(stored, now)); its results would not be comparable: use another --out directory"
      )
  else:
    _write_json(path, settings)


def _summarise(out_dir: str, search: SearchConfig) -> dict:
  """Reads every finished scale of this search, plots them, writes summary.json."""
  results = []
  for scale in search.scales:
    result = _read_json(os.path.join(out_dir, "scales", _name(scale) + ".json"))
    if "fid" not in result:
      raise ValueError(f"{out_dir}/scales/{_name(scale)}.json has no 'fid'; delete it to recompute")
    results.append({**result, "scale": scale})
  best = min(results, key=lambda r: r["fid"])
  plot(results, os.path.join(out_dir, "fid_vs_cfg.png"), best)
  summary = {"scales": results, "best": best, "plot": os.path.join(out_dir, "fid_vs_cfg.png")}
  _write_json(os.path.join(out_dir, "summary.json"), summary)
  print(f"best guidance scale {best['scale']:g} (FID {best['fid']:.3f}); plot: {summary['plot']}")
  return summary


def _final(
  model, tokenizer, extractor, reference, out_dir: str, search: SearchConfig, scale: float, mesh
) -> dict | None:
  """The larger run at the best scale; skipped if its result exists."""
  path = os.path.join(out_dir, f"final_{_name(scale)}.json")
  exists = _agree(np.array([os.path.isfile(path) if jax.process_index() == 0 else False]))[0]
  if exists:
    return _read_json(path) if jax.process_index() == 0 else None
  final = dataclasses.replace(search, num_samples=search.final_samples, seed=search.seed + 1)  # fresh samples
  labels = batched.parse_labels(None, None, model.config.num_classes, final.num_samples, final.seed)
  parts = "" if jax.process_count() == 1 else f"_p{jax.process_index()}of{jax.process_count()}"
  save = os.path.join(out_dir, f"samples_{_name(scale)}{parts}.npz") if search.save_samples else None
  start = time.time()
  stats = sample_statistics(
    model, tokenizer, extractor, labels, scale, final, mesh=mesh, save=save, progress=jax.process_index() == 0
  )
  if jax.process_index() != 0:
    return None
  result = {"scale": scale, **compare(stats, reference), "seconds": round(time.time() - start, 1)}
  _write_json(path, result)
  print(
    f"final run at cfg {scale:g}: "
    + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "scale")
  )
  return result
