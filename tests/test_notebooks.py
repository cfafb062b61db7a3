"""The notebooks (notebooks/*.ipynb) run to the end headless on a CPU with their small parameter set, and are
stored clean: no outputs, a Colab badge, an install cell, a ``parameters`` cell, public API only.

Execution: nbclient with a kernelspec written for this interpreter (sys.executable, so the kernel is the venv that
runs pytest whatever kernels the machine has registered). Parameters are injected as papermill does: a cell tagged
``injected-parameters`` after the one tagged ``parameters``. The kernel gets 8 fake CPU devices (XLA_FLAGS, as
conftest sets for the suite) on purpose: the notebooks then shard over an 8-device mesh, the shape of a TPU v2-8.

Chain (one kernel each): train_digits trains 40 steps -> zero_shot edits test digits with that run (DIGITS_RUN);
quickstart converts the tiny RandAR and VQ fixtures (the released-weights path) or, without fixtures, runs the
tiny random fallback, which test_load_generator_fallbacks also covers.
"""

import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest

from conftest import REPO, fixtures_dir, load_json

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart", "zero_shot", "train_digits")
KERNEL = "randar-jax-tests"
BADGE = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+)/randar_jax/blob/main/notebooks/(\w+)\.ipynb")

# The "small" parameter sets CI runs with (the notebooks' own defaults are the real runs).
SMALL = {
  "train_digits": dict(STEPS=40, ROUNDS=2, NUM_PER_CLASS=2, SAMPLE_STEPS=(16, 4)),
  "zero_shot": dict(SAMPLES=2, STEPS=4, EXTRAPOLATION_STEPS=8),
  "quickstart": dict(NUM_PER_CLASS=1, BATCH_SIZE=8, CLASSES="0-7"),
}


def read(name: str):
  return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def text_outputs(nb) -> str:
  parts = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      parts.append(out.get("text", "") if out.output_type == "stream" else out.get("data", {}).get("text/plain", ""))
  return "\n".join(parts)


def png_outputs(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def inject(nb, params: dict):
  """papermill's convention: the overrides go into a new cell right after the one tagged 'parameters'."""
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index + 1, cell)
  return nb


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
  """A kernelspec running this interpreter, with the suite's device setting, found through JUPYTER_PATH."""
  root = tmp_path_factory.mktemp("jupyter")
  spec = root / "kernels" / KERNEL
  spec.mkdir(parents=True)
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu", "TQDM_MININTERVAL": "5"}
  spec.joinpath("kernel.json").write_text(
    json.dumps(
      {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "randar_jax tests",
        "language": "python",
        "env": env,
      }
    )
  )
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = os.pathsep.join([str(root)] + ([old] if old else []))
  yield KERNEL
  if old is None:
    os.environ.pop("JUPYTER_PATH", None)
  else:
    os.environ["JUPYTER_PATH"] = old


def execute(name: str, kernel: str, workdir: pathlib.Path, **params):
  """Runs a notebook in ``workdir`` with SMALL[name] and ``params`` injected; any cell error fails the test."""
  nb = inject(read(name), {**SMALL[name], **params})
  client = nbclient.NotebookClient(
    nb, kernel_name=kernel, timeout=300, allow_errors=False, resources={"metadata": {"path": str(workdir)}}
  )
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{name}.ipynb failed:\n{e}")
  (workdir / f"{name}.executed.ipynb").write_text(nbformat.writes(nb))  # for a person looking into a failure
  return nb


@pytest.fixture(scope="module")
def digits_run(kernel, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("train_digits")
  run = workdir / "run"
  return execute("train_digits", kernel, workdir, WORKDIR=str(run)), run


def test_train_digits(digits_run):
  nb, run = digits_run
  out = text_outputs(nb)
  assert "mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in out, "the notebook should shard over the 8 test devices"
  losses = [row["loss"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
  assert len(losses) >= 10 and losses[-1] < losses[0] - 0.3, f"the loss did not fall: {losses}"
  accuracies = [float(a) for a in re.findall(r"forwards: classifier accuracy ([\d.]+)%", out)]
  assert len(accuracies) == len(SMALL["train_digits"]["SAMPLE_STEPS"]) and all(0 <= a <= 100 for a in accuracies)
  assert (run / "loss.png").is_file() and len(list((run / "samples").glob("*.png"))) == 2
  assert png_outputs(nb) == 2 + 1 + 2  # a sample grid per round, the loss curve, the final grids


def test_zero_shot(digits_run, kernel, tmp_path):
  _, run = digits_run
  nb = execute("zero_shot", kernel, tmp_path, DIGITS_RUN=str(run), OUT=str(tmp_path / "out"))
  out = text_outputs(nb)
  assert "digits: RandAR" in out and "unmasked pixels kept exactly: True" in out
  assert "canvas 8x8 -> 8x12 pixels" in out and "extrapolated: 16x16 pixels from a model trained on 8x8" in out
  written = {p.stem for p in (tmp_path / "out").glob("*.png")}
  assert written == {"input", "inpaint", "edit", "outpaint", "extend", "extrapolate", "features"}
  assert png_outputs(nb) == len(written)


def test_quickstart(kernel, tmp_path):
  """The released-weights path on the tiny fixtures: a RandAR converted beforehand (a checkpoint directory; its
  config is not a published size, so the notebook could not infer it) and the LlamaGen VQ as a PyTorch file that
  the notebook converts. Without fixtures: the tiny random fallback."""
  params = {}
  fixtures = fixtures_dir()
  if fixtures is not None:
    from randar_jax.convert import convert_checkpoint
    from randar_jax.models.randar import RandARConfig

    args = load_json(fixtures / "randar_tiny_config.json")["constructor_args"]
    model_dir = convert_checkpoint(
      fixtures / "randar_tiny.safetensors", tmp_path / "randar_tiny", RandARConfig.from_torch_args(args), progress=False
    )
    params = dict(RANDAR_WEIGHTS=model_dir, TOKENIZER_WEIGHTS=str(fixtures / "vq_llamagen_tiny.safetensors"))
  else:
    params = dict(RANDAR_WEIGHTS="", TOKENIZER_WEIGHTS="")
  nb = execute("quickstart", kernel, tmp_path, CKPT_DIR=str(tmp_path / "ckpt"), OUT=str(tmp_path / "out"), **params)
  out = text_outputs(nb)
  source = "weights" if fixtures is not None else "random"
  assert f"{source}: RandAR" in out
  grid = int(re.search(r"RandAR with [\d,]+ parameters, (\d+)x\1 tokens", out).group(1))
  steps = [round(s * grid * grid / 256) for s in (88, 256)]  # the notebook's STEPS, scaled to the model's tokens
  speeds = re.findall(r"(\d+) forwards: +([\d.]+) images/s", out)
  assert [int(n) for n, _ in speeds] == steps and all(float(s) > 0 for _, s in speeds)
  written = {p.name for p in (tmp_path / "out").glob("*.png")}
  assert written == {f"samples_{steps[0]}_steps.png", "schedule.png", f"samples_{steps[1]}_steps.png"}
  assert png_outputs(nb) == 3
  if fixtures is not None:  # the notebook converted the tokenizer
    assert (tmp_path / "ckpt" / "vq_llamagen_tiny").is_dir()


def test_load_generator_fallbacks(tmp_path, capsys):
  """Missing weights fall back (digits run, else a tiny random model); weights without a tokenizer are an error."""
  from randar_jax import notebook

  gen = notebook.load_generator(str(tmp_path / "missing.safetensors"), "vq.pt", digits_run=str(tmp_path / "nope"))
  assert gen.source == "random" and gen.tokenizer.vocab_size == gen.model.config.vocab_size
  assert "not found" in capsys.readouterr().out
  with pytest.raises(FileNotFoundError, match="need their image tokenizer"):
    notebook.load_generator(str(tmp_path), str(tmp_path / "missing.pt"))
  image, label = notebook.example_image(gen.model.config.grid_size, channels=1)
  assert image.shape == (8, 8, 1) and image.dtype == np.uint8 and 0 <= label < 10
  photo, label = notebook.example_image(32, channels=3)
  assert photo.shape == (32, 32, 3) and label is None


def test_upload_saves_the_chosen_file(tmp_path, monkeypatch):
  """Colab's picker (google.colab.files.upload returns {name: bytes}) -> a file in the directory; outside Colab a
  clear error."""
  import types

  from randar_jax import notebook

  with pytest.raises(RuntimeError, match="needs Google Colab"):
    notebook.upload("weights", str(tmp_path))
  files = types.SimpleNamespace(upload=lambda: {"weights.safetensors": b"\x01\x02"})
  monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
  monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(files=files))
  path = notebook.upload("weights", str(tmp_path / "up"))
  assert path == str(tmp_path / "up" / "weights.safetensors") and open(path, "rb").read() == b"\x01\x02"
  files.upload = lambda: {}
  with pytest.raises(ValueError, match="exactly one file"):
    notebook.upload("weights", str(tmp_path))


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_clean(name):
  """No outputs; a Colab badge to itself; the install cell first (identical in every notebook, guarded so it is
  skipped where randar_jax is installed); a parameters cell; only public randar_jax names."""
  nb = read(name)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), f"{name}.ipynb is stored with outputs"
  badges = BADGE.findall("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
  assert badges and all(n == name for _, n in badges), f"{name}.ipynb needs a Colab badge linking to itself"
  readme = BADGE.findall((REPO / "README.md").read_text())
  assert {o for o, _ in badges} == {o for o, _ in readme} and (badges[0][0], name) in readme, (
    "the README's Notebooks section must list the badge with the same repository owner"
  )
  first = next(c for c in read(NAMES[0]).cells if c.cell_type == "code")
  assert code[0].source == first.source, "the install cell differs between notebooks"
  assert 'find_spec("randar_jax") is None' in code[0].source and "%pip install" in code[0].source
  assert any("parameters" in c.metadata.get("tags", []) for c in code), f"{name}.ipynb has no parameters cell"
  private = re.findall(
    r"randar_jax[\w.]*\._\w+|from randar_jax[\w.]* import [^\n]*\b_\w+", "\n".join(c.source for c in code)
  )
  assert not private, f"{name}.ipynb uses private names {private}: call public functions"
