"""What orbax prints about failures that are reported in one line elsewhere: the tracebacks of the
reads it abandons after a failed restore, and its error logs about a failed background save.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from absl import logging as absl_logging

_QUIETED = False


class _OrbaxTaskFilter(logging.Filter):
  """asyncio's "... exception was never retrieved" for orbax's abandoned read tasks and the
  futures gathering them (which name the TensorStore that failed)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "never retrieved" not in str(record.msg):
      return True
    message = record.getMessage()
    return "orbax" not in message and "TensorStore" not in message


def quiet_failed_reads() -> None:
  """When one array of a restore cannot be read, orbax abandons the others mid-flight: their
  tasks and coroutines are collected with exceptions nobody retrieved, and tensorstore's callbacks
  find orbax's event loop closed. Each prints a traceback (through asyncio's log or the unraisable
  hook), hundreds for one damaged file, while the failure itself is reported in one line. Installed
  before the first restore, this drops exactly those: orbax's read tasks and coroutines, and
  ``RuntimeError: Event loop is closed`` raised in tensorstore's callbacks."""
  global _QUIETED
  if not _QUIETED:
    _QUIETED = True
    logging.getLogger("asyncio").addFilter(_OrbaxTaskFilter())
    previous = sys.unraisablehook

    def unraisable(u: Any) -> None:
      code = getattr(u.object, "cr_code", None)
      if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
        return
      if u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed":
        return  # tensorstore's callbacks into orbax's closed loop
      previous(u)

    sys.unraisablehook = unraisable


# What orbax logs, with a traceback each, about a save that failed in its background threads; the
# failure is raised as one CheckpointError line that names the checkpoint and the cause.
_ORBAX_SAVE_FAILURE_LOGS = (
  "Failed to run",
  "Save Finalize thread",
  "Checkpointer failed",
  "_SignalingThread.run() raised",
)


class _OrbaxSaveFailureFilter(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in (record.pathname or ""):
      return True
    message = str(record.msg)
    return not any(text in message for text in _ORBAX_SAVE_FAILURE_LOGS)


def quiet_orbax_save_failures() -> None:
  """Drops orbax's error logs (and their tracebacks) about a failed background save; the command
  line installs this unless --verbosity is given. Idempotent."""
  logger = absl_logging.get_absl_logger()
  if not any(isinstance(f, _OrbaxSaveFailureFilter) for f in logger.filters):
    logger.addFilter(_OrbaxSaveFailureFilter())
