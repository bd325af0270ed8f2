"""A job of several trainer processes on loopback for the multi-host fault tests: started with the
real command line (``python -m mert_jax.cli.train --coordinator_address ...``), one log file per
process, faults applied from outside (signals, files) or, where a fault cannot be made per process
on one machine (one host's folder refusing writes), injected by ``tests/fault_trainer.py``.

Also a command for probing by hand::

  python -m tests.multihost DATA_DIR WORKDIR [--config.FIELD=VALUE ...]
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Seconds: the bounds these tests run the job with (the config section ``distributed``), short so
# that a lost peer is declared within seconds on a loaded 2-core machine.
PEER_TIMEOUT_S = 6.0
# The tiny run every fault test starts from: two processes of 4 fake devices each, one data group
# each, a metric line per step.
RUN = [
  "--config=tiny",
  "--config.data.groups=2",
  "--config.mesh=[8,1,1]",
  "--config.eval_every=0",
  "--config.log_every=1",
  "--config.data.shuffle_window=16",
  f"--config.distributed.peer_timeout_s={PEER_TIMEOUT_S}",
  "--config.distributed.shutdown_timeout_s=10",
]
STACK_DUMP_SIGNS = ("Traceback", "Check failure stack trace", "terminate called", "*** SIG")


@dataclasses.dataclass
class Ended:
  """How one process ended: exit status, seconds from the fault to its exit, its log's text."""

  status: int
  seconds: float
  log: str

  @property
  def error_lines(self) -> list[str]:
    return [line for line in self.log.splitlines() if line.startswith("error:")]


@dataclasses.dataclass
class Job:
  procs: list[subprocess.Popen]
  logs: list[Path]

  def text(self, process: int) -> str:
    return self.logs[process].read_text(errors="replace")

  def wait_for(self, pattern: str, process: int = 0, timeout: float = 300.0) -> None:
    """Waits until ``process``'s log matches ``pattern`` (a regex)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if re.search(pattern, self.text(process)):
        return
      if all(p.poll() is not None for p in self.procs):
        break
      time.sleep(0.1)
    raise AssertionError(
      f"process {process} never logged {pattern!r}:\n{self.text(process)[-3000:]}"
    )

  def signal(self, process: int, sig: int) -> None:
    os.kill(self.procs[process].pid, sig)

  def finish(self, timeout: float = 300.0) -> list[Ended]:
    """Waits for every process (killing what is left after ``timeout``); times from now."""
    began = time.monotonic()
    ended = []
    for p, log in zip(self.procs, self.logs):
      try:
        status = p.wait(timeout=max(1.0, timeout - (time.monotonic() - began)))
      except subprocess.TimeoutExpired:
        p.kill()
        status = p.wait()
      ended.append(Ended(status, time.monotonic() - began, log.read_text(errors="replace")))
    return ended


def env() -> dict[str, str]:
  """Each process: the CPU with 4 fake devices (the test process's 8 would make 16)."""
  e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  e["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  return e


def start(
  workdir: str | Path,
  data_dir: str,
  args: list[str] = (),
  *,
  per_process: dict[int, list[str]] | None = None,
  fault: dict[str, Any] | None = None,
  processes: int = 2,
) -> Job:
  """Starts ``processes`` trainers on ``workdir`` (logs beside it: WORKDIR.pN.log) through
  tests/fault_trainer.py, which injects ``fault`` (if any) into the process it names."""
  import portpicker  # pylint: disable=g-import-not-at-top

  port = portpicker.pick_unused_port()
  workdir = Path(workdir)
  procs, logs = [], []
  for i in range(processes):
    log = workdir.parent / f"{workdir.name}.p{i}.log"
    # The trainer's command line, with every process writing the shared compilation cache.
    cmd = [sys.executable, "-m", "tests.fault_trainer", json.dumps(fault or {})]
    argv = [*cmd, *RUN, f"--workdir={workdir}", f"--config.data.dir={data_dir}", *args]
    argv += (per_process or {}).get(i, [])
    if processes > 1:
      argv += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}"]
      argv += [f"--process_id={i}"]
    with log.open("w") as f:
      procs.append(
        subprocess.Popen(
          argv, stdout=f, stderr=subprocess.STDOUT, env=env(), cwd=Path(__file__).parents[1]
        )
      )
    logs.append(log)
  return Job(procs, logs)


def stop_all(job: Job) -> None:
  for p in job.procs:
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      p.wait()


def losses(workdir: str | Path) -> dict[int, float]:
  """step -> loss of WORKDIR/metrics.jsonl."""
  rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


if __name__ == "__main__":
  job = start(sys.argv[2], sys.argv[1], sys.argv[3:])
  for i, e in enumerate(job.finish()):
    print(f"process {i}: exit {e.status} after {e.seconds:.1f} s; {e.error_lines}")
