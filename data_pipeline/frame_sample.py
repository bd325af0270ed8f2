"""A seeded, bounded-memory uniform sample of feature frames across a corpus, the same whatever
order the files arrive in and however they are split among workers.

Every frame gets a key in [0, 1) drawn from a generator seeded by (seed, the file's id): the
frame's key depends only on which frame it is, not on where or when it is read. The sample is the
``limit`` frames with the smallest keys, in key order (a random order, so a mini-batch k-means
sees no file's frames bunched). Samples of disjoint sets of files merge by keeping the smallest
keys of both, so a process pool, one process reading files in turn, or a Beam combiner over any
number of workers arrive at the same frames.

Memory: a sample holds at most ``2 * limit`` candidate frames before it is compacted to
``limit``: ``2 * limit * (4 * d + 8)`` bytes (d features of float32 and a float64 key); 61 MB for
the default 200,000 frames of 32 features.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


def frame_keys(seed: int, file_id: str, num_frames: int) -> np.ndarray:
  """(num_frames,) float64 keys in [0, 1) of the frames of file ``file_id``: a function of
  (seed, file_id, frame index) only."""
  words = np.frombuffer(hashlib.sha256(file_id.encode()).digest()[:16], np.uint32)
  return np.random.default_rng([int(seed), *map(int, words)]).random(num_frames)


@dataclasses.dataclass
class FrameSample:
  """At most ``limit`` (after ``compact``) feature frames with the smallest keys seen, and how many
  frames were seen in all."""

  limit: int
  keys: np.ndarray  # (n,) float64
  features: np.ndarray  # (n, d) float32
  frames_seen: int = 0

  @classmethod
  def empty(cls, limit: int, dim: int) -> "FrameSample":
    return cls(limit, np.empty((0,), np.float64), np.empty((0, dim), np.float32))

  @classmethod
  def of_file(cls, limit: int, features: np.ndarray, seed: int, file_id: str) -> "FrameSample":
    """The candidates of one file: the ``limit`` smallest-keyed frames of ``features`` (n, d)."""
    keys = frame_keys(seed, file_id, len(features))
    return cls(limit, keys, np.asarray(features, np.float32), len(features)).compact()

  def add(self, other: "FrameSample") -> "FrameSample":
    """Both samples' frames (of disjoint files); compacted once more than ``2 * limit`` are held."""
    merged = FrameSample(
      self.limit,
      np.concatenate([self.keys, other.keys]),
      np.concatenate([self.features, other.features]),
      self.frames_seen + other.frames_seen,
    )
    return merged.compact() if len(merged.keys) > 2 * self.limit else merged

  def compact(self) -> "FrameSample":
    """The ``limit`` smallest keys, in key order (ties, never seen in practice, by position)."""
    order = np.argsort(self.keys, kind="stable")[: self.limit]
    return FrameSample(self.limit, self.keys[order], self.features[order], self.frames_seen)
