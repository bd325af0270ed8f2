"""The prepared dataset's manifest, defined once: file name, format tag, shard names, content,
reading and writing.

A dataset folder (written by ``prepare`` or ``tfds_builder.to_tfrecord``) holds the shards
``{split}-NNNNN-of-NNNNN.tfrecord`` and ``manifest.json``, which lists them (paths relative to the
folder) with record counts, hours, the audio contract, the teacher config and a content hash. The
manifest is written last and atomically: a folder with one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any

import fsspec

from data_pipeline.atomic import atomic_write_text

MANIFEST = "manifest.json"
FORMAT = "mert-jax-tfrecord-v1"


def shard_name(split: str, index: int, count: int) -> str:
  """Name of shard ``index`` of ``count`` in ``split``: ``train-00001-of-00004.tfrecord``."""
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def manifest_path(data_dir: str | os.PathLike) -> str:
  """Where the manifest of ``data_dir`` (local or remote) is."""
  return posixpath.join(os.fspath(data_dir), MANIFEST)


def shard_info(path: str, lengths: list[int]) -> dict[str, Any]:
  """The manifest entry of a finished local shard: name, record count, samples and sha256."""
  sha = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      sha.update(block)
  return {
    "path": os.path.basename(path),
    "num_records": len(lengths),
    "num_samples": int(sum(lengths)),
    "min_record_samples": int(min(lengths)),
    "sha256": sha.hexdigest(),
  }


def build_manifest(
  shards_by_split: dict[str, list[dict[str, Any]]],
  files_by_split: dict[str, int],
  teacher_config: dict[str, Any],
  *,
  sample_rate: int,
  hop: int,
  counts: dict[str, int],
  options: dict[str, Any],
) -> dict[str, Any]:
  """The dataset manifest; ``content_hash`` is a sha256 over the teacher config and every shard.

  shards_by_split: ``shard_info`` entries in shard order; teacher_config: ``Teacher.config()``."""
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
