"""The training workdir's identity: ``train()`` holds a ``Claim`` on its workdir for its whole run,
tying the workdir's single writer (``workdir_lock.py``: ``WORKDIR/lock.json``) to the config its
checkpoints were trained under (``recorded_config.py``: ``WORKDIR/config.json`` and the changes a
resume may make). Every name in the workdir: ``mert_jax/workdir_files.py``.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import jax
import numpy as np
from etils import epath

from mert_jax import workdir_files
from mert_jax.checkpointing import workdir_steps
from mert_jax.train import fail_fast
from mert_jax.train.recorded_config import Change, check_config, record_changes
from mert_jax.train.run_config import RunConfig
from mert_jax.train.workdir_lock import HEARTBEAT_S, TOKEN_BYTES, WorkdirLock

# --------------------------------------------------------------------------- the recorded config


# --------------------------------------------------------------------------- the lock


# --------------------------------------------------------------------------- the claim


class Claim:
  """One ``train()``'s hold on its workdir: the lock, the config check, the deferred record of
  allowed changes. A context manager; ``heartbeat(step)`` at each log step."""

  def __init__(self, workdir: str, config: RunConfig):
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
    step = self.config.restore_step
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
