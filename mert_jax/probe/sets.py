"""The probe sets behind the task names: task -> its set (rendered, or read from the cache), one
line about each. Shared by the probe command and the in-training probe."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from mert_jax.probe import beat_set, custom_set, key_set, note_set, run

SIZES = tuple(note_set.PRESETS)  # "full", "small", "tiny": every set has these presets
TASKS = tuple(run.METRICS)  # the tasks with a metric: pitch, instrument, key, beat, custom


def parse_tasks(text: str, what: str = "--task") -> tuple[str, ...]:
  """``"pitch,key"`` -> ("pitch", "key"); an unknown or missing name is a ValueError naming it."""
  tasks = tuple(t.strip() for t in text.split(",") if t.strip())
  unknown = [t for t in tasks if t not in TASKS]
  if unknown or not tasks:
    bad = unknown[0] if unknown else "(none)"
    raise ValueError(f"{what}={text}: unknown task {bad!r}; choose from {', '.join(TASKS)}")
  return tasks


def build_sets(
  tasks: tuple[str, ...],
  size: str,
  cache_dir: str,
  seed: int,
  *,
  data: str | None = None,
  clip_seconds: float = 10.0,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """task -> its probe set of preset ``size`` with ``seed`` (pitch and instrument share the note
  set; custom reads ``data``), logging one line per set: size, splits, hours, seconds taken."""
  sets: dict[str, Any] = {}
  for task in tasks:
    t0 = time.perf_counter()
    if task in ("pitch", "instrument"):
      made = next((s for t, s in sets.items() if t in ("pitch", "instrument")), None)
      config = dataclasses.replace(note_set.PRESETS[size], seed=seed)
      sets[task] = made or note_set.build(config, cache_dir)
    elif task == "key":
      sets[task] = key_set.build(dataclasses.replace(key_set.PRESETS[size], seed=seed), cache_dir)
    elif task == "beat":
      sets[task] = beat_set.build(dataclasses.replace(beat_set.PRESETS[size], seed=seed), cache_dir)
    else:
      if not data:
        raise ValueError("--task=custom needs --data=DIR (audio and labels.jsonl)")
      sets[task] = custom_set.build(data, clip_seconds)
    info = sets[task].info
    count = info.get("num_notes", info.get("num_clips"))
    took = time.perf_counter() - t0
    log(f"{task}: {count} clips {info['per_split']}, {info['hours']:.2f} h ({took:.1f} s)")
  return sets
