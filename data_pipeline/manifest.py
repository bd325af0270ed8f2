"""The prepared dataset's manifest, defined once: file name, format tag, shard names, content,
reading and writing.

A dataset folder (written by ``prepare`` or ``tfds_builder.to_tfrecord``) holds the shards
``{split}-NNNNN-of-NNNNN.tfrecord`` and ``manifest.json``, which lists them (paths relative to the
folder) with record counts, sizes and digests, hours, the audio contract, the teacher config and a
content hash. The manifest is written last and atomically: a folder with one is complete.

The reader holds the shards to their entries: ``check_shard_sizes`` (every shard's size, when a
dataset is built) and ``shard_expectation`` (record count, size and digest, checked as each shard
is read: data_pipeline/tfrecord.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from typing import Any

import fsspec

from data_pipeline.tfrecord import REBUILD_HINT, ShardExpectation, ShardMismatchError, scan_shard
from mert_jax.files.atomic import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "mert-jax-tfrecord-v1"


def shard_name(split: str, index: int, count: int) -> str:
  """Name of shard ``index`` of ``count`` in ``split``: ``train-00001-of-00004.tfrecord``."""
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def manifest_path(data_dir: str | os.PathLike) -> str:
  """Where the manifest of ``data_dir`` (local or remote) is."""
  return posixpath.join(os.fspath(data_dir), MANIFEST)


def shard_info(path: str, lengths: list[int], scan: dict[str, Any] | None = None) -> dict[str, Any]:
  """The manifest entry of a finished shard holding records of ``lengths`` samples: name, record
  count, samples, size in bytes, the digest of its record CRCs and its sha256 (read back from the
  file, CRC-checked, unless ``scan`` gives ``tfrecord.scan_shard``'s result; a file that does not
  hold ``len(lengths)`` records is refused)."""
  scan = scan if scan is not None else scan_shard(path)
  if scan["num_records"] != len(lengths):
    raise ValueError(
      f"{path} holds {scan['num_records']} records, {len(lengths)} were written to it"
    )
  return {
    "path": os.path.basename(path),
    "num_records": len(lengths),
    "num_samples": int(sum(lengths)),
    "min_record_samples": int(min(lengths)),
    "num_bytes": scan["num_bytes"],
    "record_crcs_sha256": scan["record_crcs_sha256"],
    "sha256": scan["sha256"],
  }


def shard_expectation(entry: dict[str, Any]) -> ShardExpectation:
  """What the reader checks a shard against (fields a manifest lacks are None)."""
  return ShardExpectation(
    num_records=int(entry["num_records"]),
    num_bytes=entry.get("num_bytes"),
    record_crcs_sha256=entry.get("record_crcs_sha256"),
    sha256=entry.get("sha256"),
  )


def min_shard_bytes(entry: dict[str, Any], num_codebooks: int, hop: int) -> int:
  """A lower bound on a shard's size from its record and sample counts (for manifests without
  ``num_bytes``): every record holds its 16 framing bytes, its int16 audio and its int16 tokens."""
  samples = int(entry["num_samples"])
  return 16 * int(entry["num_records"]) + 2 * samples + 2 * num_codebooks * math.ceil(samples / hop)


def _file_sizes(paths: list[str]) -> list[int | None]:
  """Sizes of ``paths`` (one file system), None for a missing file; batched on object stores."""
  fs, _ = fsspec.core.url_to_fs(paths[0])
  fs_paths = [fsspec.core.url_to_fs(p)[1] for p in paths]
  try:
    return list(fs.sizes(fs_paths))
  except FileNotFoundError:
    sizes: list[int | None] = []
    for p in fs_paths:
      try:
        sizes.append(fs.size(p))
      except FileNotFoundError:
        sizes.append(None)
    return sizes


def check_shard_sizes(data_dir: str | os.PathLike, manifest: dict[str, Any], split: str) -> None:
  """Refuses, in one line naming the shard and both sizes, a ``split`` whose shards are missing or
  not the size their manifest entries list (one stat per shard: cheap enough for every dataset
  build). Manifests written before entries had ``num_bytes`` only give a lower bound
  (``min_shard_bytes``): it catches an emptied shard and, for records of seconds of audio, one cut
  at a record boundary; the reader's end-of-shard record count catches the rest."""
  paths = shard_paths(data_dir, manifest, split)
  entries = manifest["splits"][split]["shards"]
  bad = []
  for path, entry, size in zip(paths, entries, _file_sizes(paths)):
    want = entry.get("num_bytes")
    if size is None:
      bad.append(f"shard {path} is missing")
    elif want is not None and size != want:
      bad.append(f"shard {path} is {size} bytes where the manifest lists {want} (cut or replaced)")
    elif want is None:
      least = min_shard_bytes(entry, manifest.get("num_codebooks", 0), manifest.get("hop", 1))
      if size < least:
        bad.append(
          f"shard {path} is {size} bytes where its manifest entry ({entry['num_records']} "
          f"records, {entry['num_samples']} samples) needs at least {least} (cut)"
        )
  if bad:
    more = f" (and {len(bad) - 1} more of the {len(paths)} {split} shards)" if len(bad) > 1 else ""
    raise ShardMismatchError(f"{bad[0]}{more}; {REBUILD_HINT}")


def build_manifest(
  shards_by_split: dict[str, list[dict[str, Any]]],
  files_by_split: dict[str, int],
  teacher_config: dict[str, Any],
  *,
  sample_rate: int,
  hop: int,
  counts: dict[str, int],
  options: dict[str, Any],
  plan_hash: str | None = None,
) -> dict[str, Any]:
  """The dataset manifest; ``content_hash`` is a sha256 over the teacher config and every shard.

  shards_by_split: ``shard_info`` entries in shard order; teacher_config: ``Teacher.config()``;
  plan_hash: ``prepare``'s hash of the segments planned into each shard (a re-run over other input
  files is refused by comparing it)."""
  splits = {}
  for split, shards in shards_by_split.items():
    n = sum(s["num_samples"] for s in shards)
    splits[split] = {
      "shards": shards,
      "num_records": sum(s["num_records"] for s in shards),
      "num_samples": n,
      "hours": n / sample_rate / 3600,
      "num_files": files_by_split.get(split, 0),
    }
  content = hashlib.sha256(json.dumps(teacher_config, sort_keys=True).encode())
  for split in sorted(splits):
    for s in splits[split]["shards"]:
      content.update(f"{split}/{s['path']}:{s['sha256']}".encode())
  return {
    "format": FORMAT,
    "sample_rate": sample_rate,
    "hop": hop,
    "label_rate": sample_rate / hop,
    "audio_dtype": "int16",
    "teacher": teacher_config,
    "num_codebooks": teacher_config["num_codebooks"],
    "codebook_size": teacher_config["codebook_size"],
    "splits": splits,
    "total_hours": sum(s["hours"] for s in splits.values()),
    **counts,
    "content_hash": content.hexdigest(),
    "options": options,
    **({"plan_hash": plan_hash} if plan_hash is not None else {}),
  }


def write_manifest(data_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
  """Write ``data_dir/manifest.json`` atomically (the last step of writing a dataset)."""
  atomic_write_text(manifest_path(data_dir), json.dumps(manifest, indent=2))


def load_manifest(data_dir: str | os.PathLike) -> dict[str, Any]:
  """The manifest of a finished dataset folder (local or remote, through fsspec)."""
  path = manifest_path(data_dir)
  try:
    with fsspec.open(path, "r") as f:
      manifest = json.load(f)
  except FileNotFoundError as e:
    raise FileNotFoundError(
      f"{path} not found: {data_dir} is not a folder written by "
      f"`python -m data_pipeline.prepare` (or it did not finish)."
    ) from e
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: unknown dataset format {manifest.get('format')!r}")
  return manifest


def shard_paths(data_dir: str | os.PathLike, manifest: dict[str, Any], split: str) -> list[str]:
  """Paths of the shards of ``split``, in manifest order."""
  if split not in manifest["splits"]:
    raise ValueError(f"{data_dir} has no {split!r} split (it has {sorted(manifest['splits'])})")
  return [
    posixpath.join(os.fspath(data_dir), s["path"]) for s in manifest["splits"][split]["shards"]
  ]
