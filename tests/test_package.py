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


def setup_list(name: str) -> list[str]:
  """A list literal assigned to ``name`` in setup.py (INSTALL_REQUIRES, TEST_REQUIRES), read without running it."""
  for node in ast.parse((REPO / "setup.py").read_text()).body:
    if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]:
      return ast.literal_eval(node.value)
  raise AssertionError(f"setup.py assigns no literal {name}")


def test_install_requires_are_ranges_that_the_lock_satisfies():
  """setup.py gives ranges (an environment's jax / numpy is kept), requirements.txt the exact lock, and every
  locked version lies in its range."""
  from packaging.requirements import Requirement
  from packaging.utils import canonicalize_name

  ranges = [Requirement(r) for r in setup_list("INSTALL_REQUIRES") + setup_list("TEST_REQUIRES")]
  pinned = [r for r in ranges if any(s.operator in ("==", "===") for s in r.specifier)]
  assert ranges and not pinned, f"exact pins in setup.py: {pinned}"
  lines = (REPO / "requirements.txt").read_text().splitlines()
  lock = {canonicalize_name(n): v for n, _, v in (x.partition("==") for x in lines if x and not x.startswith("#"))}
  assert all(lock.values()), "requirements.txt pins every line with =="
  for r in ranges:
    name = canonicalize_name(r.name)
    assert name in lock, f"{r.name} is in setup.py but not pinned in requirements.txt"
    assert r.specifier.contains(lock[name]), f"requirements.txt's {r.name}=={lock[name]} is outside {r.specifier}"


def test_golden_fixtures_are_intact():
  sums = (GOLDEN / "SHA256SUMS").read_text().splitlines()
  files = {line.split()[1] for line in sums}
  assert files == {p for p in os.listdir(GOLDEN) if p not in ("SHA256SUMS", "ORIGIN.md")}, "SHA256SUMS lists every file"
  for line in sums:
    digest, name = line.split()
    assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, f"tests/golden/{name} changed"
