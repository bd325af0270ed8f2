"""data_pipeline/prepare.py: a music folder -> shards + manifest; every sample once, bit-exact,
deterministic, restartable, and a folder of bad inputs where nothing is lost."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_pipeline import example_audio, prepare_jobs, prepare_local
from data_pipeline.audio import decode_file
from data_pipeline.teachers import encodec, factory
from tests.data_pipeline.fixtures import HOP, prepare_config, records

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


def test_manifest_and_records_match_the_decoded_sources(corpus, prepared):
  root, rels = corpus
  out, m = prepared
  assert m["sample_rate"] == 24000 and m["label_rate"] == 75.0 and m["num_codebooks"] == 4
  assert m["num_used_files"] == 4 and m["num_skipped_files"] == 0 and m["num_ignored_files"] == 1
  assert set(m["splits"]) == {"train", "valid"} and len(m["splits"]["train"]["shards"]) >= 2
  teacher = factory.load_teacher(os.path.join(out, "teacher"))
  sources = {rel: decode_file(os.path.join(root, rel), 24000, 1) for rel in rels}
  full_tokens = {
    rel: teacher.tokens(pcm.astype(np.float32) / 32768) for rel, pcm in sources.items()
  }
  covered = {rel: 0 for rel in rels}
  for _, r in records(out, m):
    pcm = sources[r["source_id"]]
    np.testing.assert_array_equal(
      r["audio"], pcm[r["offset"] : r["offset"] + r["num_samples"]]
    )  # bit-exact
    assert r["offset"] % HOP == 0 and r["num_tokens"] == -(-r["num_samples"] // HOP)
    t0 = r["offset"] // HOP
    np.testing.assert_array_equal(
      r["tokens"], full_tokens[r["source_id"]][:, t0 : t0 + r["num_tokens"]]
    )
    covered[r["source_id"]] += r["num_samples"]
  assert covered == {rel: len(pcm) for rel, pcm in sources.items()}  # every sample, once
  hours = sum(len(p) for p in sources.values()) / 24000 / 3600
  assert abs(m["total_hours"] - hours) < 1e-9


def test_prepare_is_deterministic(corpus, prepared, tmp_path):
  out, m = prepared
  m2 = prepare_local.prepare(prepare_config(corpus[0], tmp_path), progress=False)
  assert m2["content_hash"] == m["content_hash"]
  for shard in m["splits"]["train"]["shards"]:
    with (
      open(os.path.join(out, shard["path"]), "rb") as a,
      open(tmp_path / shard["path"], "rb") as b,
    ):
      assert a.read() == b.read()
  assert not (tmp_path / ".work").exists()  # cache removed without --keep-cache


def test_restart_redoes_only_unfinished_shards(corpus, prepared, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  m = prepared[1]
  shards = [s["path"] for s in m["splits"]["train"]["shards"]]
  victim = shards[1]
  os.remove(out / victim)
  os.remove(out / "manifest.json")
  (out / (victim + ".tmp")).write_bytes(b"half-written garbage")  # what a crash mid-write leaves
  mtimes = {p: os.stat(out / p).st_mtime_ns for p in shards if p != victim}
  m2 = prepare_local.prepare(prepare_config(corpus[0], out, keep_cache=True), progress=False)
  assert m2["content_hash"] == m["content_hash"]
  assert {p: os.stat(out / p).st_mtime_ns for p in mtimes} == mtimes  # finished shards untouched
  assert not (out / (victim + ".tmp")).exists()


def test_resumed_run_refuses_other_options(corpus, prepared, tmp_path):
  """An unfinished run (no manifest yet) continued with other options: refused from its plan
  record before anything is decoded (test_shard_checks.py: the same for a finished run)."""
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  os.remove(out / "manifest.json")
  with pytest.raises(
    ValueError,
    match=r"holds an unfinished run prepared with other options \(--kmeans-codebooks 4 -> 8\); "
    r"use a new --output, or --overwrite",
  ):
    prepare_local.prepare(prepare_config(corpus[0], out, kmeans_codebooks=8), progress=False)


def test_teacher_options_are_checked_before_decoding(corpus, tmp_path):
  with pytest.raises(ValueError, match="--teacher=encodec needs --encodec=PATH_OR_HUB_ID"):
    prepare_local.prepare(prepare_config(corpus[0], tmp_path, teacher="encodec"), progress=False)
  with pytest.raises(ValueError, match="--teacher must be kmeans or encodec, got 'hubert'"):
    prepare_local.prepare(prepare_config(corpus[0], tmp_path, teacher="hubert"), progress=False)
  assert not os.listdir(tmp_path)  # nothing decoded, nothing written


def test_teacher_request_maps_options_to_make_teacher():
  cfg = prepare_config("in", "out", seed=5)
  name, kwargs = prepare_jobs.teacher_request(cfg, ())
  assert name == "kmeans" and kwargs["seed"] == 5 and kwargs["audios"] == ()
  assert (kwargs["config"].num_codebooks, kwargs["config"].codebook_size) == (4, 32)
  assert kwargs["config"].max_fit_frames == 4000
  enc = prepare_config("in", "out", teacher="encodec", encodec="random-init", seed=2)
  default = encodec.EncodecTeacherConfig(num_threads=1)
  assert prepare_jobs.teacher_request(enc, ()) == ("encodec", {"seed": 2, "config": default})
  enc = prepare_config(
    "in", "out", teacher="encodec", encodec="/weights", encodec_mode="whole", device="auto"
  )
  whole = dataclasses.replace(default, mode="whole", device="auto")
  assert prepare_jobs.teacher_request(enc, ()) == (
    "encodec",
    {"source": "/weights", "config": whole},
  )


def test_segment_bounds_lose_nothing():
  assert prepare_jobs.segment_bounds(1000, 300, 100) == [
    (0, 300),
    (300, 300),
    (600, 300),
    (900, 100),
  ]
  assert prepare_jobs.segment_bounds(950, 300, 100) == [(0, 300), (300, 300), (600, 350)]
  assert prepare_jobs.segment_bounds(50, 300, 100) == [(0, 50)]
  assert prepare_jobs.segment_bounds(0, 300, 100) == []


def test_valid_split_is_seeded_and_never_empty():
  files = [f"f{i}.wav" for i in range(20)]
  chosen = prepare_jobs.valid_split(files, 0.01, seed=0)
  assert len(chosen) >= 1 and chosen == prepare_jobs.valid_split(files, 0.01, seed=0)
  assert prepare_jobs.valid_split(files, 0.0, seed=0) == set()
  assert prepare_jobs.valid_split(files[:1], 0.5, seed=0) == set()


# ------------------------------------------------------------------------------------ bad inputs


def _bad_folder(root):
  """Good real-music files and every kind of bad input; returns (good, bad) relative paths."""
  os.makedirs(root, exist_ok=True)
  music = example_audio.music_clip(seconds=12.0)
  good, bad = [], []

  def w(rel, x, sr, **kw):
    sf.write(os.path.join(root, rel), x, sr, **kw)

  w("good.wav", music, 24000, subtype="PCM_16")
  good.append("good.wav")
  import soxr

  w("rate8k.wav", soxr.resample(music, 24000, 8000), 8000, subtype="PCM_16")
  good.append("rate8k.wav")
  w("rate96k.flac", soxr.resample(music, 24000, 96000), 96000)
  good.append("rate96k.flac")
  w(
    "six_channels.wav",
    np.stack([music * (0.5 + 0.1 * c) for c in range(6)], 1),
    24000,
    subtype="PCM_16",
  )
  good.append("six_channels.wav")
  # 2 hours at 8 kHz (115 MB): real music repeated.
  x8k = soxr.resample(music, 24000, 8000)
  two_hours = np.tile(x8k, int(np.ceil(2 * 3600 * 8000 / len(x8k))))[: 2 * 3600 * 8000]
  w("two_hours.wav", two_hours, 8000, subtype="PCM_16")
  good.append("two_hours.wav")
  # Bad ones.
  w("truncated.wav", music, 24000, subtype="PCM_16")
  size = os.path.getsize(os.path.join(root, "truncated.wav"))
  with open(os.path.join(root, "truncated.wav"), "r+b") as f:
    f.truncate(size // 2)
  bad.append("truncated.wav")
  open(os.path.join(root, "empty.wav"), "wb").close()
  bad.append("empty.wav")
  with open(os.path.join(root, "not_audio.mp3"), "w") as f:
    f.write("this is a text file with an audio extension\n" * 100)
  bad.append("not_audio.mp3")
  nan = music.copy()
  nan[5000:5010] = np.nan
  w("nan.wav", nan, 24000, subtype="FLOAT")
  bad.append("nan.wav")
  w("too_short.wav", music[:24000], 24000, subtype="PCM_16")
  bad.append("too_short.wav")
  w("silent.wav", np.zeros(24000 * 5, np.float32), 24000, subtype="PCM_16")
  bad.append("silent.wav")
  os.symlink(os.path.join(root, "does_not_exist.flac"), os.path.join(root, "dangling.flac"))
  bad.append("dangling.flac")
  w("no_permission.wav", music, 24000, subtype="PCM_16")
  os.chmod(os.path.join(root, "no_permission.wav"), 0)
  # Root reads files whatever their mode: then the file is good and must be used.
  readable = os.access(os.path.join(root, "no_permission.wav"), os.R_OK)
  (good if readable else bad).append("no_permission.wav")
  return sorted(good), sorted(bad)


@pytest.mark.multiprocess
@pytest.mark.parametrize("engine", ["local", "beam"])
def test_bad_inputs_nothing_lost(tmp_path, engine):
  """Both engines (the Beam one with two DirectRunner worker processes)."""
  root, out = str(tmp_path / "in"), str(tmp_path / "out")
  good, bad = _bad_folder(root)
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "data_pipeline.prepare",
      f"--input={root}",
      f"--output={out}",
      "--kmeans-codebooks=2",
      "--kmeans-codebook-size=16",
      "--kmeans-max-fit-frames=3000",
      "--valid-fraction=0",
      "--workers=2",
      "--shard-seconds=1800",
      f"--engine={engine}",
    ],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == prepare_jobs.EXIT_SKIPPED, proc.stderr[-3000:]
  skipped = {
    json.loads(line)["path"]: json.loads(line)["reason"]
    for line in open(os.path.join(out, "skipped.jsonl"))
  }
  assert set(skipped) == set(bad), skipped
  reasons = {
    "truncated.wav": "truncated",
    "empty.wav": "empty file",
    "not_audio.mp3": "cannot decode",
    "nan.wav": "non-finite",
    "too_short.wav": "too short",
    "silent.wav": "silent",
    "dangling.flac": "not a regular file",
    "no_permission.wav": "permission denied",
  }
  for path, reason in skipped.items():
    assert reasons[path] in reason, (path, reason)
  m = json.load(open(os.path.join(out, "manifest.json")))
  seen = {}
  for _, r in records(out, m):
    seen[r["source_id"]] = seen.get(r["source_id"], 0) + r["num_samples"]
  assert set(seen) == set(good)
  assert abs(seen["two_hours.wav"] - 2 * 3600 * 24000) <= 3  # resampled 8 kHz -> 24 kHz
  assert m["num_skipped_files"] == len(bad)
