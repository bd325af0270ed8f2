"""mert_jax/files/storage.py against a local GCS emulator (tests/gcs_emulator.py): folder operations
in a bucket, and the up-front write check that makes a bucket that does not exist or refuses
writes one line, given as prepare's --output before anything is read; atomic writes there."""

from __future__ import annotations

import os

import fsspec
import pytest

from data_pipeline import prepare as prepare_lib
from data_pipeline import prepare_local
from mert_jax.files import atomic, storage

MISSING = "gs://no-such-bucket/data"


def test_folder_operations_in_a_bucket(gcs, tmp_path) -> None:
  fs = fsspec.filesystem("gs")
  fs.pipe_file(f"{gcs.name}/in/a/x.wav", b"1")
  fs.pipe_file(f"{gcs.name}/in/b.txt", b"22")
  folder = gcs.path("in")
  assert storage.is_remote(folder) and not storage.is_remote(str(tmp_path))
  assert storage.isdir(folder) and storage.isfile(gcs.path("in", "b.txt"))
  assert storage.files_under(folder) == ["a/x.wav", "b.txt"]
  assert list(storage.file_stamps(folder)) == ["a/x.wav", "b.txt"]
  assert storage.list_names(folder) == ["a", "b.txt"] and storage.list_names(gcs.path("no")) == []
  with storage.local_copy(gcs.path("in", "b.txt")) as local:
    assert open(local, "rb").read() == b"22" and local.endswith(".txt")
  assert not os.path.exists(local)
  storage.remove(gcs.path("in", "a"))
  assert storage.files_under(folder) == ["b.txt"]


def test_atomic_writes_in_a_bucket(gcs) -> None:
  path = gcs.path("out", "f.bin")
  atomic.atomic_write_bytes(path, b"whole")
  with pytest.raises(RuntimeError), atomic.atomic_open(path, "wb") as f:
    f.write(b"half")
    raise RuntimeError("killed mid-write")
  assert storage.files_under(gcs.path("out")) == ["f.bin"]  # the old object, no temporary
  assert fsspec.open(path, "rb").open().read() == b"whole"
  folder = gcs.path("model")
  for names in (["w.bin", "stale.bin", "config.json"], ["w.bin", "config.json"]):
    with atomic.atomic_dir(folder, last="config.json") as tmp:
      for name in names:
        with open(os.path.join(tmp, name), "w") as f:
          f.write(name)
  assert storage.files_under(folder) == ["config.json", "w.bin"]  # replaced whole
  with pytest.raises(RuntimeError), atomic.atomic_dir(gcs.path("broken"), last="config.json"):
    raise RuntimeError("killed while building")
  assert not storage.exists(gcs.path("broken"))


def test_write_check_names_a_missing_or_read_only_bucket(gcs) -> None:
  storage.check_writable_folder(gcs.path("run"), "--workdir")  # passes, and leaves nothing
  assert storage.files_under(gcs.url) == []
  with pytest.raises(storage.StorageError) as e:
    storage.check_writable_folder(MISSING, "--output")
  assert str(e.value) == (
    f"--output={MISSING}: bucket 'no-such-bucket' does not exist (create it with: gcloud "
    "storage buckets create gs://no-such-bucket)"
  )
  read_only = f"gs://{gcs.emulator.bucket(read_only=True)}/data"
  with pytest.raises(
    storage.StorageError, match=r"--output=gs://\S+: bucket '\S+' refuses writes .*Forbidden"
  ):
    storage.check_writable_folder(read_only, "--output")
  atomic.atomic_write_text(gcs.path("a_file"), "x")
  with pytest.raises(storage.StorageError, match="is a file, not a folder"):
    storage.check_writable_folder(gcs.path("a_file"), "--output")


def test_prepare_refuses_a_bad_bucket_before_reading(gcs, tmp_path, monkeypatch, capsys) -> None:
  monkeypatch.setattr(prepare_local, "scan", lambda *a: pytest.fail("refused after scanning"))
  (tmp_path / "music").mkdir()
  read_only = f"gs://{gcs.emulator.bucket(read_only=True)}/data"
  for output, part in [
    (MISSING, "bucket 'no-such-bucket' does not exist"),
    (read_only, "refuses writes"),
  ]:
    assert prepare_lib.main([f"--input={tmp_path / 'music'}", f"--output={output}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --output={output}: ") and err.count("\n") == 1, err
    assert part in err
