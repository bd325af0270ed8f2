"""Write to a temporary name, rename when complete: a crash mid-write never leaves a file that
looks whole.

Every finished artefact (shards, manifests, caches, teachers, reports) is written under
``<path>.tmp`` in the target's folder and renamed onto ``<path>`` only when the write completed; on
an exception the temporary is removed and the target is left as it was. A rename within one folder
is atomic on POSIX file systems, so a reader sees either no file (or the old one) or the whole new
one, and a restarted run can trust every file it finds. Local files are fsynced before the rename,
so the guarantee also holds across a power loss. The temporary name is fixed: a leftover of a
killed process is overwritten by the next attempt. Remote paths (``gs://``, ``memory://``) go
through fsspec; object stores rename by copying, and an upload is only visible once complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import IO, Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> str:
  """The name ``path`` is written under until it is complete."""
  return os.fspath(path) + TMP_SUFFIX


@contextlib.contextmanager
def _open_local(path: str, mode: str) -> Iterator[IO[Any]]:
  tmp = temp_path(path)
  try:
    with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


@contextlib.contextmanager
def _open_fsspec(fs: fsspec.AbstractFileSystem, path: str, mode: str) -> Iterator[IO[Any]]:
  tmp = temp_path(path)
  try:
    with fs.open(tmp, mode) as f:
      yield f
    fs.mv(tmp, path)
  except BaseException:
    if fs.exists(tmp):
      fs.rm(tmp)
    raise


def atomic_open(
  path: str | os.PathLike, mode: str = "wb"
) -> contextlib.AbstractContextManager[IO[Any]]:
  """Context manager: a file open for writing (``"wb"`` or ``"w"``, UTF-8) that becomes ``path``
  when the block completes; on an exception the target is untouched and no temporary remains.
  The folder must exist."""
  if mode not in ("wb", "w"):
    raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', got {mode!r}")
  fs, fs_path = fsspec.core.url_to_fs(os.fspath(path))
  if isinstance(fs, LocalFileSystem):
    return _open_local(fs_path, mode)
  return _open_fsspec(fs, fs_path, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Write ``data`` as the whole content of ``path``, atomically."""
  with atomic_open(path, "wb") as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Write ``text`` (UTF-8) as the whole content of ``path``, atomically."""
  with atomic_open(path, "w") as f:
    f.write(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
  """A fresh local folder ``<path>.tmp`` to fill; renamed to ``path`` when the block completes,
  removed on an exception. ``path`` must not exist or be an empty folder."""
  path = os.fspath(path)
  tmp = temp_path(path)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
