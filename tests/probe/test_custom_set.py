"""mert_jax/probe/custom_set.py: a folder built here, and every kind of bad labels.jsonl as one
line, before anything is decoded."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.example_audio import music_clip
from mert_jax.probe import custom_set

ROWS = [
  ("a.wav", "calm", "train"),
  ("b.wav", "busy", "train"),
  ("c.wav", "calm", "valid"),
  ("d.wav", "busy", "test"),
]


def _folder(root, rows=ROWS, seconds=1.0, write=True) -> str:
  os.makedirs(root, exist_ok=True)
  for i, (file, _, _) in enumerate(rows):
    if write:
      sf.write(os.path.join(root, file), music_clip(seconds, offset_seconds=3.0 * i), 24000)
  with open(os.path.join(root, "labels.jsonl"), "w") as f:
    for file, label, split in rows:
      f.write(json.dumps({"file": file, "label": label, "split": split}) + "\n")
  return str(root)


def test_a_folder_becomes_labelled_clips(tmp_path):
  s = custom_set.build(_folder(tmp_path), clip_seconds=0.5)
  assert s.audio.shape == (4, 12000) and s.info["classes"] == ["busy", "calm"]
  assert list(s.label) == [1, 0, 1, 0] and list(s.split) == [0, 0, 1, 2]
  labels, classes = s.labels("custom")
  assert classes == 2 and labels is s.label
  padded = custom_set.build(_folder(tmp_path / "p"), clip_seconds=2.0)  # 1 s files, 2 s clips
  assert not padded.audio[:, 24000:].any() and padded.audio[:, :24000].any()


@pytest.mark.parametrize(
  "rows, message",
  [
    ([*ROWS, ("gone.wav", "calm", "train")], r"line 5: gone.wav does not exist; nothing was"),
    ([*ROWS[:2], ("c.wav", "calm", "valid"), ("d.wav", "new", "test")], r"label 'new' appears"),
    (ROWS[:2] + [("d.wav", "busy", "test")], r"the valid split has no examples"),
    ([*ROWS[:3], ("d.wav", "busy", "holdout")], r"line 4: split 'holdout' is not one of"),
  ],
)
def test_bad_labels_are_one_line(tmp_path, rows, message):
  folder = _folder(tmp_path, [r for r in rows if r[0] != "gone.wav"])
  _folder(tmp_path, rows, write=False)  # the labels name every row, the files exist but "gone"
  with pytest.raises(ValueError, match=message) as e:
    custom_set.build(folder)
  assert "\n" not in str(e.value)


def test_audio_shorter_than_a_frame_is_named(tmp_path):
  folder = _folder(tmp_path)
  sf.write(os.path.join(folder, "b.wav"), np.zeros(100, np.float32), 24000)
  with pytest.raises(ValueError, match=r"b.wav: 100 samples at 24 kHz, shorter than one model"):
    custom_set.build(folder)
