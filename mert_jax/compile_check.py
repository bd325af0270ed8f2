"""``python -m mert_jax.compile_check``: compile the train step for a TPU slice on this machine and
say whether it fits (the command is mert_jax/cli/compile_check.py; installed as
``mert-compile-check``)."""

from __future__ import annotations

import sys

from mert_jax.cli.compile_check import run

if __name__ == "__main__":
  sys.exit(run())
