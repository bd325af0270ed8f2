"""The trainer's input pipeline: grain over the prepared TFRecord shards.

  shards of the split -> this process's files (every process_count-th, from process_index)
  -> records file after file, in a seeded file order per epoch (CRC-checked)
  -> parse -> drop records shorter than the crop (counted) -> random crop aligned to label frames
  -> window shuffle of the crops -> float32 audio -> batch (per-process batch, drop remainder)

Each element: {"audio": float32 (crop_samples,), "labels": int32 (K, round(crop_samples / hop))}.
A crop starts on a label-frame boundary (sample hop * j), so label j is exactly the teacher's
token for samples [hop * j, hop * j + hop) — the reference instead crops at any sample and
rounds the label start (± half a frame).

The iterator's state (file position in every open shard, shuffle buffers' seeds and positions)
saves and restores exactly: ``it.get_state()`` / ``it.set_state(state)``, or through orbax with
``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)`` (one JSON per process). A
state only restores under the same process count and the same dataset and config.

Paths may be local or remote (``gs://`` with gcsfs, ``memory://``), opened through fsspec.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.manifest import load_manifest, shard_paths  # also the trainer's, via reader
from data_pipeline.records import from_int16, parse_example
from data_pipeline.tfrecord import ShardChainIterDataset


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  crop_samples: int = 5 * SAMPLE_RATE  # samples per training clip (5 s)
  batch_size: int = 8  # clips per batch in THIS process (global batch / process count)
  shuffle_window: int = 1024  # crops in the window shuffle buffer (int16: 240 kB per 5 s crop);
  # grain's window shuffle costs ~2.5 ms per element below ~64
  num_epochs: int | None = None  # None: repeat forever
  seed: int = 0  # file order, window shuffle and crop positions
  drop_remainder: bool = True  # static batch shapes


def process_files(paths: list[str], process_index: int, process_count: int) -> list[str]:
  """This process's disjoint share of the shards (together they cover all of them)."""
  mine = paths[process_index::process_count]
  if not mine:
    raise ValueError(
      f"{len(paths)} shards cannot feed {process_count} processes: prepare the data with a "
      f"smaller --shard-seconds so there is at least one shard per process"
    )
  return mine


class DropShort(grain.transforms.Filter):
  """Keeps records at least ``min_samples`` long; counts what it drops (reported by the caller)."""

  def __init__(self, min_samples: int):
    self.min_samples = min_samples
    self.dropped_records = 0
    self.dropped_samples = 0

  def filter(self, element: dict[str, Any]) -> bool:
    if element["num_samples"] >= self.min_samples:
      return True
    self.dropped_records += 1
    self.dropped_samples += element["num_samples"]
    return False


class CropToLabels(grain.transforms.RandomMap):
  """Random hop-aligned crop of audio (kept int16) and its tokens."""

  def __init__(self, crop_samples: int, hop: int):
    self.crop = crop_samples
    self.hop = hop
    self.num_labels = int(round(crop_samples / hop))

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = element["num_samples"]
    j = int(rng.integers(0, (n - self.crop) // self.hop + 1))
    start = j * self.hop
    return {
      "audio": element["audio"][start : start + self.crop].copy(),
      "labels": element["tokens"][:, j : j + self.num_labels].copy(),
    }


def _to_model_dtypes(element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"audio": from_int16(element["audio"]), "labels": element["labels"].astype(np.int32)}


def make_dataset(
  data_dir: str,
  cfg: ReaderConfig,
  *,
  split: str = "train",
  process_index: int = 0,
  process_count: int = 1,
) -> tuple[grain.IterDataset, DropShort]:
  """The grain dataset of this process and its short-record counter."""
  manifest = load_manifest(data_dir)
  files = process_files(shard_paths(data_dir, manifest, split), process_index, process_count)
  drop = DropShort(cfg.crop_samples)
  return _pipeline(files, cfg, manifest["hop"], drop, salt=0), drop


def _pipeline(
  files: list[str], cfg: ReaderConfig, hop: int, drop: DropShort, salt: int
) -> grain.IterDataset:
  """chain -> parse -> drop short -> crop -> window shuffle -> float32 -> batch (seeds offset by
  ``salt``)."""
  ds = ShardChainIterDataset(files, seed=cfg.seed + salt, num_epochs=cfg.num_epochs)
  ds = ds.map(parse_example).filter(drop)
  ds = ds.random_map(CropToLabels(cfg.crop_samples, hop), seed=cfg.seed + 1 + salt)
  if cfg.shuffle_window > 1:
    ds = grain.experimental.WindowShuffleIterDataset(
      ds, window_size=cfg.shuffle_window, seed=cfg.seed + 2 + salt
    )
  return ds.map(_to_model_dtypes).batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)


class _GroupsIterator(grain.DatasetIterator):
  def __init__(self, datasets: list[grain.IterDataset]):
    super().__init__()
    self._its = [iter(d) for d in datasets]

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(it) for it in self._its]
    return {k: np.stack([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> dict[str, Any]:
    return {"groups": [it.get_state() for it in self._its]}

  def set_state(self, state: dict[str, Any]) -> None:
    if len(state["groups"]) != len(self._its):
      raise ValueError(
        f"data-iterator state holds {len(state['groups'])} groups, this process reads "
        f"{len(self._its)}"
      )
    for it, s in zip(self._its, state["groups"]):
      it.set_state(s)


class _GroupsDataset(grain.IterDataset):
  def __init__(self, datasets: list[grain.IterDataset]):
    super().__init__()
    self._datasets = datasets

  def __iter__(self) -> grain.DatasetIterator:
    return _GroupsIterator(self._datasets)


def make_grouped_dataset(
  data_dir: str,
  cfg: ReaderConfig,
  *,
  groups: int,
  split: str = "train",
  process_index: int = 0,
  process_count: int = 1,
) -> tuple[grain.IterDataset, list[DropShort]]:
  """The trainer's input: the global batch is made of ``groups`` fixed data groups (group g reads
  shards g, g + groups, ...), each contributing ``cfg.batch_size`` clips per step; this process
  reads groups [p * groups / P, (p + 1) * groups / P). Elements are (groups / P, cfg.batch_size,
  ...).

  Because the groups do not depend on the process count, the global batch of every step is the
  same whether 1 or ``groups`` processes read it (and a one-process run can reproduce a
  multi-process run exactly)."""
  if groups % process_count:
    raise ValueError(
      f"data groups ({groups}) must be a multiple of the process count ({process_count})"
    )
  manifest = load_manifest(data_dir)
  paths = shard_paths(data_dir, manifest, split)
  per = groups // process_count
  datasets, drops = [], []
  for g in range(process_index * per, (process_index + 1) * per):
    files = process_files(paths, g, groups)
    drop = DropShort(cfg.crop_samples)
    datasets.append(_pipeline(files, cfg, manifest["hop"], drop, salt=7919 * g))
    drops.append(drop)
  return _GroupsDataset(datasets), drops
