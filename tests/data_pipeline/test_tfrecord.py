"""data_pipeline/tfrecord.py: the atomic writer and the CRC-checked reader."""

from __future__ import annotations

import os

import fsspec
import pytest

from data_pipeline.tfrecord import CorruptRecordError, TFRecordWriter, read_records


def test_writer_never_leaves_a_whole_looking_file(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  with pytest.raises(RuntimeError):
    with TFRecordWriter(path) as w:
      w.write(b"a" * 100)
      raise RuntimeError("crash mid-write")
  assert not os.path.exists(path) and not os.path.exists(path + ".tmp")


def test_records_round_trip_local_and_remote(tmp_path):
  payloads = [b"", b"x", os.urandom(5000)]
  for path in (str(tmp_path / "sub" / "r.tfrecord"), "memory:///tfrecord_test/r.tfrecord"):
    with TFRecordWriter(path) as w:
      for p in payloads:
        w.write(p)
    assert w.num_records == 3
    assert list(read_records(path)) == payloads
    fs, fs_path = fsspec.core.url_to_fs(path)
    assert not fs.exists(fs_path + ".tmp")


def test_flipped_byte_is_detected_with_shard_and_record_named(prepared, tmp_path):
  out, m = prepared
  shard = m["splits"]["train"]["shards"][0]["path"]
  data = bytearray(open(os.path.join(out, shard), "rb").read())
  first_len = int.from_bytes(data[:8], "little")
  second = 12 + first_len + 4  # start of record 1
  data[second + 12 + 1000] ^= 0x01  # inside record 1's payload
  bad = tmp_path / shard
  bad.write_bytes(bytes(data))
  with pytest.raises(
    CorruptRecordError, match=rf"corrupt shard .*{shard}: record 1 .*data CRC mismatch"
  ):
    list(read_records(str(bad)))


def test_truncated_shard_is_detected(tmp_path):
  path = str(tmp_path / "t.tfrecord")
  with TFRecordWriter(path) as w:
    w.write(b"a" * 100)
    w.write(b"b" * 100)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:-10])
  with pytest.raises(CorruptRecordError, match=r"record 1 .*truncated payload \(94 of 104 bytes\)"):
    list(read_records(path))
