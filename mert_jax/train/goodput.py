"""Goodput: where a run's wall time went, as a person watching a pod wants it (the account MaxText
and levanter users ask for). Each train() keeps one ``Goodput``; the loop times its phases with
``phase(name)``; the time no phase claims is the training steps' (dispatch and the device work the
loop waits for). Steps a restart had to do again (they were trained before the crash but after the
checkpoint it resumed from) are subtracted from the steps' time.

``goodput`` = (training-step seconds - replayed seconds) / wall seconds since train() began. The
interpreter's start and JAX's import before train() are not counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

# The phases, in the order the summary line lists them.
PHASES = ("startup", "restore", "compile", "input", "checkpoint", "evaluation", "probe", "logging")


@dataclasses.dataclass
class Goodput:
  """Seconds per phase of one run; ``clock`` gives seconds (tests pass a fake one)."""

  clock: Callable[[], float]
  began: float = dataclasses.field(init=False)
  seconds: dict[str, float] = dataclasses.field(init=False)
  replayed_s: float = 0.0  # steps a restart does again (estimated from the dropped metric rows)

  def __post_init__(self):
    self.began = self.clock()
    self.seconds = dict.fromkeys(PHASES, 0.0)

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    """Counts the time inside the block as ``name``'s."""
    start = self.clock()
    try:
      yield
    finally:
      self.seconds[name] += self.clock() - start

  def until_now(self, name: str) -> None:
    """Counts everything since the run began that no phase claimed as ``name``'s (start-up)."""
    self.seconds[name] += max(self.clock() - self.began - sum(self.seconds.values()), 0.0)

  def replayed(self, dropped_rows: list[dict[str, Any]], resumed_at: int) -> None:
    """The steps after ``resumed_at`` that a previous run had logged (their metric rows are
    dropped on resume): their count times their mean logged step time."""
    times = [r["step_time_s"] for r in dropped_rows if "step_time_s" in r]
    steps = [r["step"] for r in dropped_rows if "step" in r]
    if times and steps:
      self.replayed_s = (max(steps) - resumed_at) * sum(times) / len(times)

  def account(self) -> dict[str, float]:
    """{"goodput": fraction, "time_total_s", "time_steps_s", "time_replayed_s",
    "time_PHASE_s" for each phase}."""
    total = self.clock() - self.began
    steps = max(total - sum(self.seconds.values()), 0.0)
    productive = max(steps - self.replayed_s, 0.0)
    return {
      "goodput": productive / total if total > 0 else 0.0,
      "time_total_s": total,
      "time_steps_s": steps,
      "time_replayed_s": self.replayed_s,
      **{f"time_{name}_s": s for name, s in self.seconds.items()},
    }


def summary_line(account: dict[str, float]) -> str:
  """``goodput 81.2% of 512 s: steps 430 s, compile 40 s, ...`` (phases with time only)."""
  parts = [f"steps {account['time_steps_s']:.1f} s"]
  parts += [
    f"{name} {account[f'time_{name}_s']:.1f} s"
    for name in PHASES
    if account[f"time_{name}_s"] >= 0.05
  ]
  if account["time_replayed_s"] > 0:
    parts.append(f"replayed after a restart {account['time_replayed_s']:.1f} s")
  return f"goodput {account['goodput']:.1%} of {account['time_total_s']:.1f} s: " + ", ".join(parts)
