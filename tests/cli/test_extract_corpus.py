"""extract of a folder as a corpus, on both engines: --engine=beam (DirectRunner, in process)
writes the local engine's features array for array, reports the file it could not use in
skipped.jsonl and on stderr (exit 3), a re-run keeps what was written and extracts only what is
missing, and a re-run with other options into the same folder is refused in one line."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from mert_jax.cli import extract as extract_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, music: np.ndarray) -> str:
  """Three clips of real music (one in a sub-folder, one 3.5 s: another length bucket) and a file
  that does not decode."""
  root = tmp_path_factory.mktemp("corpus")
  (root / "album").mkdir()
  sf.write(root / "a.wav", music[: 2 * 24000], 24000)
  sf.write(root / "album" / "b.flac", music[24000 : 3 * 24000], 24000)
  sf.write(root / "album" / "c.wav", music[: int(3.5 * 24000)], 24000)
  (root / "broken.ogg").write_bytes(b"OggS not really")
  return str(root)


def _argv(ckpt: str, audio: str, out, *extra: str) -> list[str]:
  return [f"--checkpoint={ckpt}", f"--audio={audio}", f"--output={out}", *extra]


GOOD = ("a.wav", "album/b.flac", "album/c.wav")


def test_beam_engine_writes_the_local_engines_features_and_reports_the_skipped_file(
  tiny_checkpoint: str, corpus: str, tmp_path, capsys
) -> None:
  local, beam = tmp_path / "local", tmp_path / "beam"
  assert extract_cli.main(_argv(tiny_checkpoint, corpus, local)) == 3
  capsys.readouterr()
  argv = _argv(tiny_checkpoint, corpus, beam, "--engine=beam", "--direct_num_workers=1")
  assert extract_cli.main(argv) == 3
  out, err = capsys.readouterr()
  assert "4 audio files" in out and "3 files written, 0 kept from an earlier run, 1 skipped" in out
  assert f"skipped {os.path.join(corpus, 'broken.ogg')}" in err
  for rel in GOOD:
    np.testing.assert_array_equal(np.load(beam / f"{rel}.npy"), np.load(local / f"{rel}.npy"))
  assert not (beam / "broken.ogg.npy").exists() and not (beam / ".beam").exists()
  for folder in (local, beam):
    rows = [json.loads(line) for line in (folder / "skipped.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == ["broken.ogg"] and "broken.ogg" in rows[0]["reason"]
  assert json.loads((beam / "extract.json").read_text()) == json.loads(
    (local / "extract.json").read_text()
  )


def test_a_rerun_keeps_what_was_written_and_refuses_other_options(
  tiny_checkpoint: str, corpus: str, tmp_path, capsys
) -> None:
  out = tmp_path / "f"
  assert extract_cli.main(_argv(tiny_checkpoint, corpus, out, "--layers=0,2")) == 3
  first = {rel: np.load(out / f"{rel}.npy") for rel in GOOD}
  stamps = {rel: os.stat(out / f"{rel}.npy").st_mtime_ns for rel in GOOD}
  os.remove(out / "album" / "b.flac.npy")  # as if the run had died before this file
  capsys.readouterr()
  assert extract_cli.main(_argv(tiny_checkpoint, corpus, out, "--layers=0,2")) == 3
  printed = capsys.readouterr().out
  assert "2 kept from an earlier run, 2 to extract" in printed and "1 files written" in printed
  for rel in ("a.wav", "album/c.wav"):
    assert os.stat(out / f"{rel}.npy").st_mtime_ns == stamps[rel]
  np.testing.assert_array_equal(np.load(out / "album" / "b.flac.npy"), first["album/b.flac"])
  assert extract_cli.main(_argv(tiny_checkpoint, corpus, out, "--layers=1")) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(f"error: --output={out} holds features extracted ")
  assert "another layers (extract.json)" in err


def test_beam_options_need_the_beam_engine_and_beam_takes_folders(
  tiny_checkpoint: str, corpus: str, tmp_path, capsys
) -> None:
  with pytest.raises(SystemExit):
    extract_cli.main(_argv(tiny_checkpoint, corpus, tmp_path / "x", "--direct_num_workers=1"))
  assert "(Beam pipeline options need --engine=beam)" in capsys.readouterr().err
  bad_layers = _argv(tiny_checkpoint, corpus, tmp_path / "y", "--engine=beam", "--layers=7")
  assert extract_cli.main(bad_layers) == 1  # on the launcher, before any worker starts
  assert capsys.readouterr().err.startswith("error: --layers=7: comma-separated indices among")
  assert not (tmp_path / "y").exists()
  one = os.path.join(corpus, "a.wav")
  assert extract_cli.main(_argv(tiny_checkpoint, one, tmp_path / "a.npy", "--engine=beam")) == 1
  assert capsys.readouterr().err == (
    f"error: --engine=beam extracts a folder; --audio={one} is a file\n"
  )


def test_beam_engine_reads_and_writes_a_bucket(
  gcs, tiny_checkpoint: str, corpus: str, tmp_path, capsys
) -> None:
  """--audio and --output in a bucket (the local GCS emulator): the features equal the local
  engine's, skipped.jsonl and extract.json land beside them, the work folder is gone, and a
  re-run keeps every file."""
  import fsspec

  from mert_jax.files import storage

  music, feats = gcs.path("music"), gcs.path("feats")
  for rel in storage.files_under(corpus):
    storage.upload_file(os.path.join(corpus, rel), f"{music}/{rel}")
  argv = _argv(tiny_checkpoint, music, feats, "--engine=beam", "--direct_num_workers=1")
  assert extract_cli.main(argv) == 3
  local = tmp_path / "local"
  assert extract_cli.main(_argv(tiny_checkpoint, corpus, local)) == 3
  for rel in GOOD:
    with fsspec.open(f"{feats}/{rel}.npy", "rb") as f:
      np.testing.assert_array_equal(np.load(f), np.load(local / f"{rel}.npy"))
  with fsspec.open(f"{feats}/skipped.jsonl", "r") as f:
    assert [json.loads(line)["path"] for line in f.read().splitlines()] == ["broken.ogg"]
  assert storage.isfile(f"{feats}/extract.json") and not storage.exists(f"{feats}/.beam")
  capsys.readouterr()
  assert extract_cli.main(argv) == 3
  assert "3 kept from an earlier run, 1 to extract" in capsys.readouterr().out
