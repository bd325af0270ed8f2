"""Progress of long stages, with counts and an ETA, for a person at a terminal and for log files.

  for item in progress(items, total=len(items), desc="decode", unit="files"):
    ...

On a terminal (``stream.isatty()``) this is tqdm's bar. Anywhere else (CI logs, a pod worker's log
file) tqdm's carriage-return redraws would be noise, so it prints plain lines instead:

  decode: 0/480 files (0%)
  decode: 120/480 files (25%), 1m02s elapsed, ETA 3m06s
  decode: 480/480 files (100%), done in 4m08s

one when the stage starts, then one each time another ``LINE_EVERY_PERCENT`` of the total is done
(but not within ``LINE_MIN_SECONDS`` of the last line, so a quick stage prints only its first and
last line) or ``LINE_HEARTBEAT_SECONDS`` after the last line (a slow stage), and a final line.
tqdm has no such line mode (its ``mininterval`` still redraws one line with '\\r'), hence
``LineProgress``, which keeps tqdm's ``update`` / ``close`` / ``set_postfix_str`` / ``total`` /
``n`` surface so callers treat both alike. Both go to ``stream`` (default: ``sys.stderr`` at call
time) and nothing is printed when ``enabled`` is False.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LINE_EVERY_PERCENT = 10.0  # line mode: a line each time this much more of the total is done,
LINE_MIN_SECONDS = 5.0  # ... but at most one per this many seconds,
LINE_HEARTBEAT_SECONDS = 60.0  # ... and one this long after the last line whatever the progress
_MINUTE, _HOUR = 60, 3600


def utc_text(t: float) -> str:
  """A Unix time as ``2026-12-08 03:59:05 UTC`` (in files and lines a person reads)."""
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float) -> str:
  """``45s``, ``1m02s``, ``2h05m``: whole seconds under an hour, whole minutes above (hours keep
  counting past 24); ``?`` when not finite."""
  if not math.isfinite(seconds):
    return "?"
  s = max(0, int(round(seconds)))
  if s < _MINUTE:
    return f"{s}s"
  if s < _HOUR:
    return f"{s // _MINUTE}m{s % _MINUTE:02d}s"
  return f"{s // _HOUR}h{s % _HOUR // _MINUTE:02d}m"


def eta_seconds(done: int, total: int | None, elapsed: float) -> float | None:
  """Seconds left at the mean rate so far (``elapsed`` seconds for ``done`` items), or None when
  unknown (nothing done yet, no total)."""
  if total is None or done <= 0:
    return None
  return elapsed / done * max(total - done, 0)


def progress_line(
  desc: str,
  done: int,
  total: int | None,
  unit: str,
  elapsed: float | None,
  *,
  final: bool = False,
  postfix: str = "",
) -> str:
  """One line-mode line: ``decode: 120/480 files (25%), 1m02s elapsed, ETA 3m06s``.

  ``elapsed``: seconds since the stage started (None on the starting line); ``final``: the
  closing line (``done in`` when every item is done, ``stopped after`` otherwise)."""
  count = f"{done}/{total}" if total is not None else f"{done}"
  parts = [f"{desc}: {count} {unit}".rstrip()]
  if total:
    parts[0] += f" ({100.0 * done / total:.0f}%)"
  if elapsed is not None:
    if final:
      finished = total is None or done >= total
      parts.append(f"{'done in' if finished else 'stopped after'} {format_duration(elapsed)}")
    else:
      parts.append(f"{format_duration(elapsed)} elapsed")
      eta = eta_seconds(done, total, elapsed)
      if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
  if postfix:
    parts.append(postfix)
  return ", ".join(parts)


def counted_line(index: int, total: int, text: str, elapsed: float) -> str:
  """A per-item result line with the position and ETA: ``[12/300] wrote X, 1m02s elapsed, ETA
  24m41s`` (``index`` counts from 1; ``elapsed``: seconds since the first item started)."""
  line = f"[{index}/{total}] {text}, {format_duration(elapsed)} elapsed"
  eta = eta_seconds(index, total, elapsed)
  return line + (f", ETA {format_duration(eta)}" if eta else "")


class LineProgress:
  """tqdm's manual interface (``update``, ``close``, ``set_postfix_str``, ``n``, ``total``) that
  prints whole lines, never '\\r' (see the module docstring for when)."""

  def __init__(
    self,
    total: int | None,
    desc: str,
    unit: str = "",
    stream: TextIO | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    every_percent: float = LINE_EVERY_PERCENT,
    min_seconds: float = LINE_MIN_SECONDS,
    heartbeat_seconds: float = LINE_HEARTBEAT_SECONDS,
  ):
    """``clock``: seconds (monotonic; tests pass a fake one); the rest: see the constants."""
    self.total, self.desc, self.unit = total, desc, unit
    self.stream = stream if stream is not None else sys.stderr
    self.clock, self.every_percent = clock, every_percent
    self.min_seconds, self.heartbeat_seconds = min_seconds, heartbeat_seconds
    self.n, self.postfix, self.closed = 0, "", False
    self.start = self.last_time = clock()
    self.last_n = 0
    self._print(progress_line(desc, 0, total, unit, None))

  def _print(self, line: str) -> None:
    self.stream.write(line + "\n")
    self.stream.flush()

  def _due(self, now: float) -> bool:
    """Whether another line is due: enough more of the total done (and not too soon after the
    last line), or a heartbeat's time gone."""
    since = now - self.last_time
    if since >= self.heartbeat_seconds:
      return True
    more = bool(self.total) and 100.0 * (self.n - self.last_n) / self.total >= self.every_percent
    return more and since >= self.min_seconds

  def update(self, n: int = 1) -> None:
    """``n`` more items done; prints a line when one is due (the last one waits for ``close``)."""
    self.n += n
    now = self.clock()
    if self.total is not None and self.n >= self.total:
      return
    if self._due(now):
      elapsed = now - self.start
      self._print(
        progress_line(self.desc, self.n, self.total, self.unit, elapsed, postfix=self.postfix)
      )
      self.last_n, self.last_time = self.n, now

  def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
    """Text appended to the following lines (as tqdm's postfix; ``refresh`` is ignored)."""
    del refresh
    self.postfix = s

  def close(self) -> None:
    """The final line (once): ``done in`` when every item is done, else ``stopped after``."""
    if self.closed:
      return
    self.closed = True
    elapsed = self.clock() - self.start
    self._print(
      progress_line(
        self.desc, self.n, self.total, self.unit, elapsed, final=True, postfix=self.postfix
      )
    )

  def __enter__(self) -> LineProgress:
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def is_terminal(stream: TextIO) -> bool:
  """Whether ``stream`` is a terminal (False for files, pipes, closed or odd streams)."""
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError, OSError):
    return False


def bar(
  total: int | None,
  desc: str,
  unit: str = "it",
  stream: TextIO | None = None,
  enabled: bool = True,
  *,
  clock: Callable[[], float] = time.monotonic,
) -> tqdm | LineProgress:
  """A progress object to ``update(n)`` and ``close()``: tqdm on a terminal, ``LineProgress``
  elsewhere, a disabled (silent) tqdm when not ``enabled``. It prints its first line when made."""
  if not enabled:
    return tqdm(total=total, disable=True)
  stream = stream if stream is not None else sys.stderr
  if is_terminal(stream):
    return tqdm(total=total, desc=desc, unit=unit or "it", file=stream)
  return LineProgress(total, desc, unit, stream, clock=clock)


def progress(
  iterable: Iterable[T],
  total: int | None = None,
  desc: str = "",
  unit: str = "it",
  stream: TextIO | None = None,
  enabled: bool = True,
  *,
  clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
  """Yields ``iterable``'s items, counting each once the consumer is done with it (when it asks
  for the next). ``total``: defaults to ``len(iterable)`` when it has one. Lazy: nothing is
  printed before the first item is asked for, so an iterable that is never consumed stays
  silent. The final line comes when the iterable ends, or the loop is left early."""
  if total is None and hasattr(iterable, "__len__"):
    total = len(iterable)  # type: ignore[arg-type]
  p = bar(total, desc, unit, stream, enabled, clock=clock)
  try:
    for item in iterable:
      yield item
      p.update(1)
  finally:
    p.close()


@contextlib.contextmanager
def stage(
  desc: str,
  stream: TextIO | None = None,
  *,
  clock: Callable[[], float] = time.monotonic,
) -> Iterator[None]:
  """One uncountable step (reading a 1B-parameter checkpoint, writing a safetensors file): a line
  ``desc...`` before and ``desc: done in 12s`` after, so a long silence has a name. Lines on any
  stream, terminal or not."""
  out = stream if stream is not None else sys.stderr
  out.write(f"{desc}...\n")
  out.flush()
  start = clock()
  yield
  out.write(f"{desc}: done in {format_duration(clock() - start)}\n")
  out.flush()


@contextlib.contextmanager
def log_level(level: int) -> Iterator[None]:
  """The root logger at ``level`` for the ``with`` block (then as before): quiets a library's
  import-time warnings."""
  root = logging.getLogger()
  before = root.level
  root.setLevel(level)
  try:
    yield
  finally:
    root.setLevel(before)
