"""Test-only: let every process of a multi-process test job write JAX's persistent compilation
cache (tests/conftest.py points it at one local folder).

JAX writes cache entries from process 0 only (jax/_src/compiler.py ``_cache_write``: against
write contention on GCS), and the other processes' programs have keys of their own (their
devices), so process 1 of every two-process test compiled its train step, its initialisation and
~70 checkpoint slicing programs from scratch, 15-20 s per start on the test machine. On a local
folder each process writing its own entries contends with nothing; the executables served are
the ones XLA compiled, so no result changes.
"""

from __future__ import annotations


def let_every_process_write() -> None:
  from jax._src import (
    compiler,  # pylint: disable=g-import-not-at-top
    distributed,  # pylint: disable=g-import-not-at-top
  )

  original = compiler._cache_write  # pylint: disable=protected-access

  def write(*args, **kwargs):
    process_id = distributed.global_state.process_id
    distributed.global_state.process_id = 0  # the one condition JAX checks before writing
    try:
      return original(*args, **kwargs)
    finally:
      distributed.global_state.process_id = process_id

  compiler._cache_write = write  # pylint: disable=protected-access
