"""Train (or resume) MERT: ``python -m mert_jax.cli.train --config=FILE.py:VARIANT --workdir=DIR``.

  python -m mert_jax.cli.train --config=configs/mert.py:tiny --workdir=runs/tiny
  python -m mert_jax.cli.train --config=configs/mert.py:95m --workdir=gs://BUCKET/run --config.data.dir=gs://BUCKET/data

Any config field is overridable with ``--config.FIELD=VALUE``. Re-running the same command
resumes from the workdir's latest complete checkpoint (mert_jax/train/loop.py).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mert_jax.train import distributed
from mert_jax.train.init_from import InitFromError
from mert_jax.train.loop import train

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
  distributed.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    train(_CONFIG.value, _WORKDIR.value)
  except InitFromError as e:  # refused before anything compiled: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
