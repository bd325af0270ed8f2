"""An exception as one line of a one-line error."""

from __future__ import annotations


def one_line(e: BaseException, limit: int = 240) -> str:
  """``Type: message`` of an exception on one line, at most ``limit`` characters of message."""
  text = " ".join(str(e).split())
  if len(text) > limit:
    text = text[:limit] + " ..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__
