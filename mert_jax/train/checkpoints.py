"""The trainer's checkpoints (WORKDIR/checkpoints; every name in ``mert_jax/workdir_files.py``):
asynchronous saves with the data position and fingerprints, verified restore with fallback,
rotation. Model checkpoints, and reading any step's parameters back, are
``mert_jax/checkpointing/``.

Each step::

  checkpoints/STEP/state        orbax: the train state (params, opt_state, counters)
  checkpoints/STEP/data_iter    grain: each process's data position
  checkpoints/STEP/meta         {"step", "process_count", "data_groups", "format": 2, "finite",
                                 "fingerprints": {leaf: uint32}, "data_iter_crc32": [per process],
                                 "model": ModelConfig fields}
  checkpoints_set_aside/STEP    checkpoints a resume stepped over (refused, or newer than
                                --config.restore_step); moved, never deleted

orbax writes each step into a temporary directory and renames it when complete, so an
interrupted save never leaves a checkpoint that looks whole; ``latest_step`` lists only finalised
steps.

Verification. A save records in ``meta`` a fingerprint of every leaf of the train state
(checkpointing/fingerprint.py, computed on the devices), whether every float leaf was finite, a
CRC of each process's data position, and the run's ModelConfig. A restore reads the meta, checks
that the data-position file is readable and matches its CRC, that the saved leaves have this run's
shapes, reads the state and recomputes the fingerprints; anything missing, unreadable or different
raises ``CorruptCheckpoint``, one line naming the checkpoint and the leaf or file. The trainer then
resumes from the newest checkpoint that verifies, printing one line that names the ones it
skipped and why, and moves the skipped ones (or, with ``restore_step``, every newer one) to
``checkpoints_set_aside/`` so the run's new checkpoints of those steps cannot collide with them.
``load_model`` (convert, extract, init_from) verifies the parameters the same way.

Rotation (``keep_last``). A checkpoint counts as verified once its asynchronous save has finished
without error: its fingerprints were computed from the very arrays it wrote, and orbax only
renames the temporary directory once every file is written. orbax deletes the old steps of a
rotation only after the new step's save has finished (``CheckpointManager._finalize`` waits for
the commit and stops at its error), so the newest verified checkpoint is never deleted while a
newer one is still unverified; a failed save deletes nothing (tests/train/test_faults.py checks
this). Re-reading every checkpoint after its save would double the checkpoint I/O of a run (the
full state at scale, often from object storage), so corruption that happens on disk after a save
completed is caught at the restore instead, which then falls back to an older checkpoint
(``keep_every`` keeps a sparse history for that).

Failures. A failed asynchronous save (disk full, permissions) is noticed by ``poll`` at the first
step after it failed and raised as ``CheckpointError`` naming the checkpoint and the cause; a
save that fails at once is reported the same way. On these errors the orbax manager is closed,
and the writes still in flight are waited for, before raising; the tracebacks orbax and
tensorstore print about the reads they abandon after a failed read are filtered
(``quiet_failed_reads``), so a damaged checkpoint costs one line, not hundreds.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import json
import os
import threading
import time
import weakref
import zlib
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mert_jax import workdir_files
from mert_jax.checkpointing import fingerprint
from mert_jax.checkpointing.errors import (
  CheckpointError,
  CorruptCheckpoint,
  failed_leaf,
  root_cause,
)
from mert_jax.checkpointing.orbax_logs import quiet_failed_reads
from mert_jax.checkpointing.workdir_steps import (
  compare_fingerprints,
  latest_step,
  local_absolute,
  read_meta,
)
from mert_jax.config import ModelConfig
from mert_jax.files import storage
from mert_jax.terminal.errors import one_line
from mert_jax.train import distributed

# Training workdir.
META_FORMAT = 2  # 1: {"step", "process_count", "data_groups"} only (no verification)


class DataStateMismatch(RuntimeError):
  """The data-iterator state of a checkpoint cannot be restored into this run's data stream."""


# How long ``abandon`` waits for the writes of a failed save that are still running.
ORPHAN_WRITES_TIMEOUT_S = 60.0


def checkpoint_manager(
  workdir: str, *, keep_last: int | None = None, keep_every: int = 0
) -> ocp.CheckpointManager:
  """Async saves under WORKDIR/checkpoints; keeps the last ``keep_last`` plus every multiple of
  ``keep_every`` (0: none)."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep_last,
    keep_period=keep_every or None,
    enable_async_checkpointing=True,
    create=True,
  )
  return ocp.CheckpointManager(local_absolute(workdir) / workdir_files.CHECKPOINTS, options=options)


def _saved_meta(checkpoints_dir: Any, step: int) -> dict[str, Any]:
  try:
    return json.loads(
      (local_absolute(checkpoints_dir) / str(step) / workdir_files.META / "metadata").read_text()
    )
  except (OSError, ValueError):
    return {}


def _data_state_crc(state: Any) -> int:
  """CRC32 of a grain iterator state, independent of how its JSON was formatted."""
  return zlib.crc32(json.dumps(state, sort_keys=True).encode())


@dataclasses.dataclass
class Restored:
  """A checkpoint read back: its step and train state, and what the restore did."""

  step: int
  state: Any
  verified: bool  # False: a checkpoint saved before fingerprints existed
  note: str  # the line printed about skipped or set-aside checkpoints ("" if none)


_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
  """A run that ended on an unexpected exception still lets its last save finish and closes
  orbax's threads before the interpreter shuts down."""
  for ckpts in list(_OPEN):
    ckpts.abandon()


class RunCheckpoints:
  """The checkpoints of one training run (WORKDIR/checkpoints): verified restore with fallback,
  saves that record fingerprints, asynchronous failures raised at the next step (see the module
  docstring)."""

  def __init__(
    self,
    workdir: str,
    *,
    keep_last: int | None,
    keep_every: int = 0,
    model_config: ModelConfig | None = None,
  ):
    self.workdir = local_absolute(workdir)
    self.directory = self.workdir / workdir_files.CHECKPOINTS
    self.mngr = checkpoint_manager(workdir, keep_last=keep_last, keep_every=keep_every)
    self.model_config = model_config
    self._pending: tuple[int, bool] | None = None  # (step, finite) of the save in flight
    self._good: int | None = None  # the newest checkpoint known good (verified, finite)
    self._open = True
    _OPEN.add(self)

  def path(self, step: int) -> epath.Path:
    return self.directory / str(step)

  # ---------------------------------------------------------------------------------- restore

  def restore(
    self, abstract_state: Any, shardings: Any, *, step: int | None = None
  ) -> Restored | None:
    """The newest checkpoint that verifies (or exactly ``step``), its arrays placed with
    ``shardings``; None when the workdir holds no checkpoint. Raises CheckpointError when none
    verifies, when ``step`` is absent or does not verify, or when the saved state does not fit
    ``abstract_state``."""
    steps = sorted(self.mngr.all_steps())
    if step is not None and step not in steps:
      self.abandon()
      raise CheckpointError(
        f"restore_step={step}: {self.directory} holds no complete checkpoint of step {step}; "
        f"available: {', '.join(map(str, steps)) or 'none'}"
      )
    if not steps:
      return None
    skipped: list[tuple[int, str]] = []
    for s in [step] if step is not None else steps[::-1]:
      try:
        state, verified, finite = self._restore_verified(s, abstract_state, shardings)
        break
      except CorruptCheckpoint as e:
        if step is not None:
          self.abandon()
          raise
        skipped.append((s, e.reason))
      except CheckpointError:
        self.abandon()
        raise
    else:
      self.abandon()
      raise CheckpointError(
        f"no checkpoint in {self.directory} verifies: "
        + "; ".join(f"{t}: {why}" for t, why in skipped)
        + f". Move them away (e.g. to {self.workdir / workdir_files.SET_ASIDE}) to start afresh"
      )
    self._good = s if verified and finite else None
    newer = [t for t in steps if t > s]
    parts = [f"checkpoint {t} does not verify ({why})" for t, why in skipped]
    if step is not None and newer:
      parts.append(f"restore_step={step}")
    if not verified:
      parts.append(f"checkpoint {s} predates checkpoint fingerprints: restored unverified")
    elif skipped or newer:
      parts.append(f"resuming from checkpoint {s}" + (", the newest that verifies" * bool(skipped)))
    if newer:
      dest = self._set_aside(newer)
      parts.append(f"set aside {', '.join(map(str, newer))} in {dest}")
    note = "; ".join(parts)
    if note and jax.process_index() == 0:
      print(note, flush=True)
    return Restored(step=s, state=state, verified=verified, note=note)

  def _restore_verified(
    self, s: int, abstract_state: Any, shardings: Any
  ) -> tuple[Any, bool, bool]:
    """(state, verified, finite at save) of checkpoint ``s``; CorruptCheckpoint if it does not
    verify on every process."""
    step_dir = self.path(s)
    state, err = None, None
    try:
      meta = read_meta(s, step_dir)
      self._check_data_iter(s, step_dir, meta)
      self._check_fits(s, step_dir, abstract_state)
      state = self._read_state(s, step_dir, abstract_state, shardings)
    except CorruptCheckpoint as e:
      err = e
    if not distributed.all_agree(err is None):
      if err is not None:
        raise err
      raise CorruptCheckpoint(s, step_dir, "another process could not read its part")
    saved = meta.get("fingerprints")
    if saved is None:  # format 1: nothing to compare with
      return state, False, False
    got, _ = fingerprint.digest(state)
    try:
      compare_fingerprints(s, step_dir, saved, got, workdir_files.STATE)
    except CorruptCheckpoint:
      del state  # free the device memory before trying an older checkpoint
      raise
    return state, True, bool(meta.get("finite"))

  def _check_data_iter(self, s: int, step_dir: epath.Path, meta: dict[str, Any]) -> None:
    """This process's data-position file must be readable and match its saved CRC. A checkpoint
    of another process count is left to ``restore_data_iter`` (DataStateMismatch)."""
    folder = step_dir / workdir_files.DATA_ITER
    pi, pc = jax.process_index(), jax.process_count()
    name = f"process_{pi}-of-{pc}.json"
    try:
      if not (folder / name).exists():
        if not list(folder.glob("process_*-of-*.json")):
          raise CorruptCheckpoint(
            s, step_dir, f"{workdir_files.DATA_ITER}/ holds no iterator state"
          )
        return
      state = json.loads((folder / name).read_text())
    except (OSError, ValueError) as e:
      raise CorruptCheckpoint(
        s, step_dir, f"{workdir_files.DATA_ITER}/{name} is unreadable ({one_line(e)})"
      ) from e
    crcs = meta.get("data_iter_crc32")
    if crcs is not None and meta.get("process_count") == pc and _data_state_crc(state) != crcs[pi]:
      raise CorruptCheckpoint(
        s, step_dir, f"{workdir_files.DATA_ITER}/{name} differs from what was saved"
      )

  def _check_fits(self, s: int, step_dir: epath.Path, abstract_state: Any) -> None:
    """The saved leaves must be this run's: same names, shapes and dtypes."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
      tree = handler.metadata(step_dir / workdir_files.STATE).tree
    except Exception as e:  # noqa: BLE001 - any failure to read the metadata is a corrupt file
      raise CorruptCheckpoint(
        s, step_dir, f"{workdir_files.STATE}/ metadata is unreadable ({one_line(e)})"
      ) from e
    finally:
      handler.close()
    saved = {
      fingerprint.leaf_name(p): (tuple(m.shape), np.dtype(m.dtype).name)
      for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]
      if hasattr(m, "shape")
    }
    want = {
      fingerprint.leaf_name(p): (tuple(a.shape), np.dtype(a.dtype).name)
      for p, a in jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    }
    if saved == want:
      return
    where = f"checkpoint {s} ({step_dir}) does not fit this run's train state"
    hint = "(was it saved with another model or optimizer config?)"
    for n in want:
      if n in saved and saved[n] != want[n]:
        (a_shape, a_dtype), (b_shape, b_dtype) = saved[n], want[n]
        raise CheckpointError(
          f"{where}: {n} is {a_shape} {a_dtype} there, {b_shape} {b_dtype} here {hint}"
        )
    only_saved, only_here = sorted(set(saved) - set(want)), sorted(set(want) - set(saved))
    raise CheckpointError(
      f"{where}: {len(only_saved)} leaves only in the checkpoint (e.g. "
      f"{only_saved[:1] or '-'}), {len(only_here)} only here (e.g. {only_here[:1] or '-'}) {hint}"
    )

  def _read_state(self, s: int, step_dir: epath.Path, abstract_state: Any, shardings: Any) -> Any:
    target = jax.tree.map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract_state, shardings
    )
    quiet_failed_reads()
    try:
      return self.mngr.restore(
        s, args=ocp.args.Composite(**{workdir_files.STATE: ocp.args.StandardRestore(target)})
      )[workdir_files.STATE]
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise plain Exceptions for bad files
      leaf, cause = failed_leaf(e), one_line(root_cause(e), 300)
    # Not chained: orbax's exception holds the reads it abandoned; collected now, not at exit.
    gc.collect()
    what = f"{workdir_files.STATE} leaf {leaf}" if leaf else f"{workdir_files.STATE}/"
    raise CorruptCheckpoint(s, step_dir, f"{what} is unreadable ({cause})")

  def _set_aside(self, steps: list[int]) -> epath.Path:
    """Moves checkpoints ``steps`` to WORKDIR/checkpoints_set_aside (process 0; all wait)."""
    dest_root = self.workdir / workdir_files.SET_ASIDE
    if jax.process_index() == 0:
      dest_root.mkdir(parents=True, exist_ok=True)
      for t in steps:
        dest, n = dest_root / str(t), 1
        while dest.exists():
          dest, n = dest_root / f"{t}.{n}", n + 1
        storage.move(self.path(t), dest)  # in a bucket: copied, then deleted
    distributed.sync("checkpoints set aside")
    self.mngr.reload()
    return dest_root

  def restore_data_iter(self, step: int, data_iter: Any, *, data_groups: int) -> None:
    """Moves ``data_iter`` to the position saved at ``step``; ``DataStateMismatch`` names why
    not."""
    try:
      self.mngr.restore(
        step,
        args=ocp.args.Composite(
          **{workdir_files.DATA_ITER: grain.checkpoint.CheckpointRestore(data_iter)}
        ),
      )
    except (FileNotFoundError, ValueError, KeyError) as e:
      saved = _saved_meta(self.directory, step).get("process_count", "an unknown number of")
      raise DataStateMismatch(
        f"checkpoint {step}: the data-iterator state cannot be restored "
        f"({type(e).__name__}: {e}); it is "
        f"tied to the process count, data.groups and dataset it was saved with (saved with {saved} "
        f"processes, now {jax.process_count()} with data.groups={data_groups})."
      ) from e

  # ------------------------------------------------------------------------------------- save

  def save(self, step: int, state: Any, data_iter: Any, *, data_groups: int) -> None:
    """Starts the asynchronous save of the train state, the data position and the meta (with
    the fingerprints of ``state``). Raises CheckpointError if the previous save failed or this one
    cannot start."""
    self.wait_until_finished()
    fps, finite = fingerprint.digest(state)
    crcs = distributed.gather_uint32(_data_state_crc(data_iter.get_state()))
    meta = {
      "step": step,
      "process_count": jax.process_count(),
      "data_groups": data_groups,
      "format": META_FORMAT,
      "finite": finite,
      "fingerprints": fps,
      "data_iter_crc32": crcs,
      "model": json.loads(self.model_config.to_json()) if self.model_config else None,
    }
    try:
      self.mngr.save(
        step,
        args=ocp.args.Composite(
          **{
            workdir_files.STATE: ocp.args.StandardSave(state),
            workdir_files.DATA_ITER: grain.checkpoint.CheckpointSave(data_iter),
            workdir_files.META: ocp.args.JsonSave(meta),
          }
        ),
        force=True,
      )
    except Exception as e:  # noqa: BLE001 - whatever stopped the save, the run stops here
      raise self._failed(step, e) from e
    self._pending = (step, finite)

  def poll(self) -> None:
    """Raises CheckpointError if the save in flight has failed; cheap (no wait, no I/O) while it
    runs."""
    if self._pending is not None and not self.mngr.is_saving_in_progress():
      self.wait_until_finished()

  def wait_until_finished(self) -> None:
    """Waits for the save in flight; CheckpointError naming it and the cause if it failed."""
    if self._pending is None:
      return
    step, finite = self._pending
    try:
      self.mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      raise self._failed(step, e) from e
    self._pending = None
    if finite:
      self._good = step

  def _failed(self, step: int, e: BaseException) -> CheckpointError:
    self._pending = None
    self.abandon()
    try:
      done = latest_step(os.fspath(self.workdir))
    except OSError:
      done = None
    newest = (
      "no complete checkpoint yet" if done is None else f"the newest complete checkpoint is {done}"
    )
    return CheckpointError(
      f"checkpoint {step} ({self.path(step)}) could not be written: {one_line(root_cause(e))}; "
      f"stopping ({newest})"
    )

  # ------------------------------------------------------------------------------ bookkeeping

  def known_good(self) -> int | None:
    """The newest checkpoint known good (verified at restore or saved by this run, with finite
    parameters) that is still on disk; None if there is none."""
    if self._good is None or self._good not in self.mngr.all_steps():
      return None
    return self._good

  def last_good_note(self) -> str:
    """What the non-finite guard says about where the last good parameters are."""
    good = self.known_good()
    if good is None:
      return (
        "no checkpoint is known good (none was restored verified or saved by this run with "
        "finite parameters)"
      )
    return f"checkpoint {good} ({self.path(good)}) holds the last good parameters (verified)"

  def close(self) -> None:
    """Waits for the last save (CheckpointError if it failed) and closes the manager."""
    self.wait_until_finished()
    self.abandon()

  def abandon(self) -> None:
    """Closes the manager, ignoring errors (they were, or are being, reported)."""
    if not self._open:
      return
    self._open = False
    _OPEN.discard(self)
    try:
      self.mngr.close()
    except Exception:  # noqa: BLE001
      pass
    _join_orbax_write_threads(ORPHAN_WRITES_TIMEOUT_S)


def _join_orbax_write_threads(timeout_s: float) -> None:
  """Waits (at most ``timeout_s``) for orbax's write threads. When one item of a save fails, the
  others keep writing after the save is reported failed; a process that exits meanwhile gets a
  traceback from each of them (``cannot schedule new futures after shutdown``)."""
  from orbax.checkpoint._src.futures import future as orbax_future  # noqa: PLC0415

  kind = getattr(orbax_future, "_SignalingThread", None)  # private: skipped if it goes away
  if kind is None:
    return
  deadline = time.monotonic() + timeout_s
  for t in threading.enumerate():
    if isinstance(t, kind) and t is not threading.current_thread():
      t.join(max(deadline - time.monotonic(), 0.0))


def save(ckpts: RunCheckpoints, step: int, state: Any, data_iter: Any, *, data_groups: int) -> None:
  """Asynchronously writes the train state, the data position and the meta (the loop calls this
  through the module, so tests can wrap it)."""
  ckpts.save(step, state, data_iter, data_groups=data_groups)


# --------------------------------------------------------------------------- model checkpoints
