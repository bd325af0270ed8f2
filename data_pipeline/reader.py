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
import json
import posixpath
from typing import Any, Iterator

import fsspec
import grain
import numpy as np

from data_pipeline.records import parse_example
from data_pipeline.tfrecord import ShardChainIterDataset


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  crop_samples: int = 120_000          # samples per training clip (5 s at 24 kHz)
  batch_size: int = 8                  # clips per batch in THIS process (global batch / process count)
  shuffle_window: int = 1024           # crops in the window shuffle buffer (int16: 240 kB per 5 s crop);
                                       # grain's window shuffle costs ~2.5 ms per element below ~64
  num_epochs: int | None = None        # None: repeat forever
  seed: int = 0                        # file order, window shuffle and crop positions
  drop_remainder: bool = True          # static batch shapes


def load_manifest(data_dir: str) -> dict[str, Any]:
  path = posixpath.join(data_dir, "manifest.json")
  try:
    with fsspec.open(path, "r") as f:
      manifest = json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{path} not found: {data_dir} is not a folder written by "
                            f"`python -m data_pipeline.prepare` (or it did not finish).") from e
  if manifest.get("format") != "mert-jax-tfrecord-v1":
    raise ValueError(f"{path}: unknown dataset format {manifest.get('format')!r}")
  return manifest


def shard_paths(data_dir: str, manifest: dict[str, Any], split: str) -> list[str]:
  if split not in manifest["splits"]:
    raise ValueError(f"{data_dir} has no {split!r} split (it has {sorted(manifest['splits'])})")
  return [posixpath.join(data_dir, s["path"]) for s in manifest["splits"][split]["shards"]]


def process_files(paths: list[str], process_index: int, process_count: int) -> list[str]:
  """This process's disjoint share of the shards (together they cover all of them)."""
  mine = paths[process_index::process_count]
  if not mine:
    raise ValueError(f"{len(paths)} shards cannot feed {process_count} processes: prepare the data with a "
                     f"smaller --shard-seconds so there is at least one shard per process")
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
    return {"audio": element["audio"][start:start + self.crop].copy(),
            "labels": element["tokens"][:, j:j + self.num_labels].copy()}


def _to_model_dtypes(element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"audio": element["audio"].astype(np.float32) * np.float32(1 / 32768),
          "labels": element["labels"].astype(np.int32)}


def make_dataset(data_dir: str, cfg: ReaderConfig, *, split: str = "train", process_index: int = 0,
                 process_count: int = 1) -> tuple[grain.IterDataset, DropShort]:
  """The grain dataset of this process and its short-record counter."""
  manifest = load_manifest(data_dir)
  files = process_files(shard_paths(data_dir, manifest, split), process_index, process_count)
  drop = DropShort(cfg.crop_samples)
  ds = ShardChainIterDataset(files, seed=cfg.seed, num_epochs=cfg.num_epochs)
  ds = ds.map(parse_example).filter(drop)
  ds = ds.random_map(CropToLabels(cfg.crop_samples, manifest["hop"]), seed=cfg.seed + 1)
  if cfg.shuffle_window > 1:
    ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=cfg.shuffle_window, seed=cfg.seed + 2)
  ds = ds.map(_to_model_dtypes).batch(cfg.batch_size, drop_remainder=cfg.drop_remainder)
  return ds, drop


def batches(data_dir: str, cfg: ReaderConfig, **kw: Any) -> Iterator[dict[str, np.ndarray]]:
  """Convenience: an iterator of batches (use make_dataset for checkpointable iterators)."""
  ds, _ = make_dataset(data_dir, cfg, **kw)
  return iter(ds)
