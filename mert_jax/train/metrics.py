"""Training metrics: the loss terms from summed counts, metrics.jsonl, TensorBoard event files and
a console line (process 0 only), and the peak FLOP/s per device kind used for MFU."""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from data_pipeline.atomic import atomic_write_text

METRICS_FILE, TB_DIR = "metrics.jsonl", "tb"

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
SUMMED = ("loss_sum", "num_masked", "ce_sum", "correct", "cqt_sq_sum", "pen_weighted")


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


class MetricWriter:
  """Appends {"step": ..., metrics} lines to WORKDIR/metrics.jsonl and scalars to WORKDIR/tb.

  A resumed run replays the steps after its checkpoint: ``resume(step)`` first drops the rows of
  those steps from metrics.jsonl (rewritten atomically) and opens the TensorBoard event file with
  ``purge_step=step + 1``, which makes TensorBoard hide the older events of the replayed steps, so
  every step appears once in both."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.dir = epath.Path(workdir)
    self._tb = None  # opened at the first write (after ``resume``)
    self._purge_step: int | None = None

  @property
  def path(self) -> epath.Path:
    return self.dir / METRICS_FILE

  def resume(self, step: int) -> None:
    """The run continues after ``step``: drop the logged rows of later steps (see the class)."""
    if not self.enabled:
      return
    self._purge_step = step + 1
    if self._tb is not None:  # reopen with the purge step
      self._tb.close()
      self._tb = None
    if not self.path.exists():
      return
    lines = self.path.read_text().splitlines()
    kept = [line for line in lines if not _after(line, step)]
    if len(kept) != len(lines):
      atomic_write_text(self.path, "".join(line + "\n" for line in kept))
      logging.info("metrics.jsonl: dropped %d rows after step %d", len(lines) - len(kept), step)

  def _writer(self) -> Any:
    if self._tb is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(str(self.dir / TB_DIR), purge_step=self._purge_step)
    return self._tb

  def write(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
    if not self.enabled:
      return
    row = {"step": step, **{prefix + k: v for k, v in metrics.items() if k != "step"}}
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")
    tb = self._writer()
    for k, v in row.items():
      if k == "step":
        continue
      if isinstance(v, list):
        for i, x in enumerate(v):
          tb.add_scalar(f"{k}/{i}", float(x), step)
      elif isinstance(v, (int, float, bool)):
        tb.add_scalar(k, float(v), step)
    tb.flush()
    keys = [
      k
      for k in ("loss", "loss_codes", "loss_cqt", "grad_norm", "lr", "clips_per_s", "mfu")
      if prefix + k in row
    ]
    logging.info("step %d %s", step, "  ".join(f"{prefix}{k} {row[prefix + k]:.4g}" for k in keys))
    print(
      f"step {step}: " + "  ".join(f"{prefix}{k} {row[prefix + k]:.4g}" for k in keys), flush=True
    )

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _after(line: str, step: int) -> bool:
  """Whether a metrics.jsonl line is a row of a step after ``step`` (a torn line counts as one)."""
  try:
    return int(json.loads(line)["step"]) > step
  except (ValueError, KeyError, TypeError):
    return True
