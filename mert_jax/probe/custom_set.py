"""The custom probe task: a folder of audio and its ``labels.jsonl``, for clip-level
classification of the user's own data.

  {"file": "a/song.flac", "label": "jazz", "split": "train"}    one line per clip

``file`` is relative to the folder; ``split`` is train, valid or test. Each clip is the first
``clip_seconds`` of its file at 24 kHz mono; a shorter file is padded with silence to that length
(its time-averaged features include the silence: give clips of one length to avoid it), and a file
shorter than one model frame (400 samples) is refused. Before anything is decoded, every line is
checked, and what is wrong is one line naming the line, the file or the label: a missing file, a
split that is not one of the three, a split with no examples, a label that appears in valid or test
but never in train (the probe could not learn it).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np

from data_pipeline.audio import load_audio
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import to_int16
from mert_jax.probe.note_set import SPLITS

LABELS = "labels.jsonl"
MIN_SAMPLES = 400  # one frame of the convolutional front end (its receptive field)


@dataclasses.dataclass
class CustomSet:
  """The clips: audio (N, samples) int16 at 24 kHz, class and split per clip, the class names."""

  audio: np.ndarray
  label: np.ndarray  # (N,) index into info["classes"]
  split: np.ndarray  # (N,) index into SPLITS
  info: dict[str, Any]

  def labels(self, task: str) -> tuple[np.ndarray, int]:
    if task != "custom":
      raise ValueError(f"a custom folder has the task custom, not {task!r}")
    return self.label, len(self.info["classes"])


def read_labels(folder: str) -> list[dict[str, str]]:
  """The rows of FOLDER/labels.jsonl, checked (ValueError: one line naming what is wrong)."""
  path = os.path.join(folder, LABELS)
  if not os.path.isfile(path):
    raise ValueError(f"{path}: no such file; a custom probe folder needs {LABELS}")
  rows, missing = [], []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        file, label, split = row["file"], str(row["label"]), row["split"]
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(
          f"{path} line {number}: not a JSON object with file, label and split ({e})"
        ) from e
      if split not in SPLITS:
        raise ValueError(f"{path} line {number}: split {split!r} is not one of {', '.join(SPLITS)}")
      if not os.path.isfile(os.path.join(folder, file)):
        missing.append(f"line {number}: {file}")
      rows.append({"file": file, "label": label, "split": split})
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise ValueError(f"{path} {missing[0]} does not exist{more}; nothing was probed")
  by_split = collections.defaultdict(set)
  for row in rows:
    by_split[row["split"]].add(row["label"])
  for split in SPLITS:
    if not by_split[split]:
      raise ValueError(f"{path}: the {split} split has no examples")
  unseen = sorted((by_split["valid"] | by_split["test"]) - by_split["train"])
  if unseen:
    raise ValueError(
      f"{path}: label {unseen[0]!r} appears in valid or test but never in train "
      f"({len(unseen)} such labels); the probe cannot learn it"
    )
  return rows


def build(folder: str, clip_seconds: float = 10.0) -> CustomSet:
  """The set of ``folder`` (decoded now; not cached: the folder may change)."""
  rows = read_labels(folder)
  classes = sorted({row["label"] for row in rows})
  n = int(round(clip_seconds * SAMPLE_RATE))
  audio = np.zeros((len(rows), n), np.int16)
  for i, row in enumerate(rows):
    path = os.path.join(folder, row["file"])
    x = load_audio(path, SAMPLE_RATE)
    if len(x) < MIN_SAMPLES:
      raise ValueError(
        f"{path}: {len(x)} samples at 24 kHz, shorter than one model frame ({MIN_SAMPLES}); "
        f"remove it from {LABELS}"
      )
    x = x[:n]
    audio[i, : len(x)] = to_int16(x)
  info = {
    "folder": os.path.abspath(folder),
    "num_clips": len(rows),
    "classes": classes,
    "clip_seconds": clip_seconds,
    "per_split": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
    "hours": audio.size / SAMPLE_RATE / 3600,
    "data_sha256": hashlib.sha256(audio.tobytes()).hexdigest(),
  }
  return CustomSet(
    audio,
    np.array([classes.index(r["label"]) for r in rows], np.int32),
    np.array([SPLITS.index(r["split"]) for r in rows], np.int32),
    info,
  )
