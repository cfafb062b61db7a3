"""Outputs that are whole or absent: write under a temporary name in the same folder, rename when complete.

``os.replace`` within one file system is atomic, so a reader (or a resumed run) sees either the old file, the new
one, or none; a crash leaves at most a ``*.partial-<pid>`` file that the next run overwrites or removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator


def partial_name(path: str | os.PathLike) -> str:
  """The temporary sibling of ``path`` used while it is being written (unique per process)."""
  return f"{os.fspath(path)}.partial-{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path to write a file or a folder at; renames it to ``path`` on success, removes it on error.

  An existing ``path`` is replaced only once the new one is complete (a folder is swapped by two renames: the
  old one is moved aside first and deleted after, so a crash between them leaves the old one under ``.old-<pid>``).
  """
  path = os.fspath(path)
  tmp = partial_name(path)
  remove(tmp)
  try:
    yield tmp
  except BaseException:
    remove(tmp)
    raise
  if os.path.isdir(path) and not os.path.islink(path):
    old = f"{path}.old-{os.getpid()}"
    os.replace(path, old)
    os.replace(tmp, path)
    remove(old)
  else:
    os.replace(tmp, path)


def remove(path: str | os.PathLike) -> None:
  """Deletes a file or folder if it exists."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def check_output_file(path: str | os.PathLike, suffix: str = "", flag: str = "--out") -> None:
  """Checks up front that ``path`` can become an output file: the right suffix, not a folder, its folder writable."""
  path = os.fspath(path)
  if suffix and not path.endswith(suffix):
    raise ValueError(f"{flag} {path} must end in {suffix}")
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path} is a directory, not a {suffix or 'file'}")
  check_output_dir(os.path.dirname(os.path.abspath(path)), flag)


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> None:
  """Checks up front that ``path`` is, or can be created as, a writable folder (no file in the way)."""
  path = os.path.abspath(os.fspath(path))
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ValueError(f"{flag} {path} is a file, not a directory")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ValueError(f"cannot create {flag} {path}: {parent} is a file")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"cannot write {flag} {path}: {parent} is not writable")
