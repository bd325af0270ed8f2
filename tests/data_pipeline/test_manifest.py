"""data_pipeline/manifest.py: names, content hash, and the clear errors of a wrong folder."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from data_pipeline import manifest as manifest_lib
from data_pipeline.tfrecord import TFRecordWriter

TEACHER = {"name": "kmeans", "num_codebooks": 2, "codebook_size": 16}


def _manifest(tmp_path, sha="ab"):
  shard = tmp_path / manifest_lib.shard_name("train", 0, 1)
  with TFRecordWriter(str(shard)) as w:
    w.write(b"record one")
    w.write(b"record two")
  info = manifest_lib.shard_info(str(shard), [48000, 24000])
  return manifest_lib.build_manifest(
    {"train": [dict(info, sha256=sha)]},
    {"train": 2},
    TEACHER,
    sample_rate=24000,
    hop=320,
    counts={"num_input_files": 2},
    options={"seed": 0},
  )


def test_shard_info_reads_the_shard_back(tmp_path):
  path = str(tmp_path / "s.tfrecord")
  with TFRecordWriter(path) as w:
    w.write(b"record one")
    w.write(b"record two")
  info = manifest_lib.shard_info(path, [48000, 24000])
  data = open(path, "rb").read()
  assert info["num_bytes"] == len(data) == 2 * (16 + 10)
  assert info["sha256"] == hashlib.sha256(data).hexdigest()
  framing = data[:12] + data[22:26] + data[26:38] + data[48:52]  # headers and payload CRCs
  assert info["record_crcs_sha256"] == hashlib.sha256(framing).hexdigest()
  with pytest.raises(ValueError, match=r"holds 2 records, 3 were written to it"):
    manifest_lib.shard_info(path, [1, 2, 3])


def test_shard_name():
  assert manifest_lib.shard_name("train", 1, 12) == "train-00001-of-00012.tfrecord"
  assert manifest_lib.shard_name("valid", 0, 1) == "valid-00000-of-00001.tfrecord"


def test_build_write_load_round_trip(tmp_path):
  m = _manifest(tmp_path)
  assert m["format"] == manifest_lib.FORMAT == "mert-jax-tfrecord-v1"
  assert (m["num_codebooks"], m["codebook_size"], m["label_rate"]) == (2, 16, 75.0)
  train = m["splits"]["train"]
  assert (train["num_records"], train["num_samples"], train["num_files"]) == (2, 72000, 2)
  assert train["shards"][0]["min_record_samples"] == 24000
  assert m["total_hours"] == 72000 / 24000 / 3600 and m["num_input_files"] == 2
  manifest_lib.write_manifest(str(tmp_path), m)
  assert sorted(os.listdir(tmp_path)) == ["manifest.json", "train-00000-of-00001.tfrecord"]
  assert manifest_lib.load_manifest(str(tmp_path)) == m
  paths = manifest_lib.shard_paths(str(tmp_path), m, "train")
  assert paths == [str(tmp_path / "train-00000-of-00001.tfrecord")]


def test_content_hash_covers_shards_and_teacher(tmp_path):
  m = _manifest(tmp_path)
  assert _manifest(tmp_path)["content_hash"] == m["content_hash"]
  assert _manifest(tmp_path, sha="cd")["content_hash"] != m["content_hash"]
  other = manifest_lib.build_manifest(
    {"train": m["splits"]["train"]["shards"]},
    {"train": 2},
    dict(TEACHER, codebook_size=32),
    sample_rate=24000,
    hop=320,
    counts={},
    options={},
  )
  assert other["content_hash"] != m["content_hash"]


def test_missing_manifest_names_the_command(tmp_path):
  with pytest.raises(
    FileNotFoundError,
    match=r"manifest.json not found: .* is not a folder "
    r"written by `python -m data_pipeline.prepare`",
  ):
    manifest_lib.load_manifest(str(tmp_path))


def test_wrong_format_is_refused(tmp_path):
  (tmp_path / "manifest.json").write_text(json.dumps({"format": "mert-jax-tfrecord-v0"}))
  with pytest.raises(ValueError, match="unknown dataset format 'mert-jax-tfrecord-v0'"):
    manifest_lib.load_manifest(str(tmp_path))


def test_missing_split_lists_the_splits(tmp_path):
  m = _manifest(tmp_path)
  with pytest.raises(ValueError, match=r"has no 'valid' split \(it has \['train'\]\)"):
    manifest_lib.shard_paths(str(tmp_path), m, "valid")


def test_remote_manifest(tmp_path):
  m = _manifest(tmp_path)
  manifest_lib.write_manifest("memory:///manifest_test", m)
  assert manifest_lib.load_manifest("memory:///manifest_test") == m
