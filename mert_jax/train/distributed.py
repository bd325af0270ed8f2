"""Several processes, one job: distributed start-up, the preemption agreement, and the small
agreements of the checkpoint code (every process read its part; each process's checksum)."""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Explicit coordinator, or JAX's own detection on TPU pods / SLURM / Open MPI; nothing on one
  host."""
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return
  env = os.environ
  multi_host = (
    int(env.get("SLURM_NTASKS", "1")) > 1
    or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")
    or "JAX_COORDINATOR_ADDRESS" in env
  )
  if multi_host:
    jax.distributed.initialize()


class Preempted:
  """SIGTERM (TPU maintenance, SLURM, `kill`) sets a flag; the loop checkpoints and exits."""

  def __init__(self):
    self.flag = False
    signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    self.flag = True

  def agreed(self, step: int, every: int, *, now: bool = False) -> bool:
    """True when any process got the signal (all processes must stop at the same step).

    With several processes the agreement is an all-gather, which blocks the host until the devices
    have finished the queued step; done every step it would stop the host from preparing the next
    batch while the current step runs, so it happens every ``every`` steps only (or ``now``: the
    check before the first step)."""
    if jax.process_count() == 1:
      return self.flag
    if step % max(every, 1) and not now:
      return False
    return not all_agree(not self.flag)


def all_agree(ok: bool) -> bool:
  """True when ``ok`` holds on every process (an all-gather with several processes)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))


def gather_uint32(value: int) -> list[int]:
  """Every process's ``value`` (a uint32), in process order."""
  if jax.process_count() == 1:
    return [int(value)]
  got = multihost_utils.process_allgather(np.array([value], np.uint32))
  return [int(v) for v in np.asarray(got).reshape(-1)]


def sync(name: str) -> None:
  """Barrier across processes (a no-op with one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
