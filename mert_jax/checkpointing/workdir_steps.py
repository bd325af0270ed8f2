"""The checkpoint steps of a training workdir as they are on disk: which are complete, the meta each
step holds, and the fingerprint comparison that verifies what was read back.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from mert_jax import workdir_files
from mert_jax.checkpointing.errors import CorruptCheckpoint
from mert_jax.terminal.errors import one_line


def local_absolute(path: Any) -> epath.Path:
  """``path`` as an epath, made absolute when it is local: orbax reads a checkpoint's arrays
  through tensorstore, which fails on a relative folder (``--checkpoint=runs/tiny``) with an
  AttributeError deep in the restore; a URL (``gs://``) is left as it is."""
  text = os.fspath(path)
  return epath.Path(text if "://" in text else os.path.abspath(text))


def complete_steps(workdir: str | os.PathLike) -> list[int]:
  """The finalised checkpoint steps of a workdir, ascending (orbax's listing, without a manager:
  creates nothing, logs nothing)."""
  path = local_absolute(workdir) / workdir_files.CHECKPOINTS
  return sorted(ocp.utils.checkpoint_steps(path)) if path.exists() else []


def latest_step(workdir: str) -> int | None:
  """The newest complete checkpoint of a workdir, or None; creates nothing."""
  return max(complete_steps(workdir), default=None)


def read_meta(step: int, step_dir: epath.Path) -> dict[str, Any]:
  path = step_dir / workdir_files.META / "metadata"
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise CorruptCheckpoint(step, step_dir, f"{workdir_files.META}/metadata is missing") from e
  except (OSError, ValueError) as e:
    raise CorruptCheckpoint(
      step, step_dir, f"{workdir_files.META}/metadata is unreadable ({one_line(e)})"
    ) from e
  if not isinstance(meta, dict):
    raise CorruptCheckpoint(step, step_dir, f"{workdir_files.META}/metadata is not a JSON object")
  return meta


def compare_fingerprints(
  step: int, step_dir: Any, saved: dict[str, int], got: dict[str, int], what: str
):
  """Raises CorruptCheckpoint naming the first leaf whose fingerprint differs or is missing."""
  bad = [n for n in saved if got.get(n) != saved[n]] + [n for n in got if n not in saved]
  if not bad:
    return
  n = bad[0]
  if n not in got:
    reason = f"{what} leaf {n} was saved but is not in the restored tree"
  elif n not in saved:
    reason = f"{what} leaf {n} has no saved fingerprint"
  else:
    reason = f"{what} leaf {n}: fingerprint {got[n]:#010x}, saved {saved[n]:#010x}"
  if len(bad) > 1:
    reason += f" (and {len(bad) - 1} more leaves)"
  raise CorruptCheckpoint(step, step_dir, reason)
