"""Write to a temporary name, rename when complete: a crash mid-write never leaves a file that
looks whole.

Every finished artefact (shards, manifests, caches, teachers, reports) is written under
``<path>.tmp`` in the target's folder and renamed onto ``<path>`` only when the write completed; on
an exception the temporary is removed and the target is left as it was. A rename within one folder
is atomic on POSIX file systems, so a reader sees either no file (or the old one) or the whole new
one, and a restarted run can trust every file it finds. Local files are fsynced before the rename,
so the guarantee also holds across a power loss. The temporary name is fixed: a leftover of a
killed process is overwritten by the next attempt.

Remote paths (``gs://``, ``memory://``; ``storage.py``) have no rename, but an object store makes
an upload visible only once it completed: the file is written to a local temporary file and
uploaded in one piece when the block completes (nothing is uploaded on an exception), so a reader
again sees the old object or the whole new one. A folder (``atomic_dir``) is uploaded file by file,
the file that marks it complete last.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from typing import IO, Any, Iterable, Iterator

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from mert_jax.files import storage

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
def _open_remote(fs: fsspec.AbstractFileSystem, path: str, mode: str) -> Iterator[IO[Any]]:
  fd, tmp = tempfile.mkstemp(prefix="mert-upload-")
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
    fs.put_file(tmp, path)
    fs.invalidate_cache(posixpath.dirname(path))
  finally:
    os.remove(tmp)


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
  return _open_remote(fs, fs_path, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Write ``data`` as the whole content of ``path``, atomically."""
  with atomic_open(path, "wb") as f:
    f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Write ``text`` (UTF-8) as the whole content of ``path``, atomically."""
  with atomic_open(path, "w") as f:
    f.write(text)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
  """One JSON object per line (``skipped.jsonl`` and the like), written atomically."""
  atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  """``np.save`` through a temporary file, so a crash never leaves a truncated .npy."""
  with atomic_open(path, "wb") as f:
    np.save(f, array)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, last: str | None = None) -> Iterator[str]:
  """A fresh local folder ``<path>.tmp`` to fill; renamed to ``path`` when the block completes,
  removed on an exception. A local ``path`` must not exist or be an empty folder.

  A remote ``path`` (no folder rename there) is filled in a local temporary folder whose files are
  uploaded when the block completes, ``last`` (the file whose presence says the folder is whole: a
  model's config.json, a teacher's teacher.json) after all the others. A remote folder already
  there is replaced: its ``last`` is deleted first, so that it stops looking whole, and its files
  the new folder lacks are deleted once the new ``last`` is in place."""
  path = os.fspath(path)
  if storage.is_remote(path):
    with _remote_dir(path, last) as tmp:
      yield tmp
    return
  tmp = temp_path(path)
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


@contextlib.contextmanager
def _remote_dir(path: str, last: str | None) -> Iterator[str]:
  if last is None:
    raise ValueError(f"{path}: a remote folder is uploaded file by file; atomic_dir needs last=")
  with tempfile.TemporaryDirectory(prefix="mert-upload-") as tmp:
    yield tmp
    new = storage.files_under(tmp)
    if last not in new:
      raise ValueError(f"{path}: the folder written holds no {last}")
    old = storage.files_under(path)
    if last in old:
      storage.remove(posixpath.join(path, last))
    for rel in [*(r for r in new if r != last), last]:
      storage.upload_file(os.path.join(tmp, rel), posixpath.join(path, rel))
    for rel in old:
      if rel not in new:
        storage.remove(posixpath.join(path, rel))
