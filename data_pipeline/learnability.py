"""A seeded synthetic corpus whose codes are a local function of the audio: the learnability check.

Each record is a monophonic line of harmonic tones with rests. A tone's pitch is one of
``num_pitches`` (``PITCH_STEP`` semitones apart from ``LOWEST_MIDI``), with a random timbre (the
harmonics' decay), loudness, attack decay and duration. The code of a label frame is 1 + the pitch
index of the tone sounding at the frame's centre, 0 during a rest: one codebook of
``num_pitches + 1`` codes, exact by construction. A pretraining run on it must learn to predict
the codes of masked frames from their context well above the most-frequent code's rate; if it does
not, learning is broken (tests/test_learnability.py, benchmarks/learning.py).

Written in the trainer's format (TFRecord shards + manifest.json), read with ``data.dir``.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipeline import manifest as manifest_lib
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import encode_example, to_int16
from data_pipeline.tfrecord import TFRecordWriter

HOP = 320  # samples per label frame (75 Hz at 24 kHz), the model's frame stride
LOWEST_MIDI = 40  # the lowest tone (E2)
PITCH_STEP = 3  # semitones between the tones (a minor third: far apart for a tiny model)
REST_PROB = 0.25  # chance that the next event is a rest
TONE_SECONDS = (0.15, 0.6)  # tone durations, uniform
REST_SECONDS = (0.05, 0.3)  # rest durations, uniform
HARMONICS = 8


def record(
  rng: np.random.Generator, seconds: float, num_pitches: int
) -> tuple[np.ndarray, np.ndarray]:
  """(int16 audio (L,), codes (1, ceil(L / HOP))) of one seeded record."""
  length = int(seconds * SAMPLE_RATE)
  x = np.zeros(length, np.float64)
  per_sample = np.zeros(length, np.int64)
  pos = 0
  while pos < length:
    if rng.random() < REST_PROB:
      pos += int(rng.uniform(*REST_SECONDS) * SAMPLE_RATE)
      continue
    p = int(rng.integers(0, num_pitches))
    f0 = 440.0 * 2 ** ((LOWEST_MIDI + PITCH_STEP * p - 69) / 12)
    n = min(int(rng.uniform(*TONE_SECONDS) * SAMPLE_RATE), length - pos)
    t = np.arange(n) / SAMPLE_RATE
    decay = rng.uniform(0.3, 0.8)
    tone = sum(
      decay ** (h - 1) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
      for h in range(1, HARMONICS + 1)
      if f0 * h < SAMPLE_RATE / 2
    )
    env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(0.5, 4.0))
    release = np.minimum(1.0, (n - np.arange(n)) / (0.01 * SAMPLE_RATE))
    x[pos : pos + n] += rng.uniform(0.05, 0.3) * tone * env * release / np.max(np.abs(tone))
    per_sample[pos : pos + n] = p + 1
    pos += n
  x += rng.normal(0, 1e-3, length)
  frames = -(-length // HOP)
  centres = np.minimum(np.arange(frames) * HOP + HOP // 2, length - 1)
  return to_int16(x.astype(np.float32)), per_sample[centres][None]


def write_corpus(
  out: str,
  *,
  train_seconds: float,
  valid_seconds: float,
  num_pitches: int = 8,
  seed: int = 0,
  record_seconds: float = 20.0,
) -> dict:
  """Writes the corpus to ``out`` (one shard per split) and returns its manifest."""
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(seed)
  shards, counts = {}, {}
  for split, seconds in (("train", train_seconds), ("valid", valid_seconds)):
    records = [
      record(rng, record_seconds, num_pitches)
      for _ in range(max(1, round(seconds / record_seconds)))
    ]
    path = os.path.join(out, manifest_lib.shard_name(split, 0, 1))
    with TFRecordWriter(path) as w:
      for i, (pcm, codes) in enumerate(records):
        w.write(encode_example(pcm, codes.astype(np.int16), f"learnability/{split}/{i}", 0))
    shards[split] = [manifest_lib.shard_info(path, [len(p) for p, _ in records])]
    counts[split] = len(records)
  teacher = {
    "name": "learnability",
    "num_codebooks": 1,
    "codebook_size": num_pitches + 1,
    "sample_rate": SAMPLE_RATE,
    "hop": HOP,
    "label_rate": SAMPLE_RATE / HOP,
    "seed": seed,
  }
  files = {
    "num_input_files": 0,
    "num_used_files": 0,
    "num_skipped_files": 0,
    "num_ignored_files": 0,
  }
  m = manifest_lib.build_manifest(
    shards,
    counts,
    teacher,
    sample_rate=SAMPLE_RATE,
    hop=HOP,
    counts=files,
    options={"teacher": "learnability", "seed": seed},
  )
  manifest_lib.write_manifest(out, m)
  return m


def code_rates(out: str, split: str = "valid") -> np.ndarray:
  """(codes,) frequency of each code in ``split`` (the most frequent one's rate is the bar)."""
  from data_pipeline.reader import load_manifest, shard_paths  # pylint: disable=g-import-not-at-top
  from data_pipeline.records import parse_example  # pylint: disable=g-import-not-at-top
  from data_pipeline.tfrecord import TFRecordReader  # pylint: disable=g-import-not-at-top

  m = load_manifest(out)
  counts = np.zeros(m["codebook_size"], np.int64)
  for path in shard_paths(out, m, split):
    for payload in TFRecordReader(path):
      counts += np.bincount(parse_example(payload)["tokens"][0], minlength=len(counts))
  return counts / counts.sum()
