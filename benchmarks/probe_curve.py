"""What pretraining bought, step by step: the probe scores of a run's checkpoints (one
``python -m mert_jax.probe --checkpoint=WORKDIR --step=N`` output folder each) beside the run's
validation loss, as a table and a picture.

  python benchmarks/probe_curve.py --workdir=WORKDIR --probes=PROBE_DIR/step* --output=CURVE.png

Each probe folder's results.json gives, per task, the weighted-sum test score and the score of the
layer picked on validation, for the probed model (the "model" rows); the step is read from the
folder name's trailing number (``step400``; none: 0, e.g. a ``--random-init`` probe).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
from typing import Any


def random_levels(folders: list[str]) -> dict[str, float]:
  """task -> the weighted-sum score of the "random init" baseline, from the folders that have it."""
  levels = {}
  for folder in folders:
    with open(os.path.join(folder, "results.json")) as f:
      for task, r in json.load(f)["results"].get("random init", {}).items():
        levels[task] = r["weighted"]
  return levels


def load_points(folders: list[str]) -> list[tuple[int, dict[str, Any]]]:
  """(step, {task: (weighted, best-layer score)}) per probe folder, by step."""
  points = []
  for folder in folders:
    with open(os.path.join(folder, "results.json")) as f:
      report = json.load(f)
    match = re.search(r"(\d+)$", os.path.basename(folder.rstrip("/")))
    step = int(match.group(1)) if match else 0
    model = report["results"]["model"]
    points.append((step, {t: (r["weighted"], r["best_layer_test"]) for t, r in model.items()}))
  return sorted(points)


def eval_losses(workdir: str) -> dict[int, float]:
  """step -> validation loss (metrics.jsonl's eval rows)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if "eval_loss" in row:
        out[int(row["step"])] = float(row["eval_loss"])
  return out


def table(points: list[tuple[int, dict[str, Any]]], losses: dict[int, float]) -> list[str]:
  """The markdown table: per step, the validation loss and each task's weighted / best-layer
  score."""
  tasks = list(points[0][1])
  lines = [
    "| step | eval loss | " + " | ".join(f"{t} (weighted / best layer)" for t in tasks) + " |"
  ]
  lines.append("|---|---|" + "---|" * len(tasks))
  for step, scores in points:
    loss = f"{losses[step]:.3f}" if step in losses else ""
    cells = [f"{scores[t][0]:.3f} / {scores[t][1]:.3f}" for t in tasks]
    lines.append(f"| {step} | {loss} | " + " | ".join(cells) + " |")
  return lines


def draw(
  points: list[tuple[int, dict[str, Any]]],
  levels: dict[str, float],
  losses: dict[int, float],
  path: str,
) -> None:
  """The picture: each task's weighted score against the step, random weights' level dotted, the
  validation loss dashed on a second axis."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 3.5))
  for t in points[0][1]:
    line = ax.plot([s for s, _ in points], [v[t][0] for _, v in points], marker="o", label=t)
    if t in levels:  # the same architecture with random weights, where a folder probed it
      ax.axhline(levels[t], color=line[0].get_color(), linestyle=":", label=f"{t}, random init")
  ax.set(xlabel="pretraining step", ylabel="probe test score (weighted sum)")
  if losses:
    twin = ax.twinx()
    steps = sorted(losses)
    twin.plot(steps, [losses[s] for s in steps], color="gray", linestyle="--", label="eval loss")
    twin.set_ylabel("validation loss (dashed)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def probe_folders(patterns: list[str]) -> list[str]:
  """The folders the patterns match (a pattern like PROBE_DIR/step* may also match the probes'
  log files); one error line when none does."""
  folders = sorted({f for pattern in patterns for f in glob.glob(pattern) if os.path.isdir(f)})
  if not folders:
    raise SystemExit(f"error: no probe folder matches {' '.join(patterns)}")
  return folders


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="the training workdir (its metrics.jsonl)")
  p.add_argument("--probes", required=True, nargs="+", help="probe output folders (globs too)")
  p.add_argument("--output", required=True, help="the picture (PNG)")
  args = p.parse_args(argv)
  folders = probe_folders(args.probes)
  points, losses = load_points(folders), eval_losses(args.workdir)
  print("\n".join(table(points, losses)))
  draw(points, random_levels(folders), losses, args.output)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
