"""Folders that may be local or in a bucket (``gs://BUCKET/PATH``, through fsspec and gcsfs, the
``gcs`` extra): the few folder operations the commands need on both, and the up-front check that a
folder can be written, so a mistyped or read-only bucket is one line before hours of work instead
of a traceback after them.

Object stores have no folders: a "folder" is a prefix, creating one is a no-op, and it exists once
an object lies under it. Each object is written by one upload that becomes visible only when it
completes, which is what the atomic writes (``atomic.py``) build on.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Iterator

import fsspec

# The object a write check uploads (and deletes) in the folder it checks.
PROBE_PREFIX = ".write-probe-"
GCS_EXTRA_HINT = "the gcs extra: pip install -e '.[gcs]'"
# How much of an error message a one-line refusal quotes.
MESSAGE_LIMIT = 200


class StorageError(ValueError):
  """A folder that cannot be used as asked (the message is one line naming it)."""


def is_remote(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a URL of another file system (``gs://``, ``memory://``), not a local
  path."""
  text = os.fspath(path)
  return "://" in text and not text.startswith("file://")


def filesystem(path: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
  """(file system, path within it) of ``path``; a missing gcsfs is a StorageError naming the
  extra to install."""
  try:
    return fsspec.core.url_to_fs(os.fspath(path))
  except ImportError as e:
    raise StorageError(f"{os.fspath(path)}: this file system needs gcsfs ({GCS_EXTRA_HINT})") from e


def _bucket(path: str) -> str:
  return path.split("://", 1)[1].split("/", 1)[0]


def _reason(e: BaseException) -> str:
  """What a failed request says, on one line (gcsfs puts the URL first, the server's words next)."""
  lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
  if len(lines) > 1 and "://" in lines[0]:
    lines = [lines[0].split(":", 1)[0] + ":", *lines[1:]]
  text = " ".join(lines)
  if len(text) > MESSAGE_LIMIT:
    text = text[:MESSAGE_LIMIT].rstrip() + " ..."
  return text or type(e).__name__


def _no_bucket(path: str, flag: str) -> StorageError:
  bucket = _bucket(path)
  scheme = path.split("://", 1)[0]
  hint = f" (create it with: gcloud storage buckets create gs://{bucket})" if scheme == "gs" else ""
  return StorageError(f"{flag}={path}: bucket {bucket!r} does not exist{hint}")


def exists(path: str | os.PathLike) -> bool:
  if not is_remote(path):
    return os.path.exists(path)
  fs, p = filesystem(path)
  return fs.exists(p)


def isdir(path: str | os.PathLike) -> bool:
  if not is_remote(path):
    return os.path.isdir(path)
  fs, p = filesystem(path)
  return fs.isdir(p)


def isfile(path: str | os.PathLike) -> bool:
  if not is_remote(path):
    return os.path.isfile(path)
  fs, p = filesystem(path)
  return fs.isfile(p)


def makedirs(path: str | os.PathLike) -> None:
  """Creates a local folder and its parents; nothing to do in a bucket."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def make_parent(path: str | os.PathLike) -> None:
  """Creates the folder a file ``path`` will be written into."""
  if not is_remote(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def list_names(folder: str | os.PathLike) -> list[str]:
  """The names directly in ``folder`` (files and sub-folders), sorted; [] when it is missing."""
  if not is_remote(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
  fs, p = filesystem(folder)
  try:
    return sorted(posixpath.basename(x.rstrip("/")) for x in fs.ls(p, detail=False, refresh=True))
  except FileNotFoundError:
    return []


def remove(path: str | os.PathLike) -> None:
  """Deletes a file or a whole folder; nothing when it is missing."""
  if not is_remote(path):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    return
  fs, p = filesystem(path)
  with contextlib.suppress(FileNotFoundError):
    fs.rm(p, recursive=True)
  fs.invalidate_cache()


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Renames a folder; in a bucket (no rename there) every file is copied, then every original
  deleted, so an interruption leaves the source whole."""
  if not is_remote(src):
    os.rename(src, dst)
    return
  fs, p = filesystem(src)
  q = filesystem(dst)[1]
  rels = files_under(src)
  for rel in rels:
    fs.cp_file(posixpath.join(p, rel), posixpath.join(q, rel))
  for rel in rels:
    fs.rm_file(posixpath.join(p, rel))
  fs.invalidate_cache()


def files_under(folder: str | os.PathLike) -> list[str]:
  """Every file under ``folder``, recursively (symbolic links to folders not followed), as sorted
  paths relative to it."""
  folder = os.fspath(folder)
  if not is_remote(folder):
    found = []
    for root, dirs, names in os.walk(folder, followlinks=False):
      dirs.sort()
      found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)
  fs, p = filesystem(folder)
  root = p.rstrip("/") + "/"
  return sorted(f[len(root) :] for f in fs.find(p) if f.startswith(root))


def _info_stamp(info: dict) -> str:
  return f"{info.get('size')}:{info.get('generation') or info.get('mtime') or info.get('etag')}"


def stamp(path: str | os.PathLike) -> str:
  """Size and modification time (or generation) of a file: changes when the file does."""
  if not is_remote(path):
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
  fs, p = filesystem(path)
  return _info_stamp(fs.info(p))


def file_stamps(folder: str | os.PathLike) -> dict[str, str]:
  """``files_under(folder)`` with each file's ``stamp`` ("unstatable" for a local file that cannot
  be examined, such as a dangling link); one listing for a bucket."""
  folder = os.fspath(folder)
  if not is_remote(folder):
    stamps = {}
    for rel in files_under(folder):
      try:
        stamps[rel] = stamp(os.path.join(folder, rel))
      except OSError:
        stamps[rel] = "unstatable"
    return stamps
  fs, p = filesystem(folder)
  root = p.rstrip("/") + "/"
  found = fs.find(p, detail=True)
  return {f[len(root) :]: _info_stamp(found[f]) for f in sorted(found) if f.startswith(root)}


@contextlib.contextmanager
def local_copy(path: str | os.PathLike, scratch: str | None = None) -> Iterator[str]:
  """A local path holding the file ``path``: ``path`` itself when local, else a download into
  ``scratch`` (default: the system's temporary folder), deleted afterwards."""
  if not is_remote(path):
    yield os.fspath(path)
    return
  fs, p = filesystem(path)
  suffix = os.path.splitext(p)[1]  # decoders pick the format by the extension
  fd, local = tempfile.mkstemp(suffix=suffix, dir=scratch)
  os.close(fd)
  try:
    fs.get_file(p, local)
    yield local
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(local)


@contextlib.contextmanager
def local_folder(folder: str | os.PathLike) -> Iterator[str]:
  """A local folder holding the files of ``folder``: ``folder`` itself when local, else a
  download into a temporary folder, deleted afterwards."""
  if not is_remote(folder):
    yield os.fspath(folder)
    return
  fs, p = filesystem(folder)
  with tempfile.TemporaryDirectory() as tmp:
    for rel in files_under(folder):
      os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
      fs.get_file(posixpath.join(p, rel), os.path.join(tmp, rel))
    yield tmp


def upload_file(local: str, path: str | os.PathLike) -> None:
  """Uploads the local file ``local`` as ``path`` (an object becomes visible only once its upload
  completed)."""
  fs, p = filesystem(path)
  fs.put_file(local, p)
  fs.invalidate_cache(posixpath.dirname(p))


def check_bucket(path: str | os.PathLike, flag: str) -> None:
  """Refuses (StorageError, one line naming ``flag=path``) a remote ``path`` whose bucket does not
  exist; local paths, and buckets these credentials cannot inspect, pass (their reads say more)."""
  path = os.fspath(path)
  if not is_remote(path):
    return
  fs, _ = filesystem(path)
  try:
    fs.info(_bucket(path))
  except FileNotFoundError as e:
    raise _no_bucket(path, flag) from e
  except Exception:  # noqa: BLE001 - e.g. no permission to read the bucket's metadata
    return


def check_writable_folder(path: str | os.PathLike, flag: str) -> None:
  """Refuses (StorageError, one line naming ``flag=path``) a folder that cannot be written: a
  file, a path under a file, a local folder without write permission, a bucket that does not
  exist or refuses writes. Remote folders are checked by uploading (and deleting) an empty probe
  object."""
  path = os.fspath(path)
  if is_remote(path):
    _check_remote_writable(path, flag)
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise StorageError(f"{flag}={path} is a file, not a folder")
  parent = os.path.abspath(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise StorageError(f"{flag}={path}: {parent} is a file, not a folder")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise StorageError(f"{flag}={path}: {parent} is not writable")


def _check_remote_writable(path: str, flag: str) -> None:
  fs, p = filesystem(path)
  try:
    is_file = fs.isfile(p)
  except Exception:  # noqa: BLE001 - the probe below says why the bucket cannot be used
    is_file = False
  if is_file:
    raise StorageError(f"{flag}={path} is a file, not a folder")
  probe = posixpath.join(p, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
  try:
    fs.pipe_file(probe, b"")
  except FileNotFoundError as e:
    raise _no_bucket(path, flag) from e
  except Exception as e:  # noqa: BLE001 - gcsfs raises OSError for 403, HttpError for others
    raise StorageError(
      f"{flag}={path}: bucket {_bucket(path)!r} refuses writes with these credentials "
      f"({_reason(e)}); choose a bucket you can write to, or get write access "
      f"(roles/storage.objectUser)"
    ) from e
  with contextlib.suppress(Exception):
    fs.rm_file(probe)
  fs.invalidate_cache()
