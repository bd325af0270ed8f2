"""Probing feature extractors on the probe sets' tasks: every layer and the weighted sum, each with
its learning-rate grid (fit.py), and the table, JSON and picture of the results."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from data_pipeline.records import from_int16
from mert_jax.probe import fit, head, metrics, note_set
from mert_jax.probe.features import Extractor

METRICS = {
  "pitch": ("accuracy", metrics.accuracy),
  "instrument": ("accuracy", metrics.accuracy),
  "key": ("MIREX weighted key score", metrics.key_weighted_score),
  "beat": ("beat F-measure (70 ms)", metrics.beat_f_measure),
  "custom": ("accuracy", metrics.accuracy),
}
FRAME_TASKS = ("beat",)  # probed on per-frame features; the others on clip averages


def chance(labels: np.ndarray, split: np.ndarray, metric: metrics.Metric) -> float:
  """The test metric of always answering the most frequent training class (for beat: never a
  beat, F = 0)."""
  train, test = labels[split == 0], labels[split == 2]
  if not len(test):
    return float("nan")
  majority = np.bincount(train.ravel()).argmax() if train.size else 0
  return float(metric(test, np.full_like(test, majority)))


def _splits(feats: np.ndarray, labels: np.ndarray, split: np.ndarray) -> list[fit.Split]:
  out = []
  for i, name in enumerate(note_set.SPLITS):
    chosen = split == i
    if not chosen.any():
      raise ValueError(f"the {name} split has no examples; use a larger set")
    out.append(fit.Split(feats[chosen], labels[chosen].astype(np.int32)))
  return out


def probe_features(
  feats: np.ndarray, notes: Any, tasks: tuple[str, ...], cfg: fit.ProbeConfig
) -> dict[str, Any]:
  """task -> {"metric", "layers": {layer: test score}, "weighted", "best_layer", "runs", ...} for
  features (N, layers, D) of the set's notes; one layer only (a baseline): no weighted sum."""
  results = {}
  for task in tasks:
    if task not in METRICS:
      raise ValueError(f"unknown probe task {task!r}; choose from {', '.join(METRICS)}")
    labels, classes = notes.labels(task)
    train, valid, test = _splits(feats, labels, notes.split)
    name, metric = METRICS[task]
    layers = list(range(feats.shape[1])) + ([head.WEIGHTED] if feats.shape[1] > 1 else [])
    runs = {}
    for layer in layers:
      r = fit.probe_layer(train, valid, test, layer=layer, classes=classes, metric=metric, cfg=cfg)
      key = "weighted" if layer == head.WEIGHTED else str(layer)
      runs[key] = {k: v for k, v in r.items() if k != "params"}
      if layer == head.WEIGHTED:
        runs[key]["layer_weights"] = head.layer_weights(r["params"])
    per_layer = {k: v for k, v in runs.items() if k != "weighted"}
    best = max(per_layer, key=lambda k: per_layer[k]["valid"])
    results[task] = {
      "metric": name,
      "classes": classes,
      "chance": chance(labels, notes.split, metric),
      "layers": {k: v["test"] for k, v in per_layer.items()},
      "weighted": runs.get("weighted", {}).get("test"),
      "best_layer": int(best),  # chosen on validation
      "best_layer_test": per_layer[best]["test"],
      "runs": runs,
    }
  return results


def probe(
  features: dict[str, Extractor], sets: dict[str, Any], cfg: fit.ProbeConfig
) -> dict[str, Any]:
  """Each named feature extractor (the model, its random-init twin, the handcrafted baseline) on
  every task of ``sets`` (task -> its probe set: audio, split, labels(task), info), with the
  sets' descriptions; a set's clips go through each extractor once."""
  results: dict[str, dict[str, Any]] = {name: {} for name in features}
  groups: dict[tuple[int, str], tuple[Any, list[str]]] = {}
  for task, probe_set in sets.items():
    pool = "none" if task in FRAME_TASKS else "mean"
    groups.setdefault((id(probe_set), pool), (probe_set, []))[1].append(task)
  for (_, pool), (probe_set, tasks) in groups.items():
    clips = from_int16(probe_set.audio)
    for name, fn in features.items():
      results[name].update(probe_features(fn(clips, pool), probe_set, tuple(tasks), cfg))
  for name in results:
    for task, probe_set in sets.items():  # what a reader needs to reproduce each number
      results[name][task]["seed"] = cfg.seed
      results[name][task]["data_sha256"] = probe_set.info["data_sha256"]
  return {
    "sets": {task: probe_set.info for task, probe_set in sets.items()},
    "probe_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(cfg).items()},
    "results": {name: {t: r[t] for t in sets} for name, r in results.items()},
  }


def markdown(report: dict[str, Any]) -> str:
  """One table per task: a row per extractor, a column per layer, then the weighted sum."""
  lines = []
  for task in next(iter(report["results"].values())):
    depth = max(len(r[task]["layers"]) for r in report["results"].values())
    head_row = ["extractor", *[f"layer {i}" for i in range(depth)], "weighted", "best (valid)"]
    first = next(iter(report["results"].values()))[task]
    lines += [
      f"### {task} ({first['metric']}, {first['classes']} classes, chance {first['chance']:.3f})",
      "",
      "| " + " | ".join(head_row) + " |",
      "|" + "---|" * len(head_row),
    ]
    for name, res in report["results"].items():
      r = res[task]
      cells = [f"{r['layers'][str(i)]:.3f}" if str(i) in r["layers"] else "" for i in range(depth)]
      weighted = "" if r["weighted"] is None else f"{r['weighted']:.3f}"
      best = f"layer {r['best_layer']}: {r['best_layer_test']:.3f}"
      lines.append("| " + " | ".join([name, *cells, weighted, best]) + " |")
    lines.append("")
  return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
  """Test metric per layer, one panel per task, a line per extractor (a single-layer baseline is a
  dashed level)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  tasks = list(next(iter(report["results"].values())))
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for name, res in report["results"].items():
      scores = res[task]["layers"]
      if len(scores) == 1:
        ax.axhline(next(iter(scores.values())), linestyle="--", label=name, color="gray")
      else:
        xs = sorted(map(int, scores))
        ax.plot(xs, [scores[str(x)] for x in xs], marker="o", label=name)
    ax.axhline(res[task]["chance"], linestyle=":", color="black", label="chance")
    ax.set(title=task, xlabel="layer", ylabel=res[task]["metric"] + " (test)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write(report: dict[str, Any], output: str) -> list[str]:
  """results.json, results.md and layers.png in ``output``; returns their paths."""
  from mert_jax.files.atomic import atomic_write_text  # pylint: disable=g-import-not-at-top

  os.makedirs(output, exist_ok=True)
  paths = [os.path.join(output, n) for n in ("results.json", "results.md", "layers.png")]
  atomic_write_text(paths[0], json.dumps(report, indent=1))
  atomic_write_text(paths[1], markdown(report))
  plot(report, paths[2])
  return paths
