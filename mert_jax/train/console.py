"""What a person sees while training (process 0 prints it; loop.py calls these): a start-up
summary, the compile lines, one line per logged step with steps/s, clips/s, MFU and an ETA, and one
per evaluation.

Formatting functions take plain values and return strings (tested directly). ``Pace`` measures
training throughput from an injectable clock: over the window since the previous logged row,
excluding the intervals spent outside training (compilation happens before it starts; evaluations,
checkpoint saves and each row's own writes are wrapped in ``paused()``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Sequence

from mert_jax.terminal.progress import (
  format_duration,  # one duration format for every progress line
)

LABEL_WIDTH = 10  # the summary's label column
RECENT_ROWS = 5  # logged windows whose pooled rate gives the ETA
PARAM_UNITS = ((1e9, "B"), (1e6, "M"), (1e3, "K"))  # parameter counts: 94.4M
HOURS_WHOLE_FROM = 10.0  # data hours at or above this print without decimals
WHOLE_RATE_FROM = 100.0  # steps/s and clips/s at or above this print without decimals
COMPILING = "compiling the train step..."


# ############################################################ small formatters


def format_count(n: int) -> str:
  """A parameter count as ``94.4M``, ``1.23B``, ``812K`` or ``512``."""
  for scale, unit in PARAM_UNITS:
    if n >= scale:
      return f"{n / scale:.3g}{unit}"
  return str(n)


def format_hours(hours: float) -> str:
  """Hours of audio: ``0.13 h``, ``160,000 h``."""
  return f"{hours:,.0f} h" if hours >= HOURS_WHOLE_FROM else f"{hours:.2f} h"


def format_rate(x: float) -> str:
  """A rate to about 3 significant digits without an exponent: ``0.409``, ``52.1``, ``3,072``."""
  return f"{x:,.0f}" if x >= WHOLE_RATE_FROM else f"{x:.3g}"


def plural(n: int, word: str, words: str | None = None) -> str:
  """``1 shard``, ``2 shards``; ``words``: an irregular plural (``processes``)."""
  return f"{n} {word if n == 1 else words or word + 's'}"


# ############################################################ start-up summary


@dataclasses.dataclass(frozen=True)
class RunSummary:
  """What the start-up summary shows, as plain values."""

  variant: str
  params: int  # whole model (backbone + pretraining heads)
  backbone_params: int  # what a Hugging Face export holds
  platform: str  # jax.Device.platform: cpu, gpu, tpu
  device_kind: str  # jax.Device.device_kind
  num_devices: int
  num_processes: int
  mesh: dict[str, int]  # axis name -> size, in mesh order
  batch_shards: int  # devices that hold different clips (sharding.batch_shards)
  batch_size: int  # global clips per update
  clip_seconds: float
  grad_accum_steps: int
  splits: dict[str, tuple[float, int]]  # split -> (hours, shards)
  data_dir: str
  workdir: str
  start: str  # start_point(...)
  total_steps: int

  @property
  def per_device_batch(self) -> int:
    """Clips each device computes per micro-batch."""
    return self.batch_size // self.grad_accum_steps // self.batch_shards


def start_point(restored_step: int | None, init_from: str | None = None) -> str:
  """Where the run starts: ``from scratch``, ``resuming from checkpoint N`` or ``init_from
  SOURCE`` (``init_from``: the source as shown, e.g. ``PATH (kind)``)."""
  if restored_step is not None:
    return f"resuming from checkpoint {restored_step}"
  if init_from:
    return f"init_from {init_from}"
  return "from scratch"


def summary_lines(s: RunSummary) -> list[str]:
  """The start-up summary: a label column and one line each for the model, devices, batch, data,
  workdir and start point."""
  kind = s.platform if s.device_kind.lower() == s.platform else f"{s.device_kind} ({s.platform})"
  mesh = " x ".join(f"{name} {size}" for name, size in s.mesh.items())
  data = ", ".join(
    f"{split} {format_hours(hours)} in {plural(shards, 'shard')}"
    for split, (hours, shards) in s.splits.items()
  )
  rows = [
    (
      "model",
      f"MERT {s.variant}: {format_count(s.params)} parameters "
      f"(backbone {format_count(s.backbone_params)}, heads "
      f"{format_count(s.params - s.backbone_params)})",
    ),
    (
      "devices",
      f"{s.num_devices} x {kind}, {plural(s.num_processes, 'process', 'processes')}; mesh {mesh}",
    ),
    (
      "batch",
      f"{s.batch_size} clips of {s.clip_seconds:g} s per step = {s.per_device_batch} per device "
      f"x {plural(s.batch_shards, 'batch shard')} x "
      f"{plural(s.grad_accum_steps, 'micro-batch', 'micro-batches')}",
    ),
    ("data", f"{data} ({s.data_dir})"),
    ("workdir", s.workdir),
    ("start", f"{s.start}; training to step {s.total_steps}"),
  ]
  return [f"{label:<{LABEL_WIDTH}}{text}" for label, text in rows]


# ############################################################ compile, steps, evaluations


def compiled_line(seconds: float) -> str:
  return f"compiled in {seconds:.1f} s"


def _step_field(step: int, total: int) -> str:
  return f"{step:>{len(str(total))}d}/{total}"


def _loss_fields(metrics: dict[str, Any]) -> list[str]:
  """``loss``, ``codes``, ``cqt`` and mean per-codebook ``acc`` of a metric row."""
  acc = metrics["accuracy"]
  acc = sum(acc) / len(acc) if isinstance(acc, Sequence) else acc
  return [
    f"loss {metrics['loss']:.4f}",
    f"codes {metrics['loss_codes']:.4f}",
    f"cqt {metrics['loss_cqt']:.4f}",
    f"acc {acc:.3f}",
  ]


def step_line(step: int, total: int, row: dict[str, Any]) -> str:
  """``step 10/30  loss ...  codes ...  cqt ...  acc ...  lr ...  |  2.31 steps/s  18.5 clips/s
  MFU 12.3%  ETA 9s`` of a training row (its losses, ``lr``, ``steps_per_s``, ``clips_per_s``,
  ``eta_s``, ``mfu`` when the device peak is known, and ``nonfinite N`` when steps were
  skipped)."""
  left = [f"step {_step_field(step, total)}", *_loss_fields(row), f"lr {row['lr']:.3g}"]
  if row.get("nonfinite_total"):
    left.append(f"nonfinite {row['nonfinite_total']}")
  right = [
    f"{format_rate(row['steps_per_s'])} steps/s",
    f"{format_rate(row['clips_per_s'])} clips/s",
  ]
  if row.get("mfu") is not None:
    right.append(f"MFU {row['mfu']:.1%}")
  right.append(f"ETA {format_duration(row['eta_s'])}")
  return "  ".join(left) + "  |  " + "  ".join(right)


def eval_line(step: int, total: int, scores: dict[str, Any], seconds: float) -> str:
  """``eval 20/30  loss ...  codes ...  cqt ...  acc ...  prior ...  rank ...  |  4.1 s``: with
  the health numbers (train/health.py), the training prior's mean accuracy and the lowest
  layer's effective rank."""
  fields = [f"eval {_step_field(step, total)}", *_loss_fields(scores)]
  if "prior_accuracy" in scores:
    fields.append(f"prior {sum(scores['prior_accuracy']) / len(scores['prior_accuracy']):.4f}")
  ranks = [v for k, v in scores.items() if k.startswith("rank_l")]
  if ranks:
    fields.append(f"rank {min(ranks):.1f}")
  return "  ".join(fields) + f"  |  {seconds:.1f} s"


def probe_line(step: int, total: int, scores: dict[str, Any], seconds: float) -> str:
  """``probe 20/30  pitch 0.412  instrument 0.380  |  12.0 s``: each task's weighted-sum test
  metric (mert_jax/train/probing.py)."""
  tasks = [f"{k} {v:.3f}" for k, v in scores.items() if "_" not in k]
  return "  ".join([f"probe {_step_field(step, total)}", *tasks]) + f"  |  {seconds:.1f} s"


# ############################################################ throughput


@dataclasses.dataclass(frozen=True)
class Rate:
  """Training pace at a logged row."""

  steps_per_s: float  # over the window since the previous row, pauses excluded
  step_time_s: float  # seconds per step, the inverse
  eta_s: float  # the remaining steps at the pooled rate of the recent windows


class Pace:
  """Steps per second between logged rows, and an ETA, excluding time spent outside training.

  Create it when training starts (after the compile, so the first row never includes it); wrap
  evaluations, checkpoint saves and the rows' writes in ``paused()``; call ``row(step)`` at each
  logged step, after the step's results reached the host (so the window holds the device's work).
  ``clock``: seconds, monotonic (``time.perf_counter``; tests pass a fake one)."""

  def __init__(
    self,
    step: int,
    total_steps: int,
    clock: Callable[[], float] = time.perf_counter,
    recent_rows: int = RECENT_ROWS,
  ):
    self._clock, self._total = clock, total_steps
    self._step, self._since, self._paused = step, clock(), 0.0
    self._recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=recent_rows)

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """The time spent inside does not count as training."""
    start = self._clock()
    try:
      yield
    finally:
      self._paused += self._clock() - start

  def row(self, step: int) -> Rate:
    """The pace of the window that ends at ``step`` (which must be past the previous row's)."""
    if step <= self._step:
      raise ValueError(f"row at step {step}: the previous row was at step {self._step}")
    now = self._clock()
    steps, busy = step - self._step, now - self._since - self._paused
    self._recent.append((steps, busy))
    self._step, self._since, self._paused = step, now, 0.0
    steps_per_s = _rate(steps, busy)
    pooled = _rate(sum(n for n, _ in self._recent), sum(t for _, t in self._recent))
    eta = (self._total - step) / pooled if pooled > 0 else math.inf
    return Rate(
      steps_per_s=steps_per_s,
      step_time_s=1.0 / steps_per_s if steps_per_s > 0 else math.inf,
      eta_s=eta,
    )


def _rate(steps: int, seconds: float) -> float:
  """Steps per second; infinite for a window the clock could not resolve."""
  return steps / seconds if seconds > 0 else math.inf
