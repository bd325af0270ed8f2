"""One trainer per workdir: the lock, its staleness rules and its takeover.

Lock (``WORKDIR/lock.json``): one trainer per workdir
  Process 0 creates the file atomically (``O_CREAT | O_EXCL``) holding its host, pid, start time,
  a heartbeat time and a random token. Another trainer finding it is refused with one line naming
  the holder (``WorkdirLocked``), unless the lock is stale:

  * same host: the holder's pid is not running (or is a zombie, or is a different process that
    reused the pid: its start time differs), or the host has rebooted since (boot id differs);
  * another host: its heartbeat is older than ``STALE_AFTER_S`` (30 min). The holder refreshes the
    heartbeat from ``Claim.heartbeat()`` (each log step) at most every ``HEARTBEAT_S`` (60 s), so
    a live trainer whose log steps (or first compile) take longer than 30 min can be taken over;
    the clocks of the two hosts are assumed to agree to well within that bound;
  * a lock file that cannot be parsed and is older than 10 s (a trainer killed while writing it).

  A stale lock is taken over safely: renamed aside (only one contender's rename succeeds), checked
  to be the very file judged stale, then created anew with ``O_EXCL``; the takeover is printed.
  The lock is removed when ``train`` returns or raises, or when the process ends for a failure
  (fail_fast.py's leave hooks); a killed trainer leaves it behind for the rules above.

  No write without the lock: with several processes, process 0's verdict at the start and the
  lock's token are broadcast, and every process reads the lock before each checkpoint save
  (``Claim.check``); process 0 also before each metrics row, before recording config changes, and
  at each heartbeat. A trainer whose lock now names another holder stops with
  ``WorkdirLockLost`` (exit status 5) before that write, and its failure stops the other processes
  of its run (fail_fast.py). Only a write that had passed its check before the takeover (one
  step's metrics or an asynchronous save already started) can still land.

  In a bucket (``gs://``) the lock uses Cloud Storage's object preconditions (``_ObjectFiles``):
  the create is an upload with ``ifGenerationMatch=0``, a heartbeat's replace and a removal name
  the generation read, so of two trainers racing for the lock exactly one wins. Other object
  stores are refused as workdirs of a trainer. Hosts are told apart by ``socket.gethostname()``;
  two containers sharing a host name but not a pid namespace defeat the same-host rule (use
  distinct host names).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

import fsspec
from etils import epath
from fsspec.implementations.local import LocalFileSystem

from mert_jax import workdir_files
from mert_jax.files.atomic import atomic_write_text
from mert_jax.terminal.progress import utc_text
from mert_jax.train import fail_fast

TOKEN_BYTES = 16  # a lock's token: uuid4's 128 bits, as hex in the file


HEARTBEAT_S = 60.0  # the holder refreshes its heartbeat at most this often


STALE_AFTER_S = 30 * 60.0  # another host's lock whose heartbeat is older is taken over


UNREADABLE_STALE_S = 10.0  # an unparsable lock older than this was left by a killed writer


class WorkdirLocked(RuntimeError):
  """Another trainer holds the workdir."""


class WorkdirLockLost(RuntimeError):
  """This trainer's lock was taken over (or replaced) by another trainer while it ran."""

  exit_status = fail_fast.EXIT_LOCK_LOST  # a launcher must not restart into a workdir held


def _boot_id() -> str | None:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
  """(state, start time in clock ticks since boot) of a Linux process, or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])
  except (OSError, IndexError, ValueError):
    return None


def lock_record(pid: int | None = None, *, now: float | None = None) -> dict[str, Any]:
  """What a lock file holds for process ``pid`` (default: this one) of this host."""
  pid = os.getpid() if pid is None else pid
  now = time.time() if now is None else now
  stat = _proc_stat(pid)
  return {
    "host": socket.gethostname(),
    "pid": pid,
    "since": utc_text(now),
    "since_unix": now,
    "heartbeat_unix": now,
    "step": None,
    "boot_id": _boot_id(),
    "pid_start": stat[1] if stat else None,
    "token": uuid.uuid4().hex,
    "command": " ".join(sys.argv)[:1000],
  }


def stale_reason(holder: dict[str, Any], *, now: float | None = None) -> str | None:
  """Why the lock ``holder`` no longer guards a running trainer, or None while it may."""
  now = time.time() if now is None else now
  if holder.get("host") != socket.gethostname():
    age = now - float(holder.get("heartbeat_unix", 0))
    if age > STALE_AFTER_S:
      return f"its heartbeat is {age / 60:.0f} min old (stale after {STALE_AFTER_S / 60:.0f} min)"
    return None
  boot = _boot_id()
  if holder.get("boot_id") and boot and holder["boot_id"] != boot:
    return "this host has restarted since"
  pid = int(holder.get("pid", -1))
  if pid <= 0:
    return "it names no process"
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return f"process {pid} is no longer running"
  except PermissionError:
    pass  # exists, another user's
  stat = _proc_stat(pid)
  if stat is not None:
    if stat[0] == "Z":
      return f"process {pid} has exited"
    if holder.get("pid_start") is not None and stat[1] != holder["pid_start"]:
      return f"process {pid} has exited (the pid now belongs to another process)"
  return None


def _parse(text: str | None) -> dict[str, Any] | None:
  """A lock file's record, or None when absent or unparsable."""
  try:
    holder = json.loads(text) if text is not None else None
  except ValueError:
    return None
  return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any]) -> str:
  return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


class _Files:
  """The few file operations the lock needs: locally with POSIX atomicity (``O_EXCL`` create,
  rename-aside removal); ``_ObjectFiles`` does them with object preconditions in a bucket."""

  def __init__(self, path: epath.Path):
    self.path = path
    self.fs_path = os.fspath(path)

  def read(self) -> str | None:
    try:
      with open(self.fs_path, encoding="utf-8") as f:
        return f.read()
    except FileNotFoundError:
      return None

  def age(self) -> float:
    """Seconds since the file was last modified (0 when unknown)."""
    try:
      return time.time() - os.stat(self.fs_path).st_mtime
    except OSError:
      return 0.0

  def create(self, text: str) -> bool:
    """Creates the file holding ``text`` unless it exists; True when this call created it."""
    try:
      fd = os.open(self.fs_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    try:
      os.write(fd, text.encode("utf-8"))
      os.fsync(fd)
    finally:
      os.close(fd)
    return True

  def replace(self, text: str, expected: str) -> bool:
    """Replaces the file's content ``expected`` by ``text``; False (nothing written) when the file
    holds something else."""
    if self.read() != expected:
      return False
    atomic_write_text(self.fs_path, text)
    return True

  def remove_if(self, expected: str) -> bool:
    """Removes the file if it still holds ``expected``; True when this call removed it. The file
    is first renamed aside, so of two contenders only one removes it, and a file that changed in
    the meantime is put back."""
    aside = f"{self.fs_path}.{uuid.uuid4().hex}.stale"
    try:
      os.rename(self.fs_path, aside)
    except FileNotFoundError:
      return False
    try:
      with open(aside, encoding="utf-8") as f:
        moved = f.read()
      if moved != expected:  # a fresh lock was created after our read: put it back
        with contextlib.suppress(FileExistsError):
          os.link(aside, self.fs_path)
        return False
      return True
    finally:
      os.remove(aside)


class _ObjectFiles(_Files):
  """The lock's operations on ``gs://`` with Cloud Storage's object preconditions, through gcsfs's
  request method (its file API has create-only uploads, but no conditional replace or delete): a
  create is an upload with ``ifGenerationMatch=0``; a replace or delete names the generation that
  was read, so of two trainers racing for the lock exactly one succeeds (GCS answers the other
  412, which gcsfs raises as FileExistsError)."""

  def __init__(self, path: epath.Path):
    super().__init__(path)
    self.fs, fs_path = fsspec.core.url_to_fs(self.fs_path)
    self.bucket, self.key = fs_path.split("/", 1)

  def read_generation(self) -> tuple[str | None, str | None]:
    """(content, generation), or (None, None) when the object does not exist."""
    try:
      headers, body = self.fs.call("GET", "b/{}/o/{}", self.bucket, self.key, alt="media")
    except FileNotFoundError:
      return None, None
    return body.decode("utf-8"), headers.get("x-goog-generation")

  def read(self) -> str | None:
    return self.read_generation()[0]

  def age(self) -> float:
    try:
      return time.time() - self.fs.modified(self.fs_path).timestamp()
    except (OSError, NotImplementedError, AttributeError):
      return 0.0

  def _upload(self, text: str, generation: str) -> bool:
    """Uploads ``text`` if the object's generation is ``generation`` ("0": it does not exist)."""
    # fs._location: the endpoint gcsfs's own uploads use (the emulator's when one is set).
    url = f"{self.fs._location}/upload/storage/v1/b/{self.bucket}/o"  # pylint: disable=protected-access
    try:
      self.fs.call(
        "POST",
        url,
        uploadType="media",
        name=self.key,
        ifGenerationMatch=generation,
        data=text.encode("utf-8"),
        headers={"Content-Type": "application/octet-stream"},
        json_out=True,
      )
    except FileExistsError:  # 412: the precondition failed
      return False
    finally:
      self.fs.invalidate_cache(self.fs_path)
    return True

  def create(self, text: str) -> bool:
    if self._upload(text, "0"):
      return True
    return self.read() == text  # a retried upload whose first attempt had created it

  def replace(self, text: str, expected: str) -> bool:
    current, generation = self.read_generation()
    return current == expected and generation is not None and self._upload(text, generation)

  def remove_if(self, expected: str) -> bool:
    current, generation = self.read_generation()
    if current != expected or generation is None:
      return False
    try:
      self.fs.call("DELETE", "b/{}/o/{}", self.bucket, self.key, ifGenerationMatch=generation)
    except (FileExistsError, FileNotFoundError):  # changed or removed since the read
      return False
    finally:
      self.fs.invalidate_cache(self.fs_path)
    return True


def _lock_files(path: epath.Path) -> _Files:
  """The lock file's operations for where it lies: local, or a ``gs://`` object."""
  fs, _ = fsspec.core.url_to_fs(os.fspath(path))
  if isinstance(fs, LocalFileSystem):
    return _Files(path)
  if "gs" not in fs.protocol and "gcs" not in fs.protocol:
    raise WorkdirLocked(
      f"{path}: the workdir lock needs a local folder or gs:// (conditional "
      f"writes); {fs.protocol} has none"
    )
  return _ObjectFiles(path)


class WorkdirLock:
  """``WORKDIR/lock.json``: acquire (or refuse / take over), heartbeat, release; see the module
  docstring for the rules."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = epath.Path(workdir) / workdir_files.LOCK
    self.files = _lock_files(self.path)
    self.record: dict[str, Any] | None = None
    self.owner = True  # this process created the lock file (process 0); see follow()
    self._text = ""
    self._refreshed = 0.0

  @property
  def held(self) -> bool:
    return self.record is not None

  def acquire(self) -> None:
    record = lock_record()
    text = json.dumps(record, indent=2)
    taken_over = None
    for _ in range(5):
      if self.files.create(text):
        self.record, self._text, self._refreshed = record, text, time.time()
        if taken_over:
          print(f"{self.workdir}: took over the stale lock of {taken_over}", flush=True)
        return
      current = self.files.read()
      if current is None:
        continue  # released in the meantime
      holder = _parse(current)
      if holder is not None:
        reason = stale_reason(holder)
      elif self.files.age() < UNREADABLE_STALE_S:
        raise WorkdirLocked(
          f"{self.path} is being written by another trainer starting in {self.workdir}; one "
          f"trainer per workdir"
        )
      else:
        holder, reason = {}, "the lock file was unreadable (its writer was killed)"
      if reason is None:
        raise WorkdirLocked(self._refusal(holder))
      if self.files.remove_if(current):
        taken_over = f"{_describe(holder)}: {reason}" if holder else reason
    raise WorkdirLocked(
      f"{self.path}: could not take the lock (other trainers keep starting in {self.workdir})"
    )

  def _refusal(self, holder: dict[str, Any]) -> str:
    where = f"{self.workdir} is in use by another trainer ({_describe(holder)}; lock {self.path})"
    if holder.get("host") != socket.gethostname():
      age = time.time() - float(holder.get("heartbeat_unix", 0))
      return (
        f"{where}, heartbeat {age / 60:.0f} min ago: wait for it to finish or stop it; the lock "
        f"is taken over once its heartbeat is {STALE_AFTER_S / 60:.0f} min old, or delete "
        f"{self.path} if that trainer is certainly gone"
      )
    return (
      f"{where}: wait for it to finish or stop it (kill {holder.get('pid')}); one trainer per "
      f"workdir"
    )

  def follow(self, token: str) -> None:
    """On a process other than the one that took the lock: the run's token, so that this process
    too can check the lock before it writes (it never refreshes or removes the file)."""
    self.record, self.owner = {"token": token}, False

  def verify(self, step: int | None = None, before: str = "writing more") -> None:
    """Raises ``WorkdirLockLost`` unless the lock file still holds this run's token (one read).
    The owner re-creates a lock file that was deleted."""
    if not self.held:
      return
    current = self.files.read()
    if current is None:
      if self.owner and self.files.create(self._text):
        print(f"{self.path} had been removed while this trainer ran; re-created it", flush=True)
      return
    holder = _parse(current)
    if holder is None or holder.get("token") != self.record["token"]:
      self.record = None
      who = _describe(holder) if holder else "an unreadable lock"
      raise WorkdirLockLost(
        f"{self.path} now names another trainer ({who}): it took over this workdir (this "
        f"trainer's heartbeat was older than the stale bound, or the lock was deleted); stopping "
        f"at step {step} before {before}"
      )

  def heartbeat(self, step: int | None = None, *, force: bool = False) -> None:
    """The owner, at most every ``HEARTBEAT_S`` unless ``force``: checks the lock is still this
    trainer's (``WorkdirLockLost`` when another trainer holds it now), then refreshes its
    heartbeat. (Each write is checked by ``verify`` on its own: the metrics rows through the
    writer's guard, the checkpoints through ``Claim.check``.)"""
    now = time.time()
    if not self.held or not self.owner or (not force and now - self._refreshed < HEARTBEAT_S):
      return
    self.verify(step, "refreshing its heartbeat")
    self._refreshed = now
    self.record = {**self.record, "heartbeat_unix": now, "step": step}
    text = json.dumps(self.record, indent=2)
    if not self.files.replace(text, expected=self._text):
      self.record = None
      raise WorkdirLockLost(
        f"{self.path} changed while this trainer refreshed it: another trainer took over this "
        f"workdir; stopping at step {step} before writing more"
      )
    self._text = text

  def release(self) -> None:
    """Removes the lock if it is still this trainer's (the owner's job)."""
    if not self.held or not self.owner:
      self.record = None
      return
    self.record = None
    if not self.files.remove_if(self._text):
      print(f"{self.path} names another trainer now; left it in place", flush=True)

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.release()
