"""Train (or resume) MERT: ``python -m mert_jax.cli.train --config=FILE.py:VARIANT --workdir=DIR``.

  python -m mert_jax.cli.train --config=configs/mert.py:tiny --workdir=runs/tiny
  python -m mert_jax.cli.train --config=configs/mert.py:95m --workdir=gs://BUCKET/run --config.data.dir=gs://BUCKET/data

Any config field is overridable with ``--config.FIELD=VALUE``. Re-running the same command
resumes from the workdir's newest checkpoint that verifies, or ``--config.restore_step=N``
(mert_jax/train/loop.py, checkpoints.py).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mert_jax.train import checkpoints, distributed, workdir
from mert_jax.train.checkpoints import CheckpointError
from mert_jax.train.init_from import InitFromError
from mert_jax.train.loop import train
from mert_jax.train.loop_config import ConfigError

# Errors whose message says everything: printed as one ``error: ...`` line, exit status 1. A bad
# loop field or init_from source is refused before anything compiles; a checkpoint that cannot be
# read or written names itself and the cause (mert_jax/train/checkpoints.py).
ONE_LINE_ERRORS = (
  ConfigError,
  InitFromError,
  CheckpointError,
  workdir.ConfigChangeRefused,
  workdir.WorkdirLocked,
  workdir.WorkdirLockLost,
)

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "configs/mert.py:VARIANT", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and metrics.jsonl")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "multi-process: host:port of process 0"
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multi-process: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multi-process: this process's index")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO; progress lines are printed
    checkpoints.quiet_orbax_save_failures()  # a failed save is reported in one line instead
  distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except ONE_LINE_ERRORS as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    # train() has closed the checkpoint manager and released the workdir. After a failed read,
    # orbax and tensorstore leave reads in flight whose callbacks print tracebacks while the
    # interpreter shuts down ("Event loop is closed", coroutines never awaited); ending the
    # process here keeps the error the only line.
    sys.stdout.flush()
    logging.flush()
    os._exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
