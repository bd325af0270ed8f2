"""Small real-music corpora and helpers for the data-pipeline tests (see
data_pipeline/example_audio.py)."""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import soundfile as sf
import soxr

from data_pipeline import example_audio, prepare_jobs
from data_pipeline.records import parse_example
from data_pipeline.tfrecord import read_records

HOP = 320


def make_corpus(root: str, seconds: tuple[float, ...] = (23.0, 17.5, 31.0, 12.25)) -> list[str]:
  """Write real-music excerpts in several formats and rates under ``root`` (with a subfolder and
  a non-audio file); returns the audio files' paths relative to ``root``."""
  os.makedirs(os.path.join(root, "album"), exist_ok=True)
  rels = []
  for i, sec in enumerate(seconds):
    x = example_audio.music_clip(seconds=sec, offset_seconds=10.0 + 7 * i, index=i)
    if i % 4 == 0:
      rel = f"track{i}.wav"
      sf.write(os.path.join(root, rel), x, 24000, subtype="PCM_16")
    elif i % 4 == 1:
      rel = f"album/track{i}.flac"
      sf.write(os.path.join(root, rel), np.stack([x, 0.8 * x], 1), 24000)  # stereo
    elif i % 4 == 2:
      rel = f"album/track{i}.ogg"
      sf.write(
        os.path.join(root, rel),
        soxr.resample(x, 24000, 44100),
        44100,
        format="OGG",
        subtype="VORBIS",
      )
    else:
      rel = f"track{i}.wav"
      sf.write(os.path.join(root, rel), soxr.resample(x, 24000, 48000), 48000, subtype="FLOAT")
    rels.append(rel)
  with open(os.path.join(root, "album", "cover.txt"), "w") as f:
    f.write("not audio")
  return sorted(rels)


def prepare_config(inp: Any, out: Any, **kw: Any) -> prepare_jobs.PrepareConfig:
  """The tests' small preparation: 4 x 32 k-means codes, 10 s records, 20 s shards, 2 workers."""
  base = dict(
    input=str(inp),
    output=str(out),
    workers=2,
    seed=0,
    segment_seconds=10.0,
    min_seconds=3.0,
    shard_seconds=20.0,
    valid_fraction=0.25,
    kmeans_codebooks=4,
    kmeans_codebook_size=32,
    kmeans_max_fit_frames=4000,
  )
  base.update(kw)
  return prepare_jobs.PrepareConfig(**base)


def records(data_dir: str, manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
  """(split, parsed record) for every record of every shard in ``manifest``."""
  for split, info in manifest["splits"].items():
    for shard in info["shards"]:
      for payload in read_records(os.path.join(data_dir, shard["path"])):
        yield split, parse_example(payload)
