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
