"""Why a checkpoint cannot be used, in one line: the errors, and the cause and the array named from
orbax's and tensorstore's nested exceptions.
"""

from __future__ import annotations

import re
from typing import Any


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or used; the message is one line naming it."""


class CorruptCheckpoint(CheckpointError, ValueError):
  """A checkpoint that does not verify: a file missing or unreadable, or an array whose contents
  differ from what was saved. (Also a ValueError: the convert and extract commands report bad
  inputs as one ``error:`` line.)"""

  def __init__(self, step: int | None, path: Any, reason: str):
    self.step, self.path, self.reason = step, path, reason
    name = f"checkpoint {step} ({path})" if step is not None else f"checkpoint {path}"
    super().__init__(f"{name} does not verify: {reason}")


def exception_chain(e: BaseException) -> list[BaseException]:
  """``e`` and the exceptions it was raised from, outermost first."""
  out, cur = [], e
  while cur is not None and all(cur is not x for x in out):
    out.append(cur)
    cur = cur.__cause__ or cur.__context__
  return out


def root_cause(e: BaseException) -> BaseException:
  """The OSError behind ``e`` if there is one (orbax and tensorstore wrap them), else the
  innermost exception: tensorstore's outer message only says which slice failed, the inner one
  says why (e.g. ``OUT_OF_RANGE: ... byte range ... not valid for value of size 1000``)."""
  chain = exception_chain(e)
  return next((x for x in chain if isinstance(x, OSError)), chain[-1])


# A failed tensorstore read names the array in its kvstore spec: 'path': 'params.backbone....'.
_TS_PATH = re.compile(r"'path': '([A-Za-z0-9_.\-]+)/?'")


def failed_leaf(e: BaseException) -> str | None:
  """The array a failed tensorstore read names (``params/backbone/...``), or None."""
  found = [m for x in exception_chain(e) for m in _TS_PATH.findall(str(x))]
  names = [m for m in found if "." in m or m.isidentifier()]
  return names[-1].replace(".", "/") if names else None
