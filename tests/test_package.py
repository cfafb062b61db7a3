"""What a user's install and clone get: packaged recipes from any directory, ranges (not pins) in
install_requires, the golden fixtures shipped intact."""

import ast
import hashlib
import os

import pytest

from conftest import GOLDEN, REPO
from randar_jax import config_io


def test_packaged_recipes_by_name_or_path_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no checkout around
  names = sorted(p.stem for p in config_io.PACKAGED.glob("[!_]*.py"))
  assert names, "randar_jax/configs ships no recipe"
  for name in names:
    path = str(config_io.PACKAGED / f"{name}.py")
    for spec in (name, f"randar_jax.configs.{name}", f"configs/{name}.py", path):
      assert config_io.config_path(f"{spec}:a=1") == f"{path}:a=1", spec
  model = config_io.load_config("randar:variant=L").model
  assert config_io.load_config(f"{config_io.PACKAGED}/randar.py:variant=L").model == model
  with pytest.raises(FileNotFoundError, match=f"config file not found: nope .*{names[0]}"):
    config_io.config_path("nope:variant=L")


def test_train_command_refuses_an_unknown_config_in_one_line(capsys):
  from randar_jax import cli

  with pytest.raises(SystemExit) as e:
    cli.main(["train", "--config=nope:variant=L", "--workdir", "unused"])
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("randar-jax train: error: config file not found: nope") and "\n" not in err


def install_requires() -> list[str]:
  """setup.py's install_requires, read without running setup()."""
  tree = ast.parse((REPO / "setup.py").read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == "install_requires":
      return ast.literal_eval(node.value)
  raise AssertionError("setup.py passes no literal install_requires")


def test_install_requires_are_ranges_and_requirements_are_pins():
  requires = install_requires()
  assert requires and not [r for r in requires if "==" in r], "install_requires must give ranges, not exact pins"
  pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
  assert all("==" in p for p in pins), "requirements.txt is the exact lock"
  pinned = {p.split("==")[0].lower() for p in pins}
  names = {
    r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("~")[0].split("!")[0].strip().lower()
    for r in requires
  }
  assert names <= pinned, f"every dependency is also pinned in requirements.txt: {sorted(names - pinned)}"


def test_golden_fixtures_are_intact():
  sums = (GOLDEN / "SHA256SUMS").read_text().splitlines()
  files = {line.split()[1] for line in sums}
  assert files == {p for p in os.listdir(GOLDEN) if p not in ("SHA256SUMS", "ORIGIN.md")}, "SHA256SUMS lists every file"
  for line in sums:
    digest, name = line.split()
    assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, f"tests/golden/{name} changed"
