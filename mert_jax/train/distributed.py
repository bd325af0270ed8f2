"""Several processes, one job: distributed start-up, the preemption agreement, and the small
agreements of the checkpoint code (every process read its part; each process's checksum)."""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


@dataclasses.dataclass(frozen=True)
class Timeouts:
  """The job's distributed bounds in seconds: the config section ``distributed`` (defaults sized
  for a pod, where start-up and the first compile take minutes and a host's beat may pause for a
  network blip).

  ``peer_timeout_s``: a process whose beat stops this long is declared lost by every other
  (fail_fast.py); JAX's own heartbeat timeout is twice that (its verdict aborts with a stack dump,
  so ours comes first). ``init_timeout_s``: how long ``jax.distributed.initialize`` waits for every
  process to connect. ``shutdown_timeout_s``: how long the coordination service waits at its
  shutdown barrier for processes that ended normally. ``barrier_timeout_s``: how long a process
  waits for the others to finish compiling the train step (one that misses the persistent
  compilation cache compiles while the others wait; one that died is caught sooner, by
  ``peer_timeout_s``)."""

  peer_timeout_s: float = 45.0
  init_timeout_s: int = 300
  shutdown_timeout_s: int = 60
  barrier_timeout_s: int = 3600

  @classmethod
  def from_config(cls, section: Any) -> Timeouts:
    """From the config's ``distributed`` section (a ConfigDict or a mapping)."""
    return cls(**dict(section))

  @property
  def jax_heartbeat_s(self) -> int:
    return max(1, math.ceil(2 * self.peer_timeout_s))


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  timeouts: Timeouts = Timeouts(),
) -> None:
  """Explicit coordinator (arguments, or the three variables JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES, JAX_PROCESS_ID), or JAX's own detection on TPU pods / SLURM / Open MPI;
  nothing on one host. ``timeouts``: the job's bounds (start-up, heartbeat, shutdown)."""
  bounds = {
    "initialization_timeout": timeouts.init_timeout_s,
    "heartbeat_timeout_seconds": timeouts.jax_heartbeat_s,
    "shutdown_timeout_seconds": timeouts.shutdown_timeout_s,
  }
  env = os.environ
  trio = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  if not coordinator_address and all(env.get(k) for k in trio):  # JAX reads only the first one
    # (containers handed the three; tests/launcher's simulated TPU slice, in place of TPU metadata)
    coordinator_address = env["JAX_COORDINATOR_ADDRESS"]
    num_processes, process_id = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id, **bounds)
    return
  multi_host = (
    int(env.get("SLURM_NTASKS", "1")) > 1
    or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    or "," in env.get("TPU_WORKER_HOSTNAMES", "")  # GKE
    or "JAX_COORDINATOR_ADDRESS" in env
    or on_cloud_tpu_vm()  # GCE TPU VM (tpu-vm create, queued resources): JAX reads the metadata
  )
  if multi_host:
    jax.distributed.initialize(**bounds)


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM: its TPU chips are device files (/dev/accel* on v2-v4, /dev/vfio/N on
  v5e and later). There ``jax.distributed.initialize()`` finds the slice's workers from the GCE
  metadata (one process on a single-host slice), which starts the coordination service that the
  preemption sync manager and orbax's multi-host checkpointing rely on; without it a pod would
  still train through libtpu, but maintenance notices would never be agreed on."""
  return bool(glob.glob(TPU_DEVICE_FILES[0]) or glob.glob(TPU_DEVICE_FILES[1]))


# The device files of a Cloud TPU VM's chips (v2-v4; v5e and later).
TPU_DEVICE_FILES = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*")


def wait_for_every_process(name: str, timeout_s: float) -> None:
  """A barrier through the coordination service (a key-value wait, no device collective), so that
  the first step's collectives start together: gloo (CPU) creates its communicator on first use
  with a short timeout, which a process compiling much longer than the others can miss. A no-op
  with one process."""
  from jax._src import distributed as jax_distributed  # the client is not exported publicly

  client = jax_distributed.global_state.client
  if jax.process_count() > 1 and client is not None:
    client.wait_at_barrier(name, int(timeout_s * 1000))


class Preempted:
  """A preemption notice (SIGTERM: Cloud TPU maintenance, Spot reclaim, SLURM, ``kill``) turned
  into a step at which every process saves a checkpoint and stops.

  Two routes, chosen once:

  * **JAX's preemption sync manager** (several processes under ``jax.distributed``, the native
    route on Cloud TPU and the one orbax's ``CheckpointManager.reached_preemption`` wraps). Its
    C++ SIGTERM handler, installed by ``jax.distributed.initialize``, tells the coordination
    service; the service agrees in the background on the step after the highest one any process
    has reached, and ``reached_preemption_sync_point(step)`` turns true on every process at that
    same step. It costs the loop no host sync, so it is asked every step. No Python handler is
    installed then: one would replace JAX's and the notice would never reach the service.
  * **A Python SIGTERM flag** (one process, where the sync manager does not exist, or several
    processes with ``jax_enable_preemption_service`` off). With several processes the flag is
    all-gathered every ``every`` steps (``all_agree``), which waits for the queued step.
  """

  def __init__(self):
    self.flag = False
    self.native = jax.process_count() > 1 and _sync_manager() is not None
    if not self.native:
      signal.signal(signal.SIGTERM, self._handler)

  @property
  def route(self) -> str:
    return "JAX preemption sync manager" if self.native else "SIGTERM flag"

  def _handler(self, signum, frame):
    del signum, frame
    self.flag = True

  def before_first_step(self, step: int) -> bool:
    """True when a notice arrived during start-up (restore, input, the first compile). The sync
    manager cannot answer before the first step (it agrees on a step one past the highest reached),
    so with it the first agreed save comes one step later."""
    if self.native:
      return False
    return self.agreed(step, 1, now=True)

  def agreed(self, step: int, every: int, *, now: bool = False) -> bool:
    """True at the step all processes agreed to stop at (call it after every step: the sync
    manager's protocol counts on every step being reported).

    The flag route's all-gather blocks the host until the devices have finished the queued step;
    done every step it would stop the host from preparing the next batch while the current step
    runs, so it happens every ``every`` steps only (or ``now``)."""
    if self.native:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    if jax.process_count() == 1:
      return self.flag
    if step % max(every, 1) and not now:
      return False
    return not all_agree(not self.flag)


def _sync_manager():
  """JAX's preemption sync manager, or None (no ``jax.distributed``, or the service disabled)."""
  from jax._src import distributed as jax_distributed  # the manager is not exported publicly

  return jax_distributed.global_state.preemption_sync_manager


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
