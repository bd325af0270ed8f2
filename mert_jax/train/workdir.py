"""The training workdir's identity: the config its checkpoints were trained under, and its single
writer. ``train()`` holds a ``Claim`` on the workdir for its whole run.

Recorded config (``WORKDIR/config.json``)
  A fresh run (no complete checkpoint yet) writes its config there before anything else. A fresh
  run may rewrite it with another config (nothing was trained under the old one yet: a run that
  failed before its first checkpoint), and says so in one line. Every later invocation is compared
  with it, field by field (dotted names); each difference is of one kind:

  ==========  ===========================================================  ======================
  kind        fields (the sets RUN, PLACEMENT and LOOP below name each)      on resume
  ==========  ===========================================================  ======================
  run         what the checkpoints were trained under: variant, seed,      refused, unless named
              model.* shapes and numerics, objective.*, optimizer.*,       in
              batch and crop, the data stream; and any field the recorded  allow_config_change
              config lacks or has in excess (code changed since)
  placement   where and how the same computation runs: mesh, rules,        allowed
              num_devices, attention and positional-conv kernels, remat
  loop        how long and what the run does beside training: steps,       allowed
              logging, evaluation, health checks, in-training probes,
              checkpoint cadence, init_from, restore_step, the job's
              timeouts, profiling
  ==========  ===========================================================  ======================

  Every field of the recipe is named in exactly one set (tests/train/test_workdir.py fails on a
  field that is in none); a field the sets do not know (a recorded config from other code) is of
  kind ``run``, so it is protected. Note that total_steps also ends the learning-rate decay
  (linear to 0 at total_steps): extending a run changes the rate of every later step; it is a loop
  setting because that is what extending means.

  A refused change stops the run with one line (``ConfigChangeRefused``) listing each field with
  both values; ``--config.allow_config_change=FIELD1,FIELD2`` (exact dotted names) lets those
  through. Allowed changes are printed in one line and recorded, with the step they take effect at
  (restore_step, else the newest checkpoint found), in ``WORKDIR/config_changes.jsonl``;
  ``config.json`` then becomes the new config. Both are written once the newest checkpoint is one
  this run saved (orbax's save timestamp; looked at by a heartbeat, at most once a minute, and when
  ``train`` ends), so ``config.json`` describes the latest checkpoint: a run that fails before its
  first checkpoint (say, an allowed change the checkpoint cannot be restored into) leaves both
  files as they were, and ``extract`` / ``convert`` keep rebuilding the model that was trained. A
  run killed outright after its first checkpoint leaves the record to the next run, which sees the
  same changes (and needs the same permission). Only process 0 writes.

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
import dataclasses
import datetime
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

import fsspec
import jax
import ml_collections
import numpy as np
from etils import epath
from fsspec.implementations.local import LocalFileSystem

from mert_jax import workdir_files
from mert_jax.checkpointing import workdir_steps
from mert_jax.files.atomic import atomic_write_text
from mert_jax.train import fail_fast

TOKEN_BYTES = 16  # a lock's token: uuid4's 128 bits, as hex in the file
HEARTBEAT_S = 60.0  # the holder refreshes its heartbeat at most this often
STALE_AFTER_S = 30 * 60.0  # another host's lock whose heartbeat is older is taken over
UNREADABLE_STALE_S = 10.0  # an unparsable lock older than this was left by a killed writer

# Fields by kind (the module table). A field in none of them is of kind "run".
RUN = frozenset(
  """variant seed batch_size crop_samples
  data.dir data.groups data.shuffle_window data.train_shards data.default_minutes
  model.activation_dropout model.attention_dropout model.attention_relax model.codebook_size
  model.conv_bias model.conv_layers model.cqt_bins model.dropout model.dropout_input model.dtype
  model.extractor_mode model.feature_grad_mult model.ffn_size model.final_dim model.hidden_size
  model.layer_norm_eps model.layer_norm_first model.layerdrop model.num_codebooks model.num_heads
  model.num_layers model.num_special_labels model.pos_conv_groups model.pos_conv_kernel
  model.sample_rate
  objective.bestrq_dim objective.bestrq_input objective.bestrq_mels objective.bestrq_n_fft
  objective.bestrq_norm objective.bestrq_seed objective.bestrq_stack objective.codebook_weights
  objective.cqt_bins_per_octave objective.cqt_fmin objective.cqt_method objective.cqt_target
  objective.cqt_unmasked_weight objective.cqt_weight objective.feature_pen_weight
  objective.logit_temp objective.mask_length objective.mask_prob objective.min_masks
  objective.mixup_crop_fraction objective.mixup_max_len objective.mixup_max_segments
  objective.mixup_min_len objective.mixup_prob objective.mixup_volume objective.target_stats
  objective.targets
  optimizer.b1 optimizer.b2 optimizer.clip_norm optimizer.eps optimizer.grad_accum_steps
  optimizer.lr optimizer.warmup_steps optimizer.weight_decay optimizer.weight_decay_on""".split()
)
PLACEMENT = frozenset(
  """mesh rules num_devices
  model.attention_impl model.attention_block model.attention_blockwise_from model.pos_conv_impl
  model.remat model.remat_policy""".split()
)
LOOP = frozenset(
  """total_steps log_every eval_every eval_batches eval_picture_clips checkpoint_every keep_last
  keep_every preemption_check_every max_nonfinite_steps init_from init_from_step restore_step
  data.on_state_mismatch allow_config_change profile_steps
  health_clips health_min_rank health_prior_patience
  probe_every probe_tasks probe_set probe_max_epochs probe_lrs probe_batch probe_cache_dir
  distributed.peer_timeout_s distributed.init_timeout_s distributed.shutdown_timeout_s
  distributed.barrier_timeout_s""".split()
)
ABSENT = "<absent>"


class ConfigChangeRefused(ValueError):
  """This run's config changes fields that shape the model or the data stream of a workdir that
  already holds checkpoints."""


class WorkdirLocked(RuntimeError):
  """Another trainer holds the workdir."""


class WorkdirLockLost(RuntimeError):
  """This trainer's lock was taken over (or replaced) by another trainer while it ran."""

  exit_status = fail_fast.EXIT_LOCK_LOST  # a launcher must not restart into a workdir held


# --------------------------------------------------------------------------- the recorded config


@dataclasses.dataclass(frozen=True)
class Change:
  """One differing field: its dotted name, the recorded and the new value (``ABSENT`` when one
  side lacks it) and its kind (``classify``)."""

  field: str
  old: Any
  new: Any
  kind: str

  def __str__(self) -> str:
    show = lambda v: v if v is ABSENT else repr(v)
    return f"{self.field} {show(self.old)} -> {show(self.new)}"


def classify(field: str) -> str:
  """The kind of a dotted field name: run, placement or loop (see the module table); a field in
  none of the sets is of kind run."""
  if field in PLACEMENT:
    return "placement"
  if field in LOOP:
    return "loop"
  return "run"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _same(a: Any, b: Any) -> bool:
  """Equal as JSON values: 3 == 3.0, but True != 1."""
  numbers = (int, float)
  if isinstance(a, numbers) and isinstance(b, numbers):
    return isinstance(a, bool) == isinstance(b, bool) and a == b
  return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
  """The fields (dotted, sorted) whose values differ between two configs as JSON dicts."""
  a, b = _flatten(old), _flatten(new)
  return [
    Change(f, a.get(f, ABSENT), b.get(f, ABSENT), classify(f))
    for f in sorted(a.keys() | b.keys())
    if f not in a or f not in b or not _same(a[f], b[f])
  ]


def allowed_fields(config: ml_collections.ConfigDict) -> set[str]:
  """The dotted names in ``config.allow_config_change`` (comma-separated)."""
  text = config.get("allow_config_change") or ""
  return {f.strip() for f in text.split(",") if f.strip()}


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``config.json`` holds it."""
  return json.loads(config.to_json_best_effort())


def _config_path(workdir: str) -> epath.Path:
  return epath.Path(workdir) / workdir_files.CONFIG


def read_config(workdir: str) -> dict[str, Any] | None:
  """The recorded config, or None when the workdir has none."""
  path = _config_path(workdir)
  if not path.exists():
    return None
  try:
    recorded = json.loads(path.read_text())
  except ValueError as e:
    raise ConfigChangeRefused(
      f"{path} is not valid JSON ({e}): cannot check this run's config against the checkpoints; "
      f"restore the file, or delete it to record this run's config unchecked"
    ) from None
  if not isinstance(recorded, dict):
    raise ConfigChangeRefused(f"{path} does not hold a config (a JSON object)")
  return recorded


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  atomic_write_text(_config_path(workdir), config.to_json_best_effort(indent=2))


def check_config(
  workdir: str, config: ml_collections.ConfigDict, *, resume_step: int | None
) -> list[Change]:
  """Compares ``config`` with the workdir's recorded config; returns the allowed changes, to be
  recorded (``record_changes``) once this run has written a checkpoint.

  ``resume_step`` None (no checkpoint yet): (re)writes ``config.json`` and returns []. Otherwise
  a ``run`` change not named in ``allow_config_change`` raises ``ConfigChangeRefused`` (one line,
  every such field with both values); nothing is written. Call on process 0 only."""
  recorded = read_config(workdir)
  path = _config_path(workdir)
  if resume_step is None:
    if recorded is not None and (changes := config_diff(recorded, as_json(config))):
      print(
        f"{path}: no checkpoint yet, so nothing was trained under the recorded config; this "
        f"run's replaces it ({_summary(changes)})",
        flush=True,
      )
    write_config(workdir, config)
    return []
  if recorded is None:
    print(
      f"{path} is missing beside checkpoint {resume_step}: recording this run's config "
      f"(it cannot be checked against the one the checkpoints were trained under)",
      flush=True,
    )
    write_config(workdir, config)
    return []
  changes = config_diff(recorded, as_json(config))
  allow = allowed_fields(config)
  refused = [c for c in changes if c.kind == "run" and c.field not in allow]
  if refused:
    names = ",".join(c.field for c in refused)
    raise ConfigChangeRefused(
      f"{workdir} holds checkpoints up to step {resume_step} trained under another config "
      f"({path}): {'; '.join(map(str, refused))}. These shape the model or the data stream; use "
      f"a new --workdir, drop the overrides, or pass --config.allow_config_change={names} to "
      f"change them deliberately (recorded in {workdir_files.CONFIG_CHANGES})"
    )
  if changes:
    print(
      f"{workdir}: config changed at step {resume_step} ({_summary(changes)}); recorded in "
      f"{workdir_files.CONFIG_CHANGES} and {workdir_files.CONFIG} with this run's first checkpoint",
      flush=True,
    )
  return changes


def _summary(changes: list[Change]) -> str:
  return "; ".join(str(c) if c.kind == "run" else f"{c} [{c.kind}]" for c in changes)


def record_changes(
  workdir: str, config: ml_collections.ConfigDict, changes: list[Change], *, step: int
) -> None:
  """Appends one line {"step", "time", "changes": [{field, old, new, kind}]} to
  ``config_changes.jsonl``, then makes ``config`` the recorded config. ``kind`` is "allowed" for a
  ``run`` field let through by allow_config_change."""
  path = epath.Path(workdir) / workdir_files.CONFIG_CHANGES
  entry = {
    "step": step,
    "time": _utc(time.time()),
    "changes": [
      {
        "field": c.field,
        "old": None if c.old is ABSENT else c.old,
        "new": None if c.new is ABSENT else c.new,
        "kind": "allowed" if c.kind == "run" else c.kind,
      }
      for c in changes
    ],
  }
  before = path.read_text() if path.exists() else ""
  atomic_write_text(path, before + json.dumps(entry) + "\n")
  write_config(workdir, config)


def _utc(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- the lock


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
    "since": _utc(now),
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


# --------------------------------------------------------------------------- the claim


class Claim:
  """One ``train()``'s hold on its workdir: the lock, the config check, the deferred record of
  allowed changes. A context manager; ``heartbeat(step)`` at each log step."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    self.workdir, self.config = workdir, config
    self.lock = WorkdirLock(workdir)
    self.resume_step: int | None = None
    self.pending: list[Change] = []
    self._started = self._checked = 0.0

  def __enter__(self) -> Claim:
    error: BaseException | None = None
    if jax.process_index() == 0:
      try:
        self.lock.acquire()
        self.resume_step = workdir_steps.latest_step(self.workdir)  # under the lock
        self.pending = check_config(self.workdir, self.config, resume_step=self.resume_step)
      except BaseException as e:  # pylint: disable=broad-except
        error = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      # Process 0's verdict and the lock's token (16 bytes; zeros after a refusal), so that every
      # process stops together, or checks the lock itself before each of its writes.
      token = np.zeros(TOKEN_BYTES, np.uint8)
      if error is None and jax.process_index() == 0:
        token = np.frombuffer(bytes.fromhex(self.lock.record["token"]), np.uint8)
      token = np.asarray(multihost_utils.broadcast_one_to_all(token), np.uint8)
      if error is None and not token.any():
        error = RuntimeError(f"process 0 refused the workdir {self.workdir} (see its error)")
      elif error is None and jax.process_index() != 0:
        self.lock.follow(token.tobytes().hex())
    if error is not None:
      self.lock.release()
      raise error
    self._started = self._checked = time.time()
    fail_fast.LEAVE_HOOKS.append(self.lock.release)
    return self

  def check(self, step: int | None, before: str) -> None:
    """Before a write (every process, before a checkpoint save; process 0 before its metrics):
    ``WorkdirLockLost`` unless this run still holds the workdir. One read of the lock file."""
    self.lock.verify(step, before)

  def heartbeat(self, step: int | None = None) -> None:
    """At each log step (process 0), at most every ``HEARTBEAT_S``: checks the lock
    (``WorkdirLockLost`` if taken over) and refreshes its heartbeat; records the pending config
    changes once a checkpoint of this run exists."""
    self.lock.heartbeat(step)
    if self.pending and time.time() - self._checked >= HEARTBEAT_S:
      self._checked = time.time()
      self._record_if_checkpointed()

  def _start_step(self) -> int:
    """The step the changes take effect at: restore_step, else the newest checkpoint found (a
    resume that falls back past unverifiable checkpoints starts earlier; not known here)."""
    step = self.config.get("restore_step")
    return int(self.resume_step if step is None else step)

  def _checkpointed(self) -> bool:
    """Whether the workdir's newest complete checkpoint was written by this run: orbax records
    when each save started (``_CHECKPOINT_METADATA``); without that record, whether it is newer
    than the start step. (Checkpoints a resume sets aside change the newest step without a save.)"""
    latest = workdir_steps.latest_step(self.workdir)
    if latest is None:
      return False
    meta = (
      epath.Path(self.workdir)
      / workdir_files.CHECKPOINTS
      / str(latest)
      / workdir_files.ORBAX_STEP_METADATA
    )
    try:
      return json.loads(meta.read_text())["init_timestamp_nsecs"] / 1e9 >= self._started
    except (OSError, ValueError, KeyError, TypeError):
      return latest > self._start_step()

  def _record_if_checkpointed(self) -> None:
    if self.pending and self._checkpointed():
      self.lock.verify(None, "recording its config changes in config.json")
      record_changes(self.workdir, self.config, self.pending, step=self._start_step())
      self.pending = []

  def __exit__(self, *exc: Any) -> None:
    with contextlib.suppress(ValueError):
      fail_fast.LEAVE_HOOKS.remove(self.lock.release)
    try:
      if self.lock.held:
        self._record_if_checkpointed()
    finally:
      self.lock.release()
