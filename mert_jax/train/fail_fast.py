"""One failure, every process told: when one process of a job fails, every process stops within
seconds, each with one ``error:`` line naming the cause or the failed process, and a distinct exit
status (docs/reliability.md, multi-host table).

Three routes, all through JAX's coordination service (its key-value store: no device collective,
so they work while the main thread is stuck in a step's all-reduce):

* **A process that fails** (any exception: data, I/O, checkpoint, a lost workdir lock) prints its
  line and writes its failure (process, host, step, cause) under ``FAILURE_KEY``. Every process
  runs a watcher thread blocked on that key; it prints
  ``error: stopping: process P (HOST) failed at step S: CAUSE`` and exits (``EXIT_PEER_FAILED``).
  Process 0, which hosts the coordination service, leaves last (``_leave``).
* **A process that vanishes without a word** (kill -9, the kernel's OOM killer, a host gone, a hang
  or SIGSTOP): each watcher publishes a beat under ``ALIVE_DIR`` every quarter of
  ``peer_timeout_s`` and watches the others'; a peer whose beat has not changed for
  ``peer_timeout_s`` (local monotonic time: no clock comparison between hosts) is named with the
  last step it reported (``EXIT_PEER_LOST``). JAX's own heartbeat, whose verdict aborts every
  process with a C++ stack dump, is set to twice that (distributed.py), so this one comes first.
* **Process 0 frozen** (it hosts the service): the others' requests hang; a second thread that
  makes no request sees the service silent for ``peer_timeout_s`` and names process 0.
* **A collective that fails because a peer is gone** (gloo on CPU: "Connection reset by peer")
  raises in the main thread: it waits for the watcher's verdict (which names the peer) up to
  ``peer_timeout_s``, else says it lost contact (``EXIT_PEER_LOST``).

Not covered: when process 0 itself dies outright (not frozen) the coordination service dies with
it, and JAX's agent in every other process aborts at once with its own stack dump (exit 134)
before any Python code can run; the bound is then about a second, but the line is JAX's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, NoReturn

import jax

# Exit statuses. A launcher restarts on EXIT_PEER_FAILED / EXIT_PEER_LOST (and on EXIT_ERROR within
# its restart budget); EXIT_LOCK_LOST means another run holds the workdir: never restart into it.
EXIT_ERROR = 1  # this process's own error; the line names it
EXIT_PEER_FAILED = 3  # another process failed; the line names it, its step and its cause
EXIT_PEER_LOST = 4  # another process vanished (killed, hung, unreachable); named when known
EXIT_LOCK_LOST = 5  # another trainer took over the workdir: this run stopped before writing
EXIT_INTERRUPTED = 130  # Ctrl-C

FAILURE_KEY = "mert_jax/failure"  # the first failure of the job: JSON {process, host, step, cause}
LEAVING_DIR = "mert_jax/leaving/"  # + process index: that process is exiting because of a failure
ALIVE_DIR = "mert_jax/alive/"  # + process index: the watcher's beat, JSON {beat, step, host}
DONE = "done"  # the beat of a process that finished normally
ACK_WAIT_S = 3.0  # process 0 waits this long at most for the others to leave before it does
LAST_EXIT_GRACE_S = 0.3  # ... and this long after the last one marked itself leaving
POLL_S = 1.0  # the watcher's longest wait on the failure key (how soon it notices a normal end)
# Words of the runtime errors (jax.errors.JaxRuntimeError) that a collective or the coordination
# service raises when a peer is gone; generic words (UNAVAILABLE, DEADLINE_EXCEEDED) are left out:
# a bucket's read raises them too, and that is this process's own error.
LOST_PEER_SIGNS = (
  "Gloo",
  "NCCL",
  "Connection reset by peer",
  "CoordinationServiceError",
  "tasks have crashed",
  "coordination service",
)
# In the temp folder: the traceback of an unexpected error, named in its one line.
TRACEBACK_FILE = "mert_jax-error-{host}-{pid}.txt"


@dataclasses.dataclass
class _Job:
  """This process's place in the job, as the error lines need it."""

  process: int = 0
  count: int = 1
  host: str = dataclasses.field(default_factory=socket.gethostname)
  step: int | None = None
  client: Any = None
  peer_timeout_s: float = 0.0
  lost: set[int] = dataclasses.field(default_factory=set)  # peers this process declared lost
  watcher: threading.Thread | None = None
  answered: float = 0.0  # monotonic time of the coordination service's last answer to the watcher
  closing: bool = False
  exiting: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_job = _Job()
# Called (best effort) when the process ends for a failure without unwinding the main thread:
# the workdir lock's release (workdir.Claim), so that a restarted job is not refused by it.
LEAVE_HOOKS: list[Callable[[], None]] = []


def note_step(step: int) -> None:
  """The step this process has reached (the loop calls it after each step): named in its
  failure line and in its beat."""
  _job.step = step


def _where(step: int | None) -> str:
  return "during start-up" if step is None else f"at step {step}"


def _client() -> Any:
  from jax._src import distributed as jax_distributed  # the client is not exported publicly

  return jax_distributed.global_state.client


def start(peer_timeout_s: float) -> None:
  """Starts the watcher (several processes under ``jax.distributed``; a no-op otherwise)."""
  _job.process, _job.count = jax.process_index(), jax.process_count()
  _job.client = _client() if _job.count > 1 else None
  _job.peer_timeout_s = peer_timeout_s
  _job.closing = False
  if _job.client is not None:
    _job.answered = time.monotonic()
    _job.watcher = threading.Thread(target=_watch, name="mert-jax-fail-fast", daemon=True)
    _job.watcher.start()
    if _job.process != 0:  # process 0 hosts the service: its own requests never wait on a peer
      threading.Thread(
        target=_watch_the_service, name="mert-jax-service-watch", daemon=True
      ).start()


def close() -> None:
  """The run ended normally: the watcher stops, and tells the others this process is done (not
  dead) while they finish."""
  _job.closing = True
  if _job.watcher is not None:
    # Joined before the interpreter shuts down: a daemon thread still inside the client's wait
    # when the client is destroyed is killed mid-C++ ("FATAL: exception not rethrown", abort).
    _job.watcher.join(timeout=POLL_S * 4)
    _job.watcher = None
  if _job.client is not None:
    try:
      _job.client.key_value_set(f"{ALIVE_DIR}{_job.process}", DONE, allow_overwrite=True)
    except Exception:  # noqa: BLE001 - the service may have gone already: nothing to tell
      return


def describe(error: BaseException, one_line: tuple[type, ...]) -> tuple[str, int]:
  """(the cause in one line, the exit status) of an exception ending a run."""
  first = (str(error).strip().splitlines() or [""])[0]
  if isinstance(error, KeyboardInterrupt):
    return "interrupted", EXIT_INTERRUPTED
  if isinstance(error, one_line):
    return first, getattr(error, "exit_status", EXIT_ERROR)  # WorkdirLockLost: EXIT_LOCK_LOST
  if lost_peer(error):
    return f"lost contact with another process ({first})", EXIT_PEER_LOST
  path = os.path.join(tempfile.gettempdir(), TRACEBACK_FILE.format(host=_job.host, pid=os.getpid()))
  try:
    with open(path, "w", encoding="utf-8") as f:
      traceback.print_exception(error, file=f)
    where = f" (traceback: {path})"
  except OSError:
    where = ""
  return f"{type(error).__name__}: {first}{where}", EXIT_ERROR


def lost_peer(error: BaseException) -> bool:
  """Whether ``error`` is a collective or the coordination service failing for want of a peer."""
  return isinstance(error, jax.errors.JaxRuntimeError) and any(
    sign in str(error) for sign in LOST_PEER_SIGNS
  )


def fail(error: BaseException, one_line: tuple[type, ...] = ()) -> NoReturn:
  """Ends this process because of ``error``: one line, the others told, a distinct status.

  With one process the line is ``error: CAUSE``; with several it names this process, its host and
  step. A failure caused by a lost peer first leaves the watcher time to name that peer."""
  cause, status = describe(error, one_line)
  job = _job
  if job.client is None:  # one process: no other thread ends it
    _print_and_exit(f"error: {cause}", status)
  if status == EXIT_PEER_LOST:
    # The watcher names the peer: from its report at once, from its silent beat within the
    # timeout. Until then this thread waits; the watcher's exit ends the process.
    time.sleep(job.peer_timeout_s + _beat_s(job) * 2)
  record = {"process": job.process, "host": job.host, "step": job.step, "cause": cause}
  _leave(f"error: process {job.process} ({job.host}) {_where(job.step)}: {cause}", status, record)


def _leave(line: str, status: int, failure: dict[str, Any] | None) -> NoReturn:
  """Ends this process of a failing job: prints ``line``, records ``failure`` for the others
  (unless one is recorded already), marks this process as leaving, and exits with ``status``.

  Process 0 leaves last: the coordination service lives in it, and when it goes, JAX's agent in
  every process still running aborts at once with a stack dump. So it first waits (at most
  ``ACK_WAIT_S``) until every process not declared lost has marked itself leaving."""
  job = _job
  if not job.exiting.acquire(blocking=False):  # another thread of this process is ending it
    time.sleep(ACK_WAIT_S * 2)
    os._exit(status)
  print(line, file=sys.stderr, flush=True)
  for hook in list(LEAVE_HOOKS):
    with contextlib.suppress(Exception):  # best effort: the process is ending anyway
      hook()
  if failure is None:  # the service does not answer: a request would hang
    _print_and_exit(None, status)
  with contextlib.suppress(Exception):  # the service may be gone: nothing left to tell
    job.client.key_value_set(FAILURE_KEY, json.dumps({**failure, "by": job.process}))
  with contextlib.suppress(Exception):
    job.client.key_value_set(f"{LEAVING_DIR}{job.process}", "1", allow_overwrite=True)
  if job.process == 0:
    expected = job.count - len(job.lost)
    deadline = time.monotonic() + ACK_WAIT_S
    with contextlib.suppress(Exception):
      while time.monotonic() < deadline:
        if len(job.client.key_value_dir_get(LEAVING_DIR)) >= expected:
          time.sleep(LAST_EXIT_GRACE_S)  # from their mark to their exit: a print and a flush
          break
        time.sleep(0.05)
  _print_and_exit(None, status)


def _beat_s(job: _Job) -> float:
  return max(job.peer_timeout_s / 4, 0.05)


def _print_and_exit(line: str | None, status: int) -> NoReturn:
  """Prints the line and ends the process at once: no interpreter shutdown, where JAX's client
  would wait at the coordination service's shutdown barrier for processes that are gone, and
  where orbax and tensorstore reads still in flight print tracebacks."""
  if line is not None:
    print(line, file=sys.stderr, flush=True)
  sys.stdout.flush()
  try:
    from absl import logging  # pylint: disable=g-import-not-at-top

    logging.flush()
  finally:
    os._exit(status)


def _watch() -> None:
  """The watcher thread: beats, waits on the failure key, judges the peers' beats."""
  from mert_jax.terminal.errors import one_line  # pylint: disable=g-import-not-at-top

  job = _job
  beat_s, started, beat, beaten = _beat_s(job), time.monotonic(), 0, 0.0
  seen: dict[int, tuple[str, float]] = {}  # peer -> (its last beat, when it changed here)
  while not job.closing:
    text = None
    try:
      if time.monotonic() - beaten >= beat_s:
        beat, beaten = beat + 1, time.monotonic()
        mine = json.dumps({"beat": beat, "step": job.step, "host": job.host})
        job.client.key_value_set(f"{ALIVE_DIR}{job.process}", mine, allow_overwrite=True)
      try:
        wait_ms = int(min(beat_s, POLL_S) * 1000)
        text = job.client.blocking_key_value_get(FAILURE_KEY, wait_ms)
      except Exception as e:  # noqa: BLE001 - the wait's deadline is the beat period
        if "DEADLINE_EXCEEDED" not in str(e):
          raise
      beats = dict(job.client.key_value_dir_get(ALIVE_DIR))
      job.answered = time.monotonic()
    except Exception as e:  # noqa: BLE001 - the coordination service is unreachable
      if job.closing:
        return
      _leave(
        f"error: process {job.process} ({job.host}) {_where(job.step)}: lost contact with the "
        f"coordination service on process 0 ({one_line(e)}): process 0 died or its host "
        f"is unreachable; see its log",
        EXIT_PEER_LOST,
        {},
      )
    if text is not None:
      failure = json.loads(text)
      if failure.get("by") == job.process:
        return  # this process's own report: the thread that made it is ending the process
      lost = failure.get("lost", False)
      if lost:
        job.lost.add(failure.get("process"))
      _leave(
        f"error: stopping: process {failure.get('process')} ({failure.get('host')}) "
        f"{'stopped responding' if lost else 'failed'} {_where(failure.get('step'))}: "
        f"{failure.get('cause')}",
        EXIT_PEER_LOST if lost else EXIT_PEER_FAILED,
        failure,
      )
    now = time.monotonic()
    for key, value in beats.items():
      peer = int(key.rsplit("/", 1)[-1])
      if seen.get(peer, ("", 0.0))[0] != value:
        seen[peer] = (value, now)
    for peer in range(job.count):
      if peer == job.process:
        continue
      value, since = seen.get(peer, ("", started))
      if value == DONE or now - since <= job.peer_timeout_s:
        continue
      last = json.loads(value) if value else {}
      job.lost.add(peer)
      failure = {
        "process": peer,
        "host": last.get("host", "?"),
        "step": last.get("step"),
        "cause": f"no sign of life for {now - since:.0f} s (killed, hung or its host lost; see "
        f"its log)",
        "lost": True,
      }
      _leave(
        f"error: stopping: process {peer} ({failure['host']}) stopped responding "
        f"{_where(failure['step'])}: {failure['cause']}",
        EXIT_PEER_LOST,
        failure,
      )


def _watch_the_service() -> None:
  """On processes other than 0: when the coordination service stops answering the watcher (process
  0 frozen: SIGSTOP, a hung host), the watcher's requests hang and cannot judge anything; this
  thread, which makes no request, names process 0 after ``peer_timeout_s`` of silence (JAX's own
  heartbeat would abort with a stack dump at twice that)."""
  job = _job
  while not job.closing:
    time.sleep(_beat_s(job))
    silent = time.monotonic() - job.answered
    if silent > job.peer_timeout_s and not job.closing:
      _leave(
        f"error: stopping: process 0 (the coordination service) stopped responding: no answer "
        f"for {silent:.0f} s (process 0 hung, or its host lost; see its log)",
        EXIT_PEER_LOST,
        None,
      )
