"""mert_jax/files/atomic.py: a write that fails leaves neither the target nor a temporary."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest

from mert_jax.files import atomic


def test_write_bytes_and_text(tmp_path):
  atomic.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
  atomic.atomic_write_text(str(tmp_path / "b.txt"), "é\n")
  assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
  assert (tmp_path / "b.txt").read_bytes() == "é\n".encode("utf-8")
  assert sorted(os.listdir(tmp_path)) == ["a.bin", "b.txt"]


def test_failure_mid_write_leaves_nothing(tmp_path):
  path = tmp_path / "x.npy"
  with pytest.raises(RuntimeError, match="crash"):
    with atomic.atomic_open(path, "wb") as f:
      np.save(f, np.arange(1000))
      assert os.path.exists(atomic.temp_path(path)) and not path.exists()
      raise RuntimeError("crash mid-write")
  assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path):
  path = tmp_path / "manifest.json"
  atomic.atomic_write_text(path, "old")
  with pytest.raises(KeyboardInterrupt):
    with atomic.atomic_open(path, "w") as f:
      f.write("new, half written")
      raise KeyboardInterrupt
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["manifest.json"]


def test_leftover_temporary_is_overwritten(tmp_path):
  path = tmp_path / "shard"
  (tmp_path / "shard.tmp").write_bytes(b"garbage of a killed process")
  atomic.atomic_write_bytes(path, b"whole")
  assert path.read_bytes() == b"whole" and os.listdir(tmp_path) == ["shard"]


def test_remote_paths():
  fs = fsspec.filesystem("memory")
  atomic.atomic_write_bytes("memory:///atomic_test/ok", b"data")
  assert fs.cat("/atomic_test/ok") == b"data"
  with pytest.raises(RuntimeError):
    with atomic.atomic_open("memory:///atomic_test/bad", "wb") as f:
      f.write(b"partial")
      raise RuntimeError("crash")
  assert fs.ls("/atomic_test", detail=False) == ["/atomic_test/ok"]


def test_only_whole_file_write_modes():
  with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
    atomic.atomic_open("x", "ab")


def test_atomic_dir(tmp_path):
  target = tmp_path / "teacher"
  with pytest.raises(RuntimeError):
    with atomic.atomic_dir(target) as tmp:
      open(os.path.join(tmp, "teacher.json"), "w").close()
      raise RuntimeError("crash")
  assert os.listdir(tmp_path) == []
  target.mkdir()  # an empty folder is replaced
  with atomic.atomic_dir(target) as tmp:
    open(os.path.join(tmp, "teacher.json"), "w").close()
  assert os.listdir(target) == ["teacher.json"] and os.listdir(tmp_path) == ["teacher"]
