"""Training curves of a workdir, or throughput of benchmark runs, as a small PNG.

  python -m mert_jax.plot WORKDIR [--output=FILE.png]
  python -m mert_jax.plot --benchmark=ROWS.jsonl [--output=FILE.png]

WORKDIR: reads WORKDIR/metrics.jsonl (mert_jax/train/metrics.py) and draws against the step the
loss terms (loss, loss_codes, loss_cqt, features_pen; evaluation rows as markers on dashed lines of
the same colour), the mean codebook accuracy (train and eval) and the learning rate. Default output
WORKDIR/curves.png. A torn last line (a run killed mid-write) is skipped with a note.

--benchmark: reads the rows that ``benchmarks/train_step.py --json=ROWS.jsonl`` appends (one JSON
object per line) and draws clips/s against the batch size, one line per model size, mode, device
and overrides (the median of repeated rows), with MFU beside each point where it is known. Default
output: ROWS.png.

The figure is 8 x 6 in at 100 dpi (800 x 600 pixels, tens of kB), drawn with matplotlib's Agg
renderer (no display needed). Prints the path written; bad input is one ``error:`` line, exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
from typing import Any, Iterable

from etils import epath
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mert_jax import workdir_files
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_open
from mert_jax.terminal import cli_help

FIG_SIZE_IN = (8.0, 6.0)  # inches
DPI = 100  # 800 x 600 pixels
LOSS_TERMS = ("loss", "loss_codes", "loss_cqt", "features_pen")
EVAL = "eval_"  # prefix of the evaluation rows' keys
TRAIN_STYLE = {"linewidth": 1.2}
EVAL_STYLE = {"linestyle": "--", "marker": "o", "markersize": 3.5, "linewidth": 1.0}
BENCHMARK_GROUP = ("size", "mode", "device", "sets")  # rows that form one line


class PlotError(ValueError):
  """Input that cannot be drawn; the message is one line."""


# ---------------------------------------------------------------------------------- reading


def parse_jsonl(text: str, name: str) -> tuple[list[dict[str, Any]], str | None]:
  """(rows, note) of JSON-lines ``text`` (``name``: the file, for messages). A torn last line is
  skipped and described in ``note``; any other line that is not a JSON object is an error."""
  lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
  if not lines:
    raise PlotError(f"{name} is empty: no step has been logged yet")
  rows, note = [], None
  for i, line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    if isinstance(row, dict):
      rows.append(row)
    elif i == lines[-1][0]:
      note = f"skipped the torn last line {i} of {name} (as a run killed mid-write leaves)"
    else:
      raise PlotError(f"{name}: line {i} is not a JSON object: {line[:80]!r}")
  if not rows:
    raise PlotError(f"{name} holds no complete row")
  return rows, note


def read_rows(path: str) -> tuple[list[dict[str, Any]], str | None]:
  """``parse_jsonl`` of the file at ``path`` (local or a remote epath such as gs://)."""
  p = epath.Path(path)
  if not p.exists():
    raise PlotError(f"{path}: no such file")
  return parse_jsonl(p.read_text(), path)


def _number(x: Any) -> float | None:
  """A metric value as a float (a per-codebook list: its mean), or None when absent or not one."""
  if isinstance(x, list):
    values = [_number(v) for v in x]
    return None if not values or None in values else statistics.fmean(values)
  if isinstance(x, bool) or not isinstance(x, (int, float)):
    return None
  return float(x)


def series(rows: Iterable[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of the rows holding ``key`` (lists, such as ``accuracy``, averaged)."""
  steps, values = [], []
  for row in rows:
    value = _number(row.get(key))
    if value is not None and "step" in row:
      steps.append(int(row["step"]))
      values.append(value)
  return steps, values


# ---------------------------------------------------------------------------------- figures


def _figure() -> Figure:
  fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _positive(values: Iterable[float]) -> bool:
  return all(v > 0 and math.isfinite(v) for v in values)


def draw_curves(rows: list[dict[str, Any]], title: str) -> Figure:
  """The training-curves figure of metrics.jsonl ``rows``: losses, mean accuracy, learning rate."""
  if not any(series(rows, key)[0] for key in LOSS_TERMS):
    raise PlotError(f"no training row holds any of {', '.join(LOSS_TERMS)}")
  fig = _figure()
  loss_ax, acc_ax, lr_ax = fig.subplots(3, 1, sharex=True, height_ratios=(2, 1, 1))
  plotted = []
  for i, key in enumerate(LOSS_TERMS):
    colour = f"C{i}"
    for name, style in ((key, TRAIN_STYLE), (EVAL + key, EVAL_STYLE)):
      steps, values = series(rows, name)
      if steps:
        loss_ax.plot(steps, values, color=colour, label=name, **style)
        plotted += values
  if _positive(plotted):
    loss_ax.set_yscale("log")
  loss_ax.set_ylabel("loss (per masked frame)")
  loss_ax.legend(fontsize="x-small", ncol=2)
  for name, style in (("accuracy", TRAIN_STYLE), (EVAL + "accuracy", EVAL_STYLE)):
    steps, values = series(rows, name)
    if steps:
      acc_ax.plot(steps, values, color="C4", label=name, **style)
  acc_ax.set_ylabel("mean accuracy")
  if acc_ax.lines:
    acc_ax.legend(fontsize="x-small")
  steps, values = series(rows, "lr")
  lr_ax.plot(steps, values, color="C5", **TRAIN_STYLE)
  lr_ax.set_ylabel("learning rate")
  lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
  lr_ax.set_xlabel("step")
  lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  for ax in (loss_ax, acc_ax, lr_ax):
    ax.grid(True, alpha=0.3)
  fig.suptitle(title, fontsize="medium")
  return fig


def benchmark_lines(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float, float | None]]]:
  """{label: [(batch, median clips/s, median MFU or None), ...] by batch} of train_step.py rows,
  one label per (size, mode, device, overrides)."""
  grouped: dict[str, dict[int, list[dict[str, Any]]]] = {}
  for row in rows:
    if _number(row.get("clips_per_s")) is None or _number(row.get("batch")) is None:
      continue
    parts = [str(row[k]) for k in BENCHMARK_GROUP if row.get(k) not in (None, [], "")]
    grouped.setdefault(" ".join(parts), {}).setdefault(int(row["batch"]), []).append(row)
  if not grouped:
    raise PlotError("no row holds batch and clips_per_s (rows of benchmarks/train_step.py --json)")
  lines = {}
  for label, by_batch in grouped.items():
    points = []
    for batch in sorted(by_batch):
      same = by_batch[batch]
      mfus = [m for m in (_number(r.get("mfu")) for r in same) if m is not None]
      clips = statistics.median(float(r["clips_per_s"]) for r in same)
      points.append((batch, clips, statistics.median(mfus) if mfus else None))
    lines[label] = points
  return lines


def draw_benchmark(rows: list[dict[str, Any]], title: str) -> Figure:
  """Clips/s against batch size, one line per configuration, MFU written beside each point."""
  fig = _figure()
  ax = fig.subplots()
  batches, any_mfu = set(), False
  for i, (label, points) in enumerate(benchmark_lines(rows).items()):
    batch, clips = [b for b, _, _ in points], [c for _, c, _ in points]
    ax.plot(batch, clips, color=f"C{i}", marker="o", label=label, **TRAIN_STYLE)
    for b, c, mfu in points:
      batches.add(b)
      if mfu is not None:
        any_mfu = True
        ax.annotate(f"{mfu:.0%}", (b, c), textcoords="offset points", xytext=(4, 4), fontsize=7)
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(batches), labels=[str(b) for b in sorted(batches)])
  ax.minorticks_off()
  ax.set_xlabel("batch (clips per step per device)")
  ax.set_ylabel("clips/s")
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize="x-small", title="numbers at the points: MFU" if any_mfu else None)
  fig.suptitle(title, fontsize="medium")
  return fig


def write_png(fig: Figure, path: str) -> None:
  """Write ``fig`` as PNG to ``path`` (local or gs://) atomically (``atomic.atomic_open``)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=DPI)
  storage.make_parent(path)
  with atomic_open(path, "wb") as f:
    f.write(buf.getvalue())


# ---------------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
  """The command line (see the module docstring)."""
  parser = cli_help.ArgumentParser(
    prog=cli_help.prog("mert_jax.plot"),
    description=__doc__.split("\n\n")[0],
    epilog=__doc__.split("\n\n", 1)[1],
  )
  parser.add_argument(
    "workdir",
    nargs="?",
    metavar="WORKDIR",
    help=f"training workdir holding {workdir_files.METRICS} (local or gs://); not with --benchmark",
  )
  parser.add_argument(
    "--benchmark",
    metavar="ROWS.jsonl",
    help="draw throughput against batch size from the rows of "
    "benchmarks/train_step.py --json=ROWS.jsonl instead of a workdir's training curves",
  )
  parser.add_argument(
    "--output",
    metavar="FILE.png",
    help=f"PNG to write (default: WORKDIR/{workdir_files.CURVES}, or ROWS.png beside --benchmark)",
  )
  return parser


def plot_benchmark(path: str, output: str | None = None) -> str:
  """Throughput against batch from benchmark rows; writes ``output`` (default ROWS.png beside
  them) and returns its path."""
  rows, note = read_rows(path)
  first = rows[0]
  title = f"{os.path.basename(path)}: {first.get('device', '?')}, jax {first.get('jax')}"
  return _write(draw_benchmark(rows, title), output or os.path.splitext(path)[0] + ".png", note)


def plot_workdir(workdir: str, output: str | None = None) -> str:
  """The training curves of a workdir's metrics.jsonl; writes ``output`` (default
  WORKDIR/curves.png) and returns its path."""
  metrics = os.path.join(workdir, workdir_files.METRICS)
  if not epath.Path(workdir).is_dir():
    raise PlotError(f"{workdir}: no such folder")
  if not epath.Path(metrics).exists():
    raise PlotError(
      f"{workdir} holds no {workdir_files.METRICS}: not a training workdir, or no step logged yet"
    )
  rows, note = read_rows(metrics)
  steps = [int(r["step"]) for r in rows if "step" in r]
  name = os.path.basename(os.path.normpath(workdir))
  title = f"{name}: steps {min(steps, default=0)}-{max(steps, default=0)}"
  return _write(
    draw_curves(rows, title), output or os.path.join(workdir, workdir_files.CURVES), note
  )


def _write(fig: Figure, output: str, note: str | None) -> str:
  if note:
    print(f"note: {note}", file=sys.stderr)
  write_png(fig, output)
  return output


def main(argv: list[str] | None = None) -> int:
  """0 with the path written on stdout; 1 with one ``error:`` line on stderr."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if bool(args.workdir) == bool(args.benchmark):
    parser.error("give a WORKDIR or --benchmark=ROWS.jsonl (one of them)")
  try:
    if args.benchmark:
      output = plot_benchmark(args.benchmark, args.output)
    else:
      output = plot_workdir(args.workdir, args.output)
  except (PlotError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
