"""The trainer's input pipeline: grain over the prepared TFRecord shards.

  shards of the split (each checked for its manifest size when the dataset is built)
  -> this process's files (every process_count-th, from process_index)
  -> records file after file, in a seeded file order per epoch (CRC-checked; at each file's end its
     record count, size and record-CRC digest against the manifest: data_pipeline/tfrecord.py)
  -> parse -> drop records shorter than the crop (counted) -> random crop aligned to label frames
  -> window shuffle of the crops -> float32 audio -> batch (per-process batch, drop remainder)

Each element: {"audio": float32 (crop_samples,), "labels": int32 (K, round(crop_samples / hop))}.
A crop starts on a label-frame boundary (sample hop * j), so label j is exactly the teacher's
token for samples [hop * j, hop * j + hop) — the reference instead crops at any sample and
rounds the label start (± half a frame).

The iterator's state (file position in every open shard, shuffle buffers' seeds and positions)
saves and restores exactly: ``it.get_state()`` / ``it.set_state(state)``, or through orbax with
``grain.checkpoint.CheckpointSave(it)`` / ``CheckpointRestore(it)`` (one JSON per process). A
state only restores under the same process count and the same dataset and config. The shard
checks keep no state of their own: a shard resumed mid-way is checked at its end for record count
and size, and its digest is checked on its next full pass.

A shard that does not match its manifest raises ``tfrecord.ShardMismatchError`` (a
``CorruptRecordError``) naming it and what differs; ``prepare`` re-run on the folder rebuilds it.

Paths may be local or remote (``gs://`` with gcsfs, ``memory://``), opened through fsspec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, TypeVar

import grain
import numpy as np

from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.manifest import (  # load_manifest, shard_paths: also the trainer's, via reader
  check_shard_sizes,
  load_manifest,
  shard_expectation,
  shard_paths,
)
from data_pipeline.records import from_int16, parse_example
from data_pipeline.tfrecord import ShardExpectation, TFRecordReader

T = TypeVar("T")


class _ShardChainIterator(grain.DatasetIterator):
  """Reads the files one after another in a seeded order per epoch; the state is the epoch, the
  position in that epoch's order and the byte offset (and record number) in the current file.

  With ``expectations`` every file is checked at its end (``TFRecordReader``): record count and
  size on every pass, the record-CRC digest on every pass that started at byte 0 (a file entered
  mid-way after ``set_state`` is digested on its next full pass), and, where the manifest only has
  the whole file's sha256, that hash on the first full pass of each file in this iterator (hashing
  every pass would cost more than the rest of the reading: 2,050 -> 830 clips/s in
  benchmarks/pipeline_throughput.py's reader). The digests are per pass, not part of the state."""

  def __init__(
    self,
    files: Sequence[str],
    seed: int,
    num_epochs: int | None,
    expectations: Sequence[ShardExpectation] | None,
  ):
    super().__init__()
    self._files, self._seed, self._num_epochs = list(files), seed, num_epochs
    self._expect = list(expectations) if expectations is not None else None
    self._sha_verified: set[int] = set()  # files whose whole-file sha256 was checked
    self._epoch, self._position, self._reader = 0, 0, None
    self._order = self._epoch_order(0)

  def _epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self._seed, epoch]).permutation(len(self._files))

  def _open(self, offset: int = 0, index: int = 0) -> None:
    i = int(self._order[self._position])
    expect = self._expect[i] if self._expect is not None else None
    hash_bytes = (
      expect is not None
      and expect.record_crcs_sha256 is None
      and expect.sha256 is not None
      and i not in self._sha_verified
    )
    self._reader = TFRecordReader(
      self._files[i],
      offset,
      index,
      expect=expect,
      hash_crcs=expect is not None and expect.record_crcs_sha256 is not None,
      hash_bytes=hash_bytes,
    )

  def __next__(self) -> bytes:
    while True:
      if self._num_epochs is not None and self._epoch >= self._num_epochs:
        raise StopIteration
      if self._reader is None:
        self._open()
      try:
        return next(self._reader)
      except StopIteration:  # the reader checked the file against its expectation
        if self._reader.hashed_bytes:
          self._sha_verified.add(int(self._order[self._position]))
        self._reader.close()
        self._reader = None
        self._position += 1
        if self._position == len(self._files):
          self._epoch, self._position = self._epoch + 1, 0
          self._order = self._epoch_order(self._epoch)

  def get_state(self) -> dict[str, int]:
    offset, index = (self._reader.tell(), self._reader.index) if self._reader else (0, 0)
    return {"epoch": self._epoch, "position": self._position, "offset": offset, "index": index}

  def set_state(self, state: dict[str, int]) -> None:
    if self._reader is not None:
      self._reader.close()
      self._reader = None
    self._epoch, self._position = state["epoch"], state["position"]
    self._order = self._epoch_order(self._epoch)
    if state["offset"]:
      self._open(state["offset"], state["index"])


class ShardChainIterDataset(grain.IterDataset):
  """Records of many TFRecord files, file after file, in a seeded shuffled order per epoch
  (``num_epochs=None``: forever). One sequential reader: cheaper than grain's interleave, whose
  per-file prefetch threads cost more than the reading itself on local disks.

  ``expectations``: one ``ShardExpectation`` per file (from the manifest), checked as each file
  ends (see ``_ShardChainIterator``); a mismatch raises ``ShardMismatchError``."""

  def __init__(
    self,
    files: Sequence[str],
    *,
    seed: int,
    num_epochs: int | None = None,
    expectations: Sequence[ShardExpectation] | None = None,
  ):
    super().__init__()
    if not files:
      raise ValueError("no files to read")
    if expectations is not None and len(expectations) != len(files):
      raise ValueError(f"{len(expectations)} shard expectations for {len(files)} files")
    self._files, self._seed, self._num_epochs = list(files), seed, num_epochs
    self._expect = list(expectations) if expectations is not None else None

  def __iter__(self) -> grain.DatasetIterator:
    return _ShardChainIterator(self._files, self._seed, self._num_epochs, self._expect)


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  crop_samples: int = 5 * SAMPLE_RATE  # samples per training clip (5 s)
  batch_size: int = 8  # clips per batch in THIS process (global batch / process count)
  shuffle_window: int = 1024  # crops in the window shuffle buffer (int16: 240 kB per 5 s crop);
  # grain's window shuffle costs ~2.5 ms per element below ~64
  num_epochs: int | None = None  # None: repeat forever
  seed: int = 0  # file order, window shuffle and crop positions
  drop_remainder: bool = True  # static batch shapes
  train_shards: int = 0  # read only the first N shards of the train split (0: all of them)


def process_files(paths: Sequence[T], process_index: int, process_count: int) -> list[T]:
  """This process's disjoint share of the shards (together they cover all of them)."""
  mine = list(paths[process_index::process_count])
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


def labels_per_crop(crop_samples: int, hop: int) -> int:
  """Teacher labels that come with a crop of ``crop_samples`` samples (``hop`` samples each)."""
  return int(round(crop_samples / hop))


class CropToLabels(grain.transforms.RandomMap):
  """Random hop-aligned crop of audio (kept int16) and its tokens."""

  def __init__(self, crop_samples: int, hop: int):
    self.crop = crop_samples
    self.hop = hop
    self.num_labels = labels_per_crop(crop_samples, hop)

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


def checked_shards(
  data_dir: str, manifest: dict[str, Any], split: str
) -> list[tuple[str, ShardExpectation]]:
  """(path, manifest expectation) of every shard of ``split``, after checking that each has the
  size its manifest lists (``manifest.check_shard_sizes``: a missing, emptied or cut shard is
  refused here, in one line naming it, before any training)."""
  check_shard_sizes(data_dir, manifest, split)
  entries = manifest["splits"][split]["shards"]
  return list(zip(shard_paths(data_dir, manifest, split), map(shard_expectation, entries)))


def train_subset(
  shards: list[tuple[str, ShardExpectation]], n: int, data_dir: str
) -> list[tuple[str, ShardExpectation]]:
  """The first ``n`` training shards (all when ``n`` is 0): the data-size axis of a scaling
  experiment. ``prepare`` deals seeded-shuffled segments of every file into its shards, so a prefix
  is a random sample of the corpus, not its first files."""
  if n < 0 or n > len(shards):
    raise ValueError(
      f"{data_dir}: data.train_shards={n} but the train split has {len(shards)} shards; set it "
      f"to 1..{len(shards)}, or 0 for all"
    )
  return shards[:n] if n else shards


def read_shards(
  data_dir: str, manifest: dict[str, Any], split: str, cfg: ReaderConfig
) -> list[tuple[str, ShardExpectation]]:
  """The checked shards of ``split`` that ``cfg`` reads (``cfg.train_shards`` cuts the train
  split)."""
  shards = checked_shards(data_dir, manifest, split)
  return train_subset(shards, cfg.train_shards, data_dir) if split == "train" else shards


def subset_hours(manifest: dict[str, Any], n: int) -> float:
  """Hours of audio in the first ``n`` training shards (all when ``n`` is 0)."""
  entries = manifest["splits"]["train"]["shards"]
  samples = sum(e["num_samples"] for e in (entries[:n] if n else entries))
  return samples / manifest["sample_rate"] / 3600


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
  shards = process_files(read_shards(data_dir, manifest, split, cfg), process_index, process_count)
  drop = DropShort(cfg.crop_samples)
  return _pipeline(shards, cfg, manifest["hop"], drop, salt=0), drop


def _pipeline(
  shards: list[tuple[str, ShardExpectation]],
  cfg: ReaderConfig,
  hop: int,
  drop: DropShort,
  salt: int,
) -> grain.IterDataset:
  """chain -> parse -> drop short -> crop -> window shuffle -> float32 -> batch (seeds offset by
  ``salt``)."""
  ds = ShardChainIterDataset(
    [path for path, _ in shards],
    seed=cfg.seed + salt,
    num_epochs=cfg.num_epochs,
    expectations=[expect for _, expect in shards],
  )
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
  shards = read_shards(data_dir, manifest, split, cfg)
  per = groups // process_count
  datasets, drops = [], []
  for g in range(process_index * per, (process_index + 1) * per):
    drop = DropShort(cfg.crop_samples)
    datasets.append(
      _pipeline(process_files(shards, g, groups), cfg, manifest["hop"], drop, salt=7919 * g)
    )
    drops.append(drop)
  return _GroupsDataset(datasets), drops
