"""data_pipeline/reader.py: hop-aligned crops, exact iterator restore (fresh process, orbax),
multi-process sharding and remote paths."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import fsspec
import numpy as np
import pytest

from data_pipeline import reader
from data_pipeline.audio import decode_file
from data_pipeline.reader import ReaderConfig, make_dataset
from data_pipeline.teachers import factory
from tests.data_pipeline.fixtures import HOP
from tests.processes import run_together


def test_reader_batches_are_aligned_crops(corpus, prepared):
  root, rels = corpus
  out, m = prepared
  teacher = factory.load_teacher(os.path.join(out, "teacher"))
  sources = {rel: decode_file(os.path.join(root, rel), 24000, 1) for rel in rels}
  tokens = {rel: teacher.tokens(p.astype(np.float32) / 32768) for rel, p in sources.items()}
  ds, drop = make_dataset(
    out, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=3)
  )
  it = iter(ds)
  for _ in range(5):
    batch = next(it)
    assert batch["audio"].shape == (4, 48000) and batch["audio"].dtype == np.float32
    assert batch["labels"].shape == (4, 4, 150) and batch["labels"].dtype == np.int32
    for audio, labels in zip(batch["audio"], batch["labels"]):
      pcm16 = np.round(audio * 32768).astype("<i2").tobytes()
      hits = [(rel, p.tobytes().find(pcm16)) for rel, p in sources.items()]
      rel, pos = next((r, q) for r, q in hits if q >= 0)
      pos //= 2
      assert pos % HOP == 0
      np.testing.assert_array_equal(labels, tokens[rel][:, pos // HOP : pos // HOP + 150])
  assert drop.dropped_records == 0


def test_reader_re_exports_the_trainers_manifest_api(prepared):
  """mert_jax/train calls reader.load_manifest and reader.shard_paths."""
  out, m = prepared
  assert reader.load_manifest(out) == m
  paths = reader.shard_paths(out, m, "train")
  assert paths == [os.path.join(out, s["path"]) for s in m["splits"]["train"]["shards"]]


READ_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from data_pipeline.reader import ReaderConfig, make_dataset
    data_dir, state_path, out_path = sys.argv[1:4]
    ds, _ = make_dataset(data_dir, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16,
                                                seed=5))
    it = iter(ds)
    it.set_state(json.load(open(state_path)))
    batches = [next(it) for _ in range(3)]
    np.savez(out_path, audio=np.stack([b["audio"] for b in batches]),
             labels=np.stack([b["labels"] for b in batches]))
""")


@pytest.mark.multiprocess
def test_iterator_state_restores_exactly_in_a_fresh_process(prepared, tmp_path):
  out, _ = prepared
  ds, _ = make_dataset(
    out, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=5)
  )
  it = iter(ds)
  for _ in range(4):
    next(it)
  (tmp_path / "state.json").write_text(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  script = tmp_path / "read.py"
  script.write_text(READ_SCRIPT)
  proc = subprocess.run(
    [sys.executable, str(script), out, str(tmp_path / "state.json"), str(tmp_path / "next.npz")],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=os.getcwd(),
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = np.load(tmp_path / "next.npz")
  np.testing.assert_array_equal(got["audio"], np.stack([b["audio"] for b in expected]))
  np.testing.assert_array_equal(got["labels"], np.stack([b["labels"] for b in expected]))


DIST_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    pid, port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, initialization_timeout=120)
    from data_pipeline.reader import ReaderConfig, make_dataset
    ds, _ = make_dataset(data_dir, ReaderConfig(crop_samples=48000, batch_size=1, shuffle_window=1,
                                                num_epochs=1),
                         process_index=jax.process_index(), process_count=jax.process_count())
    n = sum(1 for _ in ds)
    from data_pipeline import reader
    paths = reader.shard_paths(data_dir, reader.load_manifest(data_dir), "train")
    files = reader.process_files(paths, jax.process_index(), jax.process_count())
    json.dump({"files": files, "crops": n}, open(out, "w"))
    jax.distributed.shutdown()
""")


@pytest.mark.multiprocess
def test_two_processes_read_disjoint_files_covering_the_corpus(prepared, tmp_path):
  import portpicker

  out, m = prepared
  script = tmp_path / "dist.py"
  script.write_text(DIST_SCRIPT)
  port = str(portpicker.pick_unused_port())
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  argvs = [
    [sys.executable, str(script), str(i), port, out, str(tmp_path / f"p{i}.json")] for i in range(2)
  ]
  run_together(argvs, env, timeout=300)
  r0, r1 = (json.load(open(tmp_path / f"p{i}.json")) for i in range(2))
  assert r0["files"] and r1["files"] and not set(r0["files"]) & set(r1["files"])
  all_shards = {os.path.join(out, s["path"]) for s in m["splits"]["train"]["shards"]}
  assert set(r0["files"]) | set(r1["files"]) == all_shards
  # every record >= crop: one crop each
  assert r0["crops"] + r1["crops"] == m["splits"]["train"]["num_records"]


def test_remote_paths_through_fsspec(prepared):
  out, m = prepared
  fs = fsspec.filesystem("memory")
  fs.put(out, "/remote_ds", recursive=True)
  cfg = ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=1)
  local, remote = iter(make_dataset(out, cfg)[0]), iter(make_dataset("memory:///remote_ds", cfg)[0])
  for _ in range(3):
    a, b = next(local), next(remote)
    np.testing.assert_array_equal(a["audio"], b["audio"])
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_missing_manifest_message(tmp_path):
  with pytest.raises(
    FileNotFoundError, match="is not a folder written by `python -m data_pipeline.prepare`"
  ):
    make_dataset(str(tmp_path), ReaderConfig())


def test_iterator_state_through_orbax_with_the_grain_handler(prepared, tmp_path):
  import grain
  import orbax.checkpoint as ocp

  out, _ = prepared
  cfg = ReaderConfig(crop_samples=48000, batch_size=2, shuffle_window=16, seed=9)
  it = iter(make_dataset(out, cfg)[0])
  for _ in range(3):
    next(it)
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as mngr:
    mngr.save(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
  expected = next(it)
  it2 = iter(make_dataset(out, cfg)[0])
  with ocp.CheckpointManager(str(tmp_path / "ckpt")) as mngr:
    mngr.restore(3, args=ocp.args.Composite(data_iter=grain.checkpoint.CheckpointRestore(it2)))
  got = next(it2)
  np.testing.assert_array_equal(got["audio"], expected["audio"])
  np.testing.assert_array_equal(got["labels"], expected["labels"])


def test_grouped_batches_do_not_depend_on_the_process_count(prepared):
  out, _ = prepared
  cfg = ReaderConfig(crop_samples=48000, batch_size=2, shuffle_window=4, seed=4)
  whole = next(iter(reader.make_grouped_dataset(out, cfg, groups=2)[0]))
  assert whole["audio"].shape == (2, 2, 48000) and whole["labels"].shape == (2, 2, 4, 150)
  parts = [
    next(iter(reader.make_grouped_dataset(out, cfg, groups=2, process_index=p, process_count=2)[0]))
    for p in range(2)
  ]
  for key in ("audio", "labels"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  with pytest.raises(ValueError, match="must be a multiple of the process count"):
    reader.make_grouped_dataset(out, cfg, groups=3, process_count=2)


def test_train_shards_reads_a_prefix_of_the_train_split(prepared):
  """data.train_shards (the data-size axis): one epoch of the first shard only, its hours from the
  manifest; more shards than the split has is one line naming the folder and the range."""
  out, m = prepared
  entries = m["splits"]["train"]["shards"]
  assert len(entries) >= 2
  cfg = ReaderConfig(crop_samples=48000, batch_size=1, shuffle_window=1, num_epochs=1)
  subset = dataclasses.replace(cfg, train_shards=1)
  n_first = sum(1 for _ in make_dataset(out, subset)[0])
  n_all = sum(1 for _ in make_dataset(out, cfg)[0])
  assert n_first == entries[0]["num_records"] < n_all == m["splits"]["train"]["num_records"]
  # the valid split is never cut
  assert (
    sum(1 for _ in make_dataset(out, subset, split="valid")[0])
    == (m["splits"]["valid"]["num_records"])
  )
  assert reader.subset_hours(m, 1) == pytest.approx(entries[0]["num_samples"] / 24000 / 3600)
  assert reader.subset_hours(m, 0) == pytest.approx(m["splits"]["train"]["hours"])
  too_many = dataclasses.replace(cfg, train_shards=len(entries) + 1)
  with pytest.raises(
    ValueError, match=f"{out}: data.train_shards={len(entries) + 1} but the train"
  ):
    reader.make_grouped_dataset(out, too_many, groups=1)
