"""Training metrics: the loss terms from summed counts, metrics.jsonl and TensorBoard event files
(process 0 only; the console lines are console.py's), and the peak FLOP/s per device kind used for
MFU."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from mert_jax import workdir_files
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_write_text

RUNS = ("train", "eval", "probe")  # TensorBoard runs: WORKDIR/tb/train, WORKDIR/tb/eval, ...
JSONL_PREFIX = {
  "train": "",
  "eval": "eval_",
  "probe": "probe_",
}  # metrics.jsonl keys of each run's rows
_WRITERS_OPENED = itertools.count()  # makes each event file's name unique (see tensorboard())

# Dense bf16 peak FLOP/s per chip, by jax.Device.device_kind (vendor figures; an H100 SXM's measured
# dense matmul peak is lower, ~792 TFLOP/s per the project's reference). Unknown kinds: no MFU.
PEAK_BF16_FLOPS = {
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,
  "NVIDIA H100 80GB HBM3": 989e12,
  "NVIDIA H100": 989e12,
  "NVIDIA H200": 989e12,
  "NVIDIA A100-SXM4-80GB": 312e12,
  "NVIDIA A100-SXM4-40GB": 312e12,
}


# What a step sums over its micro-batches (or an evaluation over its batches) before normalising.
# code_counts: (K, C) target codes on the masked frames (the prior baseline, train/health.py).
SUMMED = (
  "loss_sum",
  "num_masked",
  "ce_sum",
  "correct",
  "cqt_sq_sum",
  "pen_weighted",
  "code_counts",
)


def normalise_sums(sums: dict[str, Any], cqt_bins: int) -> dict[str, Any]:
  """Per-masked-frame loss terms from sums over masked frames: the one place they are normalised.

  Works on jax arrays (inside the jitted step) and on numpy float64 (evaluation on the host).
  loss_codes sums the K codebooks' cross-entropies; loss_cqt is per CQT bin; accuracy is (K,)."""
  xp = jnp if any(isinstance(v, jax.Array) for v in sums.values()) else np
  n = xp.maximum(sums["num_masked"], 1.0)
  return {
    "loss": sums["loss_sum"] / n,
    "loss_codes": xp.sum(sums["ce_sum"]) / n,
    "loss_cqt": sums["cqt_sq_sum"] / (n * cqt_bins),
    "features_pen": sums["pen_weighted"] / n,
    "accuracy": sums["correct"] / n,
    "num_masked": sums["num_masked"],
  }


def peak_flops_per_device(device: jax.Device) -> float | None:
  return PEAK_BF16_FLOPS.get(device.device_kind)


class _NoTensorBoard:
  """What ``MetricWriter.tensorboard`` returns on processes that write nothing: every
  SummaryWriter method, doing nothing."""

  def __getattr__(self, name: str) -> Callable[..., None]:
    return lambda *args, **kwargs: None


def scalars(metrics: dict[str, Any]) -> list[tuple[str, float]]:
  """(tag, value) of every number of a metric row (``step`` aside); a list ``accuracy`` gives
  ``accuracy/0``, ``accuracy/1``, ..."""
  out = []
  for k, v in metrics.items():
    if k == "step":
      continue
    if isinstance(v, list):
      out.extend((f"{k}/{i}", float(x)) for i, x in enumerate(v))
    elif isinstance(v, (int, float, bool)):
      out.append((k, float(v)))
  return out


class MetricWriter:
  """Appends {"step": ..., metrics} lines to WORKDIR/metrics.jsonl and scalars to TensorBoard.

  Each run of ``RUNS`` has its own TensorBoard folder, WORKDIR/tb/RUN, under the same tag names
  (``loss``, ``accuracy/0``, ...), so TensorBoard overlays training and evaluation curves; in
  metrics.jsonl an evaluation's keys carry ``JSONL_PREFIX["eval"]`` (``eval_loss``).

  A resumed run replays the steps after its checkpoint: ``resume(step)`` first drops the rows of
  those steps from metrics.jsonl (rewritten atomically) and opens every run's event file with
  ``purge_step=step + 1``, which makes TensorBoard hide the older events of the replayed steps, so
  every step appears once in both.

  An object store cannot append (gcsfs silently replaces the object instead): in a bucket the
  writer keeps the file's text and uploads it whole, atomically, with each new row."""

  def __init__(
    self, workdir: str, enabled: bool = True, guard: Callable[[int, str], None] | None = None
  ):
    self.enabled = enabled
    self.guard = guard  # called (step, what) before each write: raises if the run lost the workdir
    self.dir = epath.Path(workdir)
    self._tb: dict[str, Any] = {}  # run -> SummaryWriter, each opened at its first use
    self._purge_step: int | None = None
    self._remote = storage.is_remote(workdir)
    self._text: str | None = None  # in a bucket: metrics.jsonl as last uploaded

  @property
  def path(self) -> epath.Path:
    return self.dir / workdir_files.METRICS

  def resume(self, step: int) -> list[dict[str, Any]]:
    """The run continues after ``step``: drop the logged rows of later steps (see the class);
    returns the dropped rows that parse (what a restart has to do again)."""
    if not self.enabled:
      return []
    self._purge_step = step + 1
    self.close()  # reopened with the purge step
    for run in RUNS:  # a run with events gets the purge even if this session never writes to it
      if (self.dir / workdir_files.TENSORBOARD / run).exists():
        self.tensorboard(run)
    if not self.path.exists():
      return []
    kept, dropped = [], []
    for line in self.path.read_text().splitlines():
      (dropped if _after(line, step) else kept).append(line)
    if dropped:
      self._text = "".join(line + "\n" for line in kept)
      atomic_write_text(self.path, self._text)
      logging.info("metrics.jsonl: dropped %d rows after step %d", len(dropped), step)
    rows = []
    for line in dropped:
      with contextlib.suppress(ValueError):  # a torn line counts as dropped but holds no row
        rows.append(json.loads(line))
    return rows

  def tensorboard(self, run: str) -> Any:
    """The tensorboardX SummaryWriter of ``run`` ("train" or "eval"), opened at the first call
    with the resume's purge step, flushed and closed by ``close()``; on a process that writes
    nothing, an object whose methods do nothing."""
    if run not in RUNS:
      raise ValueError(f"TensorBoard run {run!r}: one of {RUNS}")
    if not self.enabled:
      return _NoTensorBoard()
    if run not in self._tb:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      # A suffix unique to this writer: two writers opened within the same second (the file name
      # holds the time in seconds) must not truncate each other's file.
      suffix = f".{os.getpid()}.{next(_WRITERS_OPENED)}"
      self._tb[run] = SummaryWriter(
        str(self.dir / workdir_files.TENSORBOARD / run),
        purge_step=self._purge_step,
        filename_suffix=suffix,
      )
    return self._tb[run]

  def write(self, step: int, metrics: dict[str, Any], run: str = "train") -> None:
    """One metrics.jsonl row (keys prefixed per ``JSONL_PREFIX``) and ``run``'s scalars."""
    if not self.enabled:
      return
    if self.guard is not None:
      self.guard(step, f"writing {run} metrics")
    prefix = JSONL_PREFIX[run]
    row = {"step": step, **{prefix + k: v for k, v in metrics.items() if k != "step"}}
    self._append(json.dumps(row) + "\n")
    tb = self.tensorboard(run)
    for tag, value in scalars(metrics):
      tb.add_scalar(tag, value, step)
    tb.flush()

  def _append(self, line: str) -> None:
    if not self._remote:
      with self.path.open("a") as f:
        f.write(line)
      return
    if self._text is None:
      self._text = self.path.read_text() if self.path.exists() else ""
    self._text += line
    atomic_write_text(self.path, self._text)

  def close(self) -> None:
    """Flushes and closes the TensorBoard writers (a later use reopens them)."""
    for tb in self._tb.values():
      tb.close()
    self._tb = {}


def _after(line: str, step: int) -> bool:
  """Whether a metrics.jsonl line is a row of a step after ``step`` (a torn line counts as one)."""
  try:
    return int(json.loads(line)["step"]) > step
  except (ValueError, KeyError, TypeError):
    return True
