"""The trainer's command line for the processes of a multi-process test job (tests/multihost.py):
every process writes the shared compilation cache (tests/shared_compile_cache.py), and one fault
may be injected into one process, for faults that cannot be made per process on one machine::

  python -m tests.fault_trainer '{"process": 1, "save_refused_at": 4}' TRAINER_ARGS...
  python -m tests.fault_trainer '{}' TRAINER_ARGS...     # no fault

``save_refused_at``: that process's checkpoint save at that step fails as a folder refusing writes
does (PermissionError from the checkpoint writer), the way one host's mount or credentials can.
"""

from __future__ import annotations

import errno
import json
import sys


def main() -> int:
  fault = json.loads(sys.argv[1])
  argv = sys.argv[2:]
  process = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--process_id=")), 0)
  from tests import shared_compile_cache  # pylint: disable=g-import-not-at-top

  shared_compile_cache.let_every_process_write()
  if process == fault.get("process") and "save_refused_at" in fault:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

    original = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
      if step == fault["save_refused_at"]:
        path = f"{self.directory}/{step}"
        raise PermissionError(errno.EACCES, "Permission denied", path)
      return original(self, step, *args, **kwargs)

    ocp.CheckpointManager.save = save
  from mert_jax.cli import train  # pylint: disable=g-import-not-at-top

  sys.argv = [sys.argv[0], *argv]
  return train.run(argv)


if __name__ == "__main__":
  sys.exit(main())
