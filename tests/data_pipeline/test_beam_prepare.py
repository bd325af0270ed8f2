"""data_pipeline/beam_prepare.py (prepare --engine=beam): the local engine's output, byte for byte,
with one and two DirectRunner workers; the restart and bad-input contracts; a bucket in and out;
the k-means sample the same for any partition of the files."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from data_pipeline import (
  beam_options,
  beam_prepare,
  frame_sample,
  prepare_jobs,
  prepare_local,
)
from data_pipeline import prepare as prepare_lib
from data_pipeline.teachers import kmeans, kmeans_features
from tests.data_pipeline.fixtures import make_corpus, prepare_config, records
from tests.data_pipeline.test_shard_checks import _argv, record_ends

pytestmark = [
  pytest.mark.multiprocess,
  pytest.mark.long,
]  # the two-worker runs start Beam worker processes


def _shard_bytes(out: str, m: dict) -> dict[str, bytes]:
  return {
    s["path"]: open(os.path.join(out, s["path"]), "rb").read()
    for info in m["splits"].values()
    for s in info["shards"]
  }


@pytest.mark.parametrize("workers", [1, 2])
def test_same_output_as_the_local_engine(corpus, prepared, tmp_path, workers):
  """One and two workers: the manifest's content hash and every shard's bytes are the local
  engine's; no cache and no hand-over folder is left behind."""
  out, m = prepared
  cfg = prepare_config(corpus[0], tmp_path, workers=workers, engine="beam")
  mb = beam_prepare.prepare(cfg, progress=False)
  assert mb["content_hash"] == m["content_hash"]
  assert mb["splits"] == m["splits"] and mb["teacher"] == m["teacher"]
  assert _shard_bytes(str(tmp_path), mb) == _shard_bytes(out, m)
  assert {k: v for k, v in mb.items() if k != "options"} == {
    k: v for k, v in m.items() if k != "options"
  }
  assert not os.path.exists(tmp_path / ".beam") and not os.path.exists(tmp_path / ".work")


def test_restart_keeps_whole_shards_and_rebuilds_the_rest(corpus, prepared, tmp_path, capsys):
  """After a crash: an emptied shard, a shard cut at a record boundary and a half-written
  temporary file. The re-run keeps the whole shards untouched, rebuilds the two with one line
  each, and ends with the first run's manifest."""
  root = corpus[0]
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out, ignore=shutil.ignore_patterns(".work"))
  m = prepared[1]
  shards = m["splits"]["train"]["shards"]
  emptied, cut = shards[0], shards[1]
  os.truncate(out / emptied["path"], 0)
  os.truncate(out / cut["path"], record_ends(str(out / cut["path"]))[-2])
  (out / (cut["path"] + ".tmp")).write_bytes(b"half-written")
  untouched = {
    s["path"]: os.stat(out / s["path"]).st_mtime_ns
    for info in m["splits"].values()
    for s in info["shards"]
    if s["path"] not in (emptied["path"], cut["path"])
  }
  m2 = beam_prepare.prepare(prepare_config(root, out, workers=1, engine="beam"), progress=False)
  err = capsys.readouterr().err
  assert m2["content_hash"] == m["content_hash"]
  assert {p: os.stat(out / p).st_mtime_ns for p in untouched} == untouched
  assert f"{out / emptied['path']} holds 0 of its {emptied['num_records']} records" in err, err
  n = cut["num_records"]
  assert f"{out / cut['path']} holds {n - 1} of its {n} records" in err, err
  assert err.count("; rebuilt it") == 2, err
  assert not (out / (cut["path"] + ".tmp")).exists()


def test_flipped_byte_in_a_beam_shard_is_detected(corpus, tmp_path):
  """The reader's CRC check on a shard the Beam engine wrote (its own run, not a copy)."""
  from data_pipeline.tfrecord import CorruptRecordError, read_records

  out = tmp_path / "out"
  m = beam_prepare.prepare(prepare_config(corpus[0], out, workers=1), progress=False)
  shard = m["splits"]["train"]["shards"][0]["path"]
  data = bytearray((out / shard).read_bytes())
  data[12 + 1000] ^= 0x01  # inside record 0's payload
  (out / shard).write_bytes(bytes(data))
  with pytest.raises(
    CorruptRecordError, match=rf"corrupt shard .*{shard}: record 0 .*data CRC mismatch"
  ):
    list(read_records(str(out / shard)))


def test_cli_passes_beam_options_through_and_refuses_them_without_beam(corpus, tmp_path, capsys):
  root = corpus[0]
  cfg = prepare_config(root, tmp_path / "o", workers=1, engine="beam")
  assert prepare_lib.main([*_argv(cfg), "--runner=DirectRunner", "--direct_num_workers=1"]) == 0
  assert json.loads((tmp_path / "o" / "manifest.json").read_text())["num_used_files"] == 4
  with pytest.raises(SystemExit):
    prepare_lib.main([f"--input={root}", f"--output={tmp_path / 'p'}", "--runner=DirectRunner"])
  err = capsys.readouterr().err
  assert "unrecognized arguments: --runner=DirectRunner (Beam pipeline options need " in err
  with pytest.raises(SystemExit):  # a misspelt Beam option is one line, not dropped by Beam
    prepare_lib.main(
      [f"--input={root}", f"--output={tmp_path / 'p'}", "--engine=beam", "--direct_num_wrkers=2"]
    )
  err = capsys.readouterr().err
  assert err.startswith("error: unrecognized arguments: --direct_num_wrkers=2; did you mean ")
  assert "--direct_num_workers? (neither prepare's nor Beam's)" in err and err.count("\n") == 1
  assert not (tmp_path / "p").exists()


def test_pipeline_options_default_to_the_workers_on_the_direct_runner():
  cfg = prepare_config("i", "o", workers=3, engine="beam")
  direct = beam_options.pipeline_options(cfg.workers, []).view_as(beam_prepare.DirectOptions)
  assert direct.direct_num_workers == 3 and direct.direct_running_mode == "multi_processing"
  direct = beam_options.pipeline_options(cfg.workers, ["--direct_num_workers=1"]).view_as(
    beam_prepare.DirectOptions
  )
  assert direct.direct_num_workers == 1 and direct.direct_running_mode != "multi_processing"


def test_bucket_in_and_out(gcs, tmp_path):
  """Music in gs://B/music, shards in gs://B/data, two worker processes: the manifest's content
  hash is that of the same run on local folders."""
  import fsspec

  music = tmp_path / "music"
  make_corpus(str(music), seconds=(11.0, 9.5, 13.0))
  fs = fsspec.filesystem("gs")
  fs.put(str(music), f"{gcs.name}/music", recursive=True)
  remote = prepare_config(gcs.path("music"), gcs.path("data"), workers=2, engine="beam")
  m = beam_prepare.prepare(remote, progress=False)
  here = beam_prepare.prepare(
    prepare_config(str(music), str(tmp_path / "data"), workers=1), progress=False
  )
  assert m["content_hash"] == here["content_hash"] and m["num_used_files"] == 3
  names = set(fs.ls(f"{gcs.name}/data", detail=False))
  assert f"{gcs.name}/data/manifest.json" in names and f"{gcs.name}/data/.beam" not in names
  covered = sum(r["num_samples"] for _, r in records(str(tmp_path / "data"), here))
  assert covered == sum(s["num_samples"] for i in m["splits"].values() for s in i["shards"])


# ------------------------------------------------------------------------ the k-means sample


def _candidates(n_files: int, dim: int = 3, limit: int = 50, seed: int = 7):
  rng = np.random.default_rng(0)
  files = {
    f"f{i}.wav": rng.standard_normal((int(rng.integers(5, 80)), dim)) for i in range(n_files)
  }
  return {
    rel: frame_sample.FrameSample.of_file(limit, f.astype(np.float32), seed, rel)
    for rel, f in files.items()
  }, files


def _reference(files: dict, chosen: list[str], limit: int, seed: int = 7) -> np.ndarray:
  """The sample by its definition: the ``limit`` smallest keys over the chosen files' frames."""
  keys = np.concatenate([frame_sample.frame_keys(seed, r, len(files[r])) for r in chosen])
  feats = np.concatenate([files[r] for r in chosen]).astype(np.float32)
  return feats[np.argsort(keys)[:limit]]


def test_frame_sample_is_the_same_for_any_order_and_partition():
  cands, files = _candidates(12)
  want = _reference(files, sorted(files), 50)
  rng = np.random.default_rng(1)
  for _ in range(5):
    order = list(rng.permutation(sorted(files)))
    cut = sorted(rng.choice(np.arange(1, len(order)), 3, replace=False))
    parts = [order[a:b] for a, b in itertools.pairwise([0, *cut, len(order)])]
    merged = frame_sample.FrameSample.empty(50, 3)
    for part in parts:
      acc = frame_sample.FrameSample.empty(50, 3)
      for rel in part:
        acc = acc.add(cands[rel])
      merged = merged.add(acc)
    got = merged.compact()
    np.testing.assert_array_equal(got.features, want)
    assert got.frames_seen == sum(len(f) for f in files.values())


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.01])
def test_train_sample_leaves_out_the_valid_files_in_any_merge_order(fraction):
  """TrainSample (the Beam combiner) against valid_split + the sample's definition, including the
  fallback valid file (fraction 0.01: no file scores below it) and no valid split (0.0)."""
  cands, files = _candidates(10)
  seed = 3
  valid = prepare_jobs.valid_split(sorted(files), fraction, seed)
  assert (fraction == 0.0) == (not valid)
  want = _reference(files, [r for r in sorted(files) if r not in valid], 50)
  fn = beam_prepare.TrainSampleFn(50, 3, fraction)
  rng = np.random.default_rng(2)
  for _ in range(4):
    order = list(rng.permutation(sorted(files)))
    accs = [fn.create_accumulator() for _ in range(3)]
    for i, rel in enumerate(order):
      fn.add_input(accs[i % 3], (prepare_jobs.valid_score(rel, seed), rel, cands[rel]))
    got = fn.extract_output(fn.merge_accumulators(accs[::-1] if i % 2 else accs))
    np.testing.assert_array_equal(got.features, want)


def test_kmeans_teacher_from_a_sample_equals_the_teacher_fitted_on_the_files():
  cfg = kmeans_features.KMeansConfig(num_codebooks=2, codebook_size=8, max_fit_frames=600)
  rng = np.random.default_rng(5)
  audios = [(f"a{i}", (0.1 * rng.standard_normal(24000 * 2)).astype(np.float32)) for i in range(3)]
  direct = kmeans.KMeansTeacher.fit(audios, config=cfg, seed=4)
  sample = frame_sample.FrameSample.empty(cfg.max_fit_frames, cfg.feature_dim)
  for rel, audio in reversed(audios):  # another order, one file at a time
    sample = sample.add(kmeans_features.file_candidates(rel, audio, cfg, 4))
  from_sample = kmeans.KMeansTeacher.fit_sample(sample, config=cfg, seed=4)
  assert from_sample.centroids_sha256 == direct.centroids_sha256
  assert (
    hashlib.sha256(from_sample.mean.tobytes()).digest()
    == hashlib.sha256(direct.mean.tobytes()).digest()
  )


def test_encodec_teacher_whole_files_same_as_the_local_engine(tmp_path):
  """The EnCodec teacher (untrained, seeded) in one pass per file: the Beam engine with two
  workers writes what the local engine writes."""
  root = tmp_path / "music"
  make_corpus(str(root), seconds=(7.0, 5.5, 6.25))
  kw = dict(teacher="encodec", encodec="random-init", encodec_mode="whole", valid_fraction=0.0)
  here = prepare_local.prepare(prepare_config(root, tmp_path / "local", **kw), progress=False)
  beam = beam_prepare.prepare(
    prepare_config(root, tmp_path / "beam", workers=2, engine="beam", **kw), progress=False
  )
  assert beam["content_hash"] == here["content_hash"]
  assert here["teacher"]["settings"]["mode"] == "whole" and here["num_codebooks"] == 8
