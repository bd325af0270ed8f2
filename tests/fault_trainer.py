"""The trainer's command line with one fault injected into one process, for faults that cannot be
made per process on one machine (tests/multihost.py)::

  python -m tests.fault_trainer '{"process": 1, "save_refused_at": 4}' TRAINER_ARGS...

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
  if process == fault["process"] and "save_refused_at" in fault:
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
