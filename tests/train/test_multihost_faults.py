"""Multi-host faults (docs/reliability.md, multi-host table): two trainer processes on loopback,
started with the real command line (tests/multihost.py), one fault each. Every test asserts the
outcome the table states: each process exits within a bound of seconds, with one ``error:`` line
naming the cause or the failed peer and a distinct status, no stack dump, nothing written into a
workdir the run no longer holds, and an exact resume where the run goes on.

The processes share the session's prepared corpus and the persistent compilation cache
(tests/conftest.py), so each start costs the import and the cached compile only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from mert_jax import workdir_files
from mert_jax.train import fail_fast, workdir_lock
from tests import multihost

pytestmark = [pytest.mark.multiprocess, pytest.mark.long]

# How long after a fault every process must have exited: the peer timeout (a silent peer) plus
# the process-0-leaves-last wait, with slack for a loaded 2-core machine.
BOUND_S = multihost.PEER_TIMEOUT_S + fail_fast.ACK_WAIT_S + 6.0
# A fault that a process reports itself travels through the coordination service at once.
REPORTED_BOUND_S = fail_fast.ACK_WAIT_S + 4.0


def assert_one_line(ended: multihost.Ended, *words: str) -> str:
  """The process printed exactly one ``error:`` line holding ``words``, and no stack dump."""
  assert len(ended.error_lines) == 1, ended.log[-3000:]
  line = ended.error_lines[0]
  assert all(w in line for w in words), line
  dumps = [s for s in multihost.STACK_DUMP_SIGNS if s in ended.log]
  assert not dumps, ended.log[-3000:]
  return line


def checkpoints(workdir: Path) -> list[str]:
  folder = workdir / "checkpoints"
  return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_killed_process_is_named_and_the_restart_resumes_exactly(data_dir, tmp_path):
  """kill -9 of process 1 mid-run: process 0 says within seconds that process 1 stopped
  responding, at which step (exit 4), and releases the workdir; the same command again resumes
  from the last checkpoint and replays the lost steps bit for bit."""
  wd = tmp_path / "run"
  args = ["--config.total_steps=10", "--config.checkpoint_every=4"]
  job = multihost.start(wd, data_dir, args)
  try:
    job.wait_for(r"step +6/10", 0)
    job.signal(1, signal.SIGKILL)
    survivor, killed = job.finish(timeout=120)
  finally:
    multihost.stop_all(job)
  assert killed.status == -signal.SIGKILL
  assert survivor.status == fail_fast.EXIT_PEER_LOST and survivor.seconds < BOUND_S, survivor
  assert_one_line(survivor, "stopping: process 1 (", "stopped responding at step ")
  assert not (wd / workdir_files.LOCK).exists()  # released on the way out: a restart may start
  before = multihost.losses(wd)
  assert max(before) >= 6 and "4" in checkpoints(wd)

  again = multihost.start(wd, data_dir, args).finish(timeout=600)
  assert [e.status for e in again] == [0, 0], again[0].log[-3000:] + again[1].log[-3000:]
  after = multihost.losses(wd)
  assert sorted(after) == list(range(1, 11))
  replayed = [s for s in before if s > 4]
  assert replayed and all(after[s] == before[s] for s in replayed), (before, after)


def test_a_save_refused_on_one_process_stops_both_at_once(data_dir, tmp_path):
  """Process 1's checkpoint folder refuses writes (injected: one host's mount or credentials):
  process 1 names the checkpoint and the cause (exit 1); process 0 stops at once naming process 1,
  its step and the cause (exit 3). No partial checkpoint is left."""
  wd = tmp_path / "run"
  fault = {"process": 1, "save_refused_at": 4}
  args = ["--config.total_steps=30", "--config.checkpoint_every=4"]
  job = multihost.start(wd, data_dir, args, fault=fault)
  try:
    job.wait_for(r"step +3/30", 0)
    p0, p1 = job.finish(timeout=120)
  finally:
    multihost.stop_all(job)
  cause = "checkpoint 4 (" + str(wd / "checkpoints" / "4") + ") could not be written"
  assert p1.status == fail_fast.EXIT_ERROR and p1.seconds < REPORTED_BOUND_S + 10, p1
  assert p0.status == fail_fast.EXIT_PEER_FAILED and p0.seconds < REPORTED_BOUND_S + 10, p0
  assert abs(p0.seconds - p1.seconds) < REPORTED_BOUND_S
  assert_one_line(p1, "process 1 (", "at step 4:", cause, "Permission denied")
  assert_one_line(p0, "stopping: process 1 (", "failed at step 4:", cause)
  assert checkpoints(wd) == []  # nothing half-written (no orbax tmp folder either)
  assert not (wd / workdir_files.LOCK).exists()


def damaged_copy(data_dir: str, dest: Path, *, drop: str | None = None) -> str:
  """A copy of the corpus, with shard ``drop`` removed."""
  shutil.copytree(data_dir, dest)
  if drop:
    (dest / drop).unlink()
  return str(dest)


def test_a_shard_cut_mid_run_on_one_process_stops_both(data_dir, tmp_path):
  """A shard only process 1 reads (group 1 reads the odd shards) is cut to half its size while the
  job trains (after the start-up size check passed): when process 1's reader reaches the cut it
  names the shard and what to run (exit 1); process 0, spinning in the step's collective, stops
  at once with the same cause naming process 1 and its step (exit 3); the lock is released."""
  shard = "train-00003-of-00005.tfrecord"
  data = damaged_copy(data_dir, tmp_path / "data")
  wd = tmp_path / "run"
  job = multihost.start(wd, data, ["--config.total_steps=400", "--config.checkpoint_every=1000"])
  try:
    job.wait_for(r"step +3/400", 0)
    os.truncate(os.path.join(data, shard), os.path.getsize(os.path.join(data, shard)) // 2)
    p0, p1 = job.finish(timeout=300)
  finally:
    multihost.stop_all(job)
  cause = f"{data}/{shard}"
  assert p1.status == fail_fast.EXIT_ERROR, p1
  assert p0.status == fail_fast.EXIT_PEER_FAILED, p0
  assert abs(p0.seconds - p1.seconds) < REPORTED_BOUND_S
  assert_one_line(p1, "process 1 (", "at step ", cause, "data_pipeline.prepare")
  assert_one_line(p0, "stopping: process 1 (", "failed at step ", cause)
  assert not (wd / workdir_files.LOCK).exists()


def test_one_process_failing_at_start_up_stops_both(data_dir, tmp_path):
  """Process 1 alone finds a shard missing (its view of the data differs): it is refused when its
  dataset is built; process 0, waiting in a start-up collective, stops at once naming it."""
  shard = "train-00003-of-00005.tfrecord"
  missing = damaged_copy(data_dir, tmp_path / "data", drop=shard)
  wd = tmp_path / "run"
  job = multihost.start(
    wd, data_dir, ["--config.total_steps=30"], per_process={1: [f"--config.data.dir={missing}"]}
  )
  try:
    p0, p1 = job.finish(timeout=300)
  finally:
    multihost.stop_all(job)
  cause = f"shard {missing}/{shard} is missing"
  assert p1.status == fail_fast.EXIT_ERROR and p0.status == fail_fast.EXIT_PEER_FAILED, (p0, p1)
  assert abs(p0.seconds - p1.seconds) < REPORTED_BOUND_S
  assert_one_line(p1, "process 1 (", "during start-up:", cause)
  assert_one_line(p0, "stopping: process 1 (", "failed during start-up:", cause)
  assert checkpoints(wd) == []


def test_a_trainer_whose_workdir_was_taken_over_writes_nothing(data_dir, tmp_path):
  """A trainer is paused (SIGSTOP), another takes its workdir over (a new lock.json), then it runs
  on (SIGCONT): it stops before its next write with one line (exit 5, which a launcher must not
  restart). Only a write that had passed its check before the pause may still land: no
  checkpoint or metric row of a later step, and the new holder's lock stays."""
  wd = tmp_path / "run"
  job = multihost.start(
    wd,
    data_dir,
    ["--config.total_steps=500", "--config.checkpoint_every=3", "--config.mesh=[4,1,1]"],
    processes=1,
  )
  try:
    job.wait_for(r"step +4/500", 0)
    job.signal(0, signal.SIGSTOP)
    time.sleep(0.5)
    paused_at = max(multihost.losses(wd))
    holder = {**workdir_lock.lock_record(), "host": "elsewhere", "pid": 4242}
    (wd / workdir_files.LOCK).write_text(json.dumps(holder))
    job.signal(0, signal.SIGCONT)
    (ended,) = job.finish(timeout=60)
  finally:
    multihost.stop_all(job)
  assert ended.status == fail_fast.EXIT_LOCK_LOST and ended.seconds < 20, ended
  line = assert_one_line(
    ended, "now names another trainer (host elsewhere, pid 4242", "stopping at"
  )
  assert "before writing train metrics" in line or "before writing checkpoint" in line, line
  time.sleep(1.0)  # an asynchronous write would land now
  assert max(multihost.losses(wd)) <= paused_at + 1
  assert all(int(c) <= paused_at + 1 for c in checkpoints(wd) if c.isdigit()), checkpoints(wd)
  assert json.loads((wd / workdir_files.LOCK).read_text())["pid"] == 4242


@pytest.mark.parametrize("hung", [1, 0])
def test_a_hung_process_is_named_within_the_peer_timeout(data_dir, tmp_path, hung):
  """One process hangs (SIGSTOP: a host frozen, as a TPU host whose collectives hang instead of
  failing): no error is raised anywhere, yet the other names it within the peer timeout (exit 4),
  with one line and no stack dump: process 1 from its silent beat; process 0, which hosts the
  coordination service, from the service's silence (JAX's own verdict, an abort with a stack
  dump, comes only at twice the timeout)."""
  wd = tmp_path / "run"
  job = multihost.start(
    wd, data_dir, ["--config.total_steps=400", "--config.checkpoint_every=1000"]
  )
  other = 1 - hung
  try:
    job.wait_for(r"step +3/400", 0)
    job.signal(hung, signal.SIGSTOP)
    began = time.monotonic()
    status = job.procs[other].wait(timeout=120)
    seconds = time.monotonic() - began
  finally:
    multihost.stop_all(job)
  survivor = multihost.Ended(status, seconds, job.text(other))
  assert survivor.status == fail_fast.EXIT_PEER_LOST and survivor.seconds < BOUND_S, survivor
  assert_one_line(survivor, f"stopping: process {hung} (", "stopped responding", "no ")
