"""The largest per-chip batch whose compiled train step fits a chip, in few compiles.

Method (secant on an affine memory model, verified): for a fixed program, the compiled step's
per-chip bytes are affine in the batch (the state is fixed; activations grow with the clips):
``bytes(b) = fixed + per_clip * b``. Two compiles fit the line; the largest batch under the
capacity is predicted; compiling the prediction (must fit) and the next batch (must not) verifies
it, usually four compiles in all. Where XLA bends the line (padding, its own rematerialisation
near the capacity), a verification that disagrees narrows the bracket [largest batch that fits,
smallest that does not] and the line is refitted through the measurements nearest the boundary;
a prediction outside the bracket is replaced by bisection. The search ends when the bracket
closes (``exact``) or after ``max_compiles`` (the largest batch seen to fit, not ``exact``).

Pure: ``measure`` compiles (or, in tests, fakes a compile).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

METHOD = (
  "affine memory model bytes(b) = fixed + per_clip * b fitted through two compiles, prediction "
  "verified by compiling it and the next batch; bracket and bisection where the line bends"
)


@dataclasses.dataclass(frozen=True)
class Probe:
  """One compile: the per-chip batch, the per-chip bytes it needs (None: unknown) and whether it
  fits the chip."""

  batch: int
  bytes: int | None
  fits: bool


@dataclasses.dataclass(frozen=True)
class SearchResult:
  max_batch: int  # the largest batch seen to fit (0: not even the smallest tried fits)
  exact: bool  # max_batch + 1 was compiled and does not fit (or max_batch is 0 and 1 fails)
  probes: tuple[Probe, ...]  # every compile, in order
  method: str = METHOD


def predict(a: Probe, b: Probe, capacity: int) -> int | None:
  """The largest batch on the line through two measurements whose bytes fit ``capacity``;
  None when the line does not rise with the batch (no prediction)."""
  if a.bytes is None or b.bytes is None or a.batch == b.batch:
    return None
  per_clip = (b.bytes - a.bytes) / (b.batch - a.batch)
  if per_clip <= 0:
    return None
  fixed = a.bytes - per_clip * a.batch
  return int((capacity - fixed) // per_clip)


def _line(probes: dict[int, Probe]) -> tuple[Probe, Probe] | None:
  """The two measurements nearest the boundary: the largest that fits and the smallest that
  does not, else the two nearest each other at the side that is known."""
  known = sorted((p for p in probes.values() if p.bytes is not None), key=lambda p: p.batch)
  if len(known) < 2:
    return None
  fit = [p for p in known if p.fits]
  over = [p for p in known if not p.fits]
  if fit and over:
    return fit[-1], over[0]
  return (known[-2], known[-1]) if fit else (known[0], known[1])


def _bracket(probes: dict[int, Probe]) -> tuple[int, int | None]:
  """(largest batch that fits, 0 if none; smallest that does not, None if none)."""
  lo = max((p.batch for p in probes.values() if p.fits), default=0)
  hi = min((p.batch for p in probes.values() if not p.fits), default=None)
  return lo, hi


def _next_batch(probes: dict[int, Probe], capacity: int) -> int:
  """The next batch to compile: the prediction, then the batch after it, else a bisection."""
  lo, hi = _bracket(probes)
  line = _line(probes)
  guess = predict(*line, capacity) if line else None
  if guess is not None:
    guess = max(guess, lo, 1)
    if hi is not None:
      guess = min(guess, hi - 1)
    for b in (guess, guess + 1):
      if b not in probes and (hi is None or b < hi) and b > lo:
        return b
  if hi is None:
    return max(2 * lo, 1)
  return (lo + hi) // 2


def find_max_batch(
  measure: Callable[[int], Probe],
  capacity: int,
  first: tuple[int, int],
  max_compiles: int = 8,
) -> SearchResult:
  """The largest batch ``b`` with ``measure(b).fits``, assuming fits is monotone in ``b``.
  ``capacity``: bytes per chip (for the predictions); ``first``: the two batches compiled to fit
  the line; ``max_compiles``: the most calls to ``measure``."""
  probes: dict[int, Probe] = {}
  order: list[Probe] = []

  def run(b: int) -> None:
    p = measure(b)
    probes[b] = p
    order.append(p)

  for b in dict.fromkeys(max(1, x) for x in first):
    run(b)
  while len(order) < max_compiles:
    lo, hi = _bracket(probes)
    if hi is not None and hi == lo + 1:
      break
    run(_next_batch(probes, capacity))
  lo, hi = _bracket(probes)
  return SearchResult(max_batch=lo, exact=hi == lo + 1, probes=tuple(order))


# ----------------------------------------------------------------------------- depth extrapolation

DEPTH_METHOD = (
  "bilinear memory model bytes(L, b) = c0 + c1*L + c2*b + c3*L*b (state per layer, activations "
  "per layer and clip) fitted exactly through compiles at two depths x two batches, evaluated at "
  "the full depth"
)


@dataclasses.dataclass(frozen=True)
class DepthModel:
  """Per-chip bytes of the step as a function of encoder layers ``L`` and per-chip batch ``b``
  (DEPTH_METHOD): the encoder is unrolled, so each layer adds its state (c1) and its saved
  activations per clip (c3)."""

  c0: float
  c1: float
  c2: float
  c3: float

  def bytes(self, layers: int, batch: int) -> float:
    return self.c0 + self.c1 * layers + self.c2 * batch + self.c3 * layers * batch

  def max_batch(self, layers: int, capacity: int) -> int:
    """The largest batch whose predicted bytes fit ``capacity`` (0: none)."""
    per_clip = self.c2 + self.c3 * layers
    return max(0, int((capacity - self.c0 - self.c1 * layers) // per_clip))


def fit_depth_model(points: dict[tuple[int, int], int]) -> DepthModel:
  """The DepthModel through four measurements {(layers, batch): bytes} at two depths x two
  batches."""
  (l1, l2), (b1, b2) = sorted({k[0] for k in points}), sorted({k[1] for k in points})
  if len(points) != 4 or l1 == l2 or b1 == b2:
    raise ValueError(f"need compiles at two depths x two batches, got {sorted(points)}")
  slope_b1 = (points[l2, b1] - points[l1, b1]) / (l2 - l1)  # c1 + c3*b1
  slope_b2 = (points[l2, b2] - points[l1, b2]) / (l2 - l1)  # c1 + c3*b2
  c3 = (slope_b2 - slope_b1) / (b2 - b1)
  c1 = slope_b1 - c3 * b1
  per_clip_l1 = (points[l1, b2] - points[l1, b1]) / (b2 - b1)  # c2 + c3*l1
  c2 = per_clip_l1 - c3 * l1
  c0 = points[l1, b1] - c1 * l1 - c2 * b1 - c3 * l1 * b1
  return DepthModel(c0, c1, c2, c3)
