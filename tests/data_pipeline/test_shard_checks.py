"""Nothing silently wrong (issue 13): the reader holds every shard to its manifest entry (size when
the dataset is built; record count, size and digest as each shard ends), and a re-run of prepare
verifies what it reuses, rebuilds what is not whole and refuses other options.

Every test works on a copy of the session's ``prepared`` folder (no new preparation)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil

import pytest

from data_pipeline import manifest as manifest_lib
from data_pipeline import prepare as prepare_lib
from data_pipeline import prepare_jobs, prepare_local, prepare_run, reader
from data_pipeline.manifest import shard_expectation
from data_pipeline.reader import ReaderConfig, ShardChainIterDataset, make_dataset
from data_pipeline.records import encode_example, parse_example
from data_pipeline.tfrecord import ShardMismatchError, TFRecordReader, frame_record
from tests.data_pipeline.fixtures import prepare_config

READ_ALL = ReaderConfig(crop_samples=24000, batch_size=1, shuffle_window=1, num_epochs=1)
LEGACY_KEYS = ("num_bytes", "record_crcs_sha256")  # what manifests before issue 13 lack


def _copy(prepared, tmp_path, legacy: bool = False) -> tuple[str, dict]:
  """The prepared shards and manifest (no cache, no teacher) copied to tmp_path; ``legacy``: the
  manifest without the entries' sizes and record-CRC digests."""
  out = tmp_path / "data"
  shutil.copytree(prepared[0], out, ignore=shutil.ignore_patterns(".work", "teacher"))
  m = json.loads((out / "manifest.json").read_text())
  if legacy:
    for info in m["splits"].values():
      for entry in info["shards"]:
        for key in LEGACY_KEYS:
          del entry[key]
    (out / "manifest.json").write_text(json.dumps(m))
  return str(out), m


def _write_manifest(out: str, m: dict) -> None:
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(m, f)


def record_ends(path: str) -> list[int]:
  """Byte offset of the end of each record of a shard."""
  r, ends = TFRecordReader(path), []
  for _ in r:
    ends.append(r.tell())
  r.close()
  return ends


def replace_record(path: str, i: int) -> None:
  """Swap record ``i`` for another valid record of the same length (its audio reversed): every
  CRC still holds, the size is the same, only the content differs."""
  data = bytearray(open(path, "rb").read())
  ends = record_ends(path)
  start = ends[i - 1] if i else 0
  payload = bytes(data[start + 12 : ends[i] - 4])
  r = parse_example(payload)
  new = encode_example(r["audio"][::-1].copy(), r["tokens"], r["source_id"], r["offset"])
  assert len(new) == len(payload) and new != payload
  data[start : ends[i]] = frame_record(new)
  open(path, "wb").write(bytes(data))


def _train_shard(m: dict, min_records: int = 2) -> dict:
  return next(e for e in m["splits"]["train"]["shards"] if e["num_records"] >= min_records)


# ------------------------------------------------------------------------------------ reader


@pytest.mark.parametrize("legacy", [False, True], ids=["manifest", "legacy_manifest"])
@pytest.mark.parametrize("cut", ["emptied", "record_boundary"])
def test_cut_shard_is_refused_when_the_dataset_is_built(prepared, tmp_path, cut, legacy):
  out, m = _copy(prepared, tmp_path, legacy)
  entry = _train_shard(m)
  path = os.path.join(out, entry["path"])
  size = 0 if cut == "emptied" else record_ends(path)[-2]
  os.truncate(path, size)
  if legacy:
    least = manifest_lib.min_shard_bytes(entry, m["num_codebooks"], m["hop"])
    records = entry["num_records"]
    want = rf"where its manifest entry \({records} records, \d+ samples\) needs at least {least}"
  else:
    want = rf"where the manifest lists {entry['num_bytes']}"
  pattern = (
    rf"^shard {re.escape(path)} is {size} bytes {want}.*re-run `python -m data_pipeline.prepare`"
  )
  for build in (
    lambda: make_dataset(out, READ_ALL),
    lambda: reader.make_grouped_dataset(out, READ_ALL, groups=2),
  ):
    with pytest.raises(ShardMismatchError, match=pattern) as err:
      build()
    assert "\n" not in str(err.value)


def test_missing_shard_is_refused_when_the_dataset_is_built(prepared, tmp_path):
  out, m = _copy(prepared, tmp_path)
  entries = m["splits"]["train"]["shards"]
  for e in entries[:2]:
    os.remove(os.path.join(out, e["path"]))
  path = os.path.join(out, entries[0]["path"])
  with pytest.raises(
    ShardMismatchError,
    match=rf"^shard {re.escape(path)} is missing \(and 1 more of the \d+ train shards\)",
  ):
    make_dataset(out, READ_ALL)


@pytest.mark.parametrize(
  "legacy,digest", [(False, "record_crcs_sha256"), (True, "sha256")], ids=["crcs", "sha256"]
)
def test_replaced_record_is_caught_at_the_shards_end(prepared, tmp_path, legacy, digest):
  """Same size, every CRC right: the size check and the CRCs pass, the digest does not."""
  out, m = _copy(prepared, tmp_path, legacy)
  entry = _train_shard(m)
  path = os.path.join(out, entry["path"])
  replace_record(path, 1)
  ds, _ = make_dataset(out, READ_ALL)  # the size is right: built without complaint
  with pytest.raises(
    ShardMismatchError,
    match=rf"^shard {re.escape(path)} is not the one its manifest describes: its {digest} is "
    r"[0-9a-f]{12}\.\.\. where the manifest lists .*re-run `python -m data_pipeline.prepare`",
  ):
    for _ in ds:
      pass


def test_record_count_differing_from_the_manifest_is_caught(prepared, tmp_path):
  out, m = _copy(prepared, tmp_path)
  entry = _train_shard(m)
  n = entry["num_records"]
  entry["num_records"] = n + 1  # a forged manifest: same size, one record more
  _write_manifest(out, m)
  ds, _ = make_dataset(out, READ_ALL)
  with pytest.raises(
    ShardMismatchError,
    match=rf"shard {re.escape(os.path.join(out, entry['path']))} is not the one its manifest "
    rf"describes: {n} records where the manifest lists {n + 1}",
  ):
    for _ in ds:
      pass


def test_resume_mid_shard_restores_exactly_and_digests_on_the_next_full_pass(prepared, tmp_path):
  """The count and size hold for a pass resumed mid-shard (from the restored record index); its
  digest is skipped then and checked on the shard's next full pass."""
  out, m = _copy(prepared, tmp_path)
  entry = _train_shard(m)
  n, path = entry["num_records"], os.path.join(out, entry["path"])
  ds = ShardChainIterDataset([path], seed=0, num_epochs=2, expectations=[shard_expectation(entry)])
  it = iter(ds)
  next(it)
  state = it.get_state()
  assert state["index"] == 1 and 0 < state["offset"] < entry["num_bytes"]
  expected = list(it)  # the rest of epoch 0, then epoch 1: clean
  assert len(expected) == 2 * n - 1
  resumed = iter(ds)
  resumed.set_state(state)
  assert list(resumed) == expected

  replace_record(path, 0)  # before the resume point: the resumed pass never reads it
  resumed = iter(ds)
  resumed.set_state(state)
  got = []
  with pytest.raises(ShardMismatchError, match=r"its record_crcs_sha256 is"):
    for record in resumed:
      got.append(record)
  assert len(got) == 2 * n - 1  # the resumed pass ended cleanly; the full pass read every record
  assert got[: n - 1] == expected[: n - 1] and got[n] != expected[n - 1]


# ------------------------------------------------------------------------------------ prepare


def _argv(cfg: prepare_jobs.PrepareConfig) -> list[str]:
  """The command line of ``cfg``."""
  argv = []
  for field in dataclasses.fields(cfg):
    value = getattr(cfg, field.name)
    if value is None or value is False:
      continue
    flag = "--" + field.name.replace("_", "-")
    argv.append(flag if value is True else f"{flag}={value}")
  return argv


def _snapshot(root) -> dict[str, tuple[int, int]]:
  """(size, mtime) of every file under ``root``."""
  stats = {
    os.path.relpath(os.path.join(d, f), root): os.stat(os.path.join(d, f))
    for d, _, files in os.walk(root)
    for f in files
  }
  return {path: (st.st_size, st.st_mtime_ns) for path, st in stats.items()}


@pytest.mark.parametrize(
  "option,value,shown",
  [("seed", 1, "--seed 0 -> 1"), ("kmeans_codebook_size", 64, "--kmeans-codebook-size 32 -> 64")],
)
def test_rerun_with_other_options_is_refused(
  corpus, prepared, tmp_path, capsys, option, value, shown
):
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  before = _snapshot(out)
  cfg = prepare_config(corpus[0], out, keep_cache=True, **{option: value})
  assert prepare_lib.main(_argv(cfg)) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1, err  # one line
  assert err.startswith(f"error: {out} holds a dataset prepared with other options ({shown}); ")
  assert "use a new --output, or --overwrite" in err
  assert _snapshot(out) == before  # nothing written


def test_rerun_verifies_and_rebuilds_what_is_not_whole(corpus, prepared, tmp_path, capsys):
  """An emptied shard whose manifest entry holds the empty file's hash (what prepare used to
  write), a shard cut at a record boundary, a cut decoded cache and a cut token cache: each is
  redone, with one line saying so; the manifest comes out as the first run's."""
  root, rels = corpus
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  m = prepared[1]
  shards = m["splits"]["train"]["shards"]
  emptied, cut = shards[0], _train_shard({"splits": {"train": {"shards": shards[1:]}}})
  os.truncate(out / emptied["path"], 0)
  os.truncate(out / cut["path"], record_ends(str(out / cut["path"]))[-2])
  forged = json.loads((out / "manifest.json").read_text())
  entry = forged["splits"]["train"]["shards"][0]
  entry["sha256"] = hashlib.sha256(b"").hexdigest()
  for key in LEGACY_KEYS:
    del entry[key]
  _write_manifest(str(out), forged)
  caches = {
    rel: str(out / ".work" / prepare_jobs._cache_key(os.path.join(root, rel), rel)) for rel in rels
  }
  os.truncate(caches[rels[0]] + ".npy", 0)
  tokens = caches[rels[1]] + ".tokens.npy"
  os.truncate(tokens, os.path.getsize(tokens) // 2)
  untouched = {
    s["path"]: os.stat(out / s["path"]).st_mtime_ns
    for info in m["splits"].values()
    for s in info["shards"]
    if s["path"] not in (emptied["path"], cut["path"])
  }

  m2 = prepare_local.prepare(prepare_config(root, out, keep_cache=True), progress=False)
  err = capsys.readouterr().err
  assert m2["content_hash"] == m["content_hash"] and m2["splits"] == m["splits"]
  for info in m2["splits"].values():
    for s in info["shards"]:
      data = (out / s["path"]).read_bytes()
      assert len(data) == s["num_bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
  assert {p: os.stat(out / p).st_mtime_ns for p in untouched} == untouched
  n = cut["num_records"]
  assert f"{out / emptied['path']} holds 0 of its {emptied['num_records']} records" in err, err
  assert f"{out / cut['path']} holds {n - 1} of its {n} records" in err, err
  assert err.count("; rebuilt it") == 2, err
  assert f"the decoded cache of {rels[0]} was bad" in err, err
  assert f"the token cache of {rels[1]} was bad" in err, err
  make_dataset(str(out), READ_ALL)  # the reader's size check passes again


def test_overwrite_replaces_an_earlier_run_and_keeps_other_files(
  corpus, prepared, tmp_path, capsys
):
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  (out / "notes.txt").write_text("mine")
  (out / "train-00009-of-00010.tfrecord.tmp").write_bytes(b"left by a crash")
  cfg = prepare_config(corpus[0], out, shard_seconds=30.0, overwrite=True)
  assert prepare_lib.main(_argv(cfg)) == 0
  assert "prepare: --overwrite: deleted the earlier run's" in capsys.readouterr().err
  m = json.loads((out / "manifest.json").read_text())
  assert m["options"]["shard_seconds"] == 30.0 and "overwrite" not in m["options"]
  shards = {s["path"] for info in m["splits"].values() for s in info["shards"]}
  assert shards != {s["path"] for info in prepared[1]["splits"].values() for s in info["shards"]}
  assert {n for n in os.listdir(out) if ".tfrecord" in n} == shards  # none of the earlier run's
  assert (out / "notes.txt").read_text() == "mine"
  make_dataset(str(out), READ_ALL)


def test_plan_difference_with_and_without_a_plan_hash(prepared):
  """A finished run over other input files: its plan hash differs, or, for manifests without
  one, its shards' record and sample counts."""
  m = prepared[1]
  plans = {  # segments (cache, source, start, length) with each shard's record and sample counts
    split: [
      [("c", "s", 0, 1)] * (e["num_records"] - 1)
      + [("c", "s", 0, e["num_samples"] - e["num_records"] + 1)]
      for e in info["shards"]
    ]
    for split, info in m["splits"].items()
  }
  assert prepare_run._plan_difference(plans, m["plan_hash"], m) is None
  assert prepare_run._plan_difference(plans, "other", m) == "the segments planned differ"
  legacy = {k: v for k, v in m.items() if k != "plan_hash"}
  assert prepare_run._plan_difference(plans, "any", legacy) is None
  plans["train"] = plans["train"][:-1]
  assert prepare_run._plan_difference(plans, "any", legacy) == (
    "the shards' record and sample counts differ"
  )
