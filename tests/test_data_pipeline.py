"""Data pipeline end to end on real music: prepare -> shards -> reader, restart, determinism,
corruption, exact iterator restore in a fresh process, multi-process sharding, remote paths,
and a folder of bad inputs where nothing is lost."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import fsspec
import numpy as np
import pytest
import soundfile as sf

from data_pipeline import prepare as prepare_lib
from data_pipeline import teachers
from data_pipeline.audio import decode_file
from data_pipeline.reader import ReaderConfig, make_dataset
from data_pipeline.records import parse_example
from data_pipeline.tfrecord import CorruptRecordError, TFRecordWriter, read_records
from data_pipeline import example_audio
from tests.data_fixtures import make_corpus

HOP = 320


def _cfg(inp, out, **kw):
  base = dict(input=str(inp), output=str(out), workers=2, seed=0, segment_seconds=10.0, min_seconds=3.0,
              shard_seconds=20.0, valid_fraction=0.25, kmeans_codebooks=4, kmeans_codebook_size=32,
              kmeans_max_fit_frames=4000)
  base.update(kw)
  return prepare_lib.PrepareConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  return str(root), make_corpus(str(root))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp("prepared")
  manifest = prepare_lib.prepare(_cfg(corpus[0], out, keep_cache=True), progress=False)
  return str(out), manifest


def _records(data_dir, manifest):
  for split, info in manifest["splits"].items():
    for shard in info["shards"]:
      for payload in read_records(os.path.join(data_dir, shard["path"])):
        yield split, parse_example(payload)


def test_manifest_and_records_match_the_decoded_sources(corpus, prepared):
  root, rels = corpus
  out, m = prepared
  assert m["sample_rate"] == 24000 and m["label_rate"] == 75.0 and m["num_codebooks"] == 4
  assert m["num_used_files"] == 4 and m["num_skipped_files"] == 0 and m["num_ignored_files"] == 1
  assert set(m["splits"]) == {"train", "valid"} and len(m["splits"]["train"]["shards"]) >= 2
  teacher = teachers.load_teacher(os.path.join(out, "teacher"))
  sources = {rel: decode_file(os.path.join(root, rel), 24000, 1) for rel in rels}
  full_tokens = {rel: teacher.tokens(pcm.astype(np.float32) / 32768) for rel, pcm in sources.items()}
  covered = {rel: 0 for rel in rels}
  for _, r in _records(out, m):
    pcm = sources[r["source_id"]]
    np.testing.assert_array_equal(r["audio"], pcm[r["offset"]:r["offset"] + r["num_samples"]])   # bit-exact
    assert r["offset"] % HOP == 0 and r["num_tokens"] == -(-r["num_samples"] // HOP)
    t0 = r["offset"] // HOP
    np.testing.assert_array_equal(r["tokens"], full_tokens[r["source_id"]][:, t0:t0 + r["num_tokens"]])
    covered[r["source_id"]] += r["num_samples"]
  assert covered == {rel: len(pcm) for rel, pcm in sources.items()}          # every sample, once
  hours = sum(len(p) for p in sources.values()) / 24000 / 3600
  assert abs(m["total_hours"] - hours) < 1e-9


def test_reader_batches_are_aligned_crops(corpus, prepared):
  root, rels = corpus
  out, m = prepared
  teacher = teachers.load_teacher(os.path.join(out, "teacher"))
  sources = {rel: decode_file(os.path.join(root, rel), 24000, 1) for rel in rels}
  tokens = {rel: teacher.tokens(p.astype(np.float32) / 32768) for rel, p in sources.items()}
  ds, drop = make_dataset(out, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=3))
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
      np.testing.assert_array_equal(labels, tokens[rel][:, pos // HOP:pos // HOP + 150])
  assert drop.dropped_records == 0


def test_prepare_is_deterministic(corpus, prepared, tmp_path):
  out, m = prepared
  m2 = prepare_lib.prepare(_cfg(corpus[0], tmp_path), progress=False)
  assert m2["content_hash"] == m["content_hash"]
  for shard in m["splits"]["train"]["shards"]:
    with open(os.path.join(out, shard["path"]), "rb") as a, open(tmp_path / shard["path"], "rb") as b:
      assert a.read() == b.read()
  assert not (tmp_path / ".work").exists()                      # cache removed without --keep-cache


def test_restart_redoes_only_unfinished_shards(corpus, prepared, tmp_path):
  out = tmp_path / "run"
  shutil.copytree(prepared[0], out)
  m = prepared[1]
  shards = [s["path"] for s in m["splits"]["train"]["shards"]]
  victim = shards[1]
  os.remove(out / victim)
  os.remove(out / "manifest.json")
  (out / (victim + ".tmp")).write_bytes(b"half-written garbage")   # what a crash mid-write leaves
  mtimes = {p: os.stat(out / p).st_mtime_ns for p in shards if p != victim}
  m2 = prepare_lib.prepare(_cfg(corpus[0], out, keep_cache=True), progress=False)
  assert m2["content_hash"] == m["content_hash"]
  assert {p: os.stat(out / p).st_mtime_ns for p in mtimes} == mtimes   # finished shards untouched
  assert not (out / (victim + ".tmp")).exists()


def test_writer_never_leaves_a_whole_looking_file(tmp_path):
  path = str(tmp_path / "x.tfrecord")
  with pytest.raises(RuntimeError):
    with TFRecordWriter(path) as w:
      w.write(b"a" * 100)
      raise RuntimeError("crash mid-write")
  assert not os.path.exists(path) and not os.path.exists(path + ".tmp")


def test_flipped_byte_is_detected_with_shard_and_record_named(prepared, tmp_path):
  out, m = prepared
  shard = m["splits"]["train"]["shards"][0]["path"]
  data = bytearray(open(os.path.join(out, shard), "rb").read())
  first_len = int.from_bytes(data[:8], "little")
  second = 12 + first_len + 4                        # start of record 1
  data[second + 12 + 1000] ^= 0x01                   # inside record 1's payload
  bad = tmp_path / shard
  bad.write_bytes(bytes(data))
  with pytest.raises(CorruptRecordError, match=rf"corrupt shard .*{shard}: record 1 .*data CRC mismatch"):
    list(read_records(str(bad)))


READ_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from data_pipeline.reader import ReaderConfig, make_dataset
    data_dir, state_path, out_path = sys.argv[1:4]
    ds, _ = make_dataset(data_dir, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=5))
    it = iter(ds)
    it.set_state(json.load(open(state_path)))
    batches = [next(it) for _ in range(3)]
    np.savez(out_path, audio=np.stack([b["audio"] for b in batches]), labels=np.stack([b["labels"] for b in batches]))
""")


def test_iterator_state_restores_exactly_in_a_fresh_process(prepared, tmp_path):
  out, _ = prepared
  ds, _ = make_dataset(out, ReaderConfig(crop_samples=48000, batch_size=4, shuffle_window=16, seed=5))
  it = iter(ds)
  for _ in range(4):
    next(it)
  (tmp_path / "state.json").write_text(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  script = tmp_path / "read.py"
  script.write_text(READ_SCRIPT)
  proc = subprocess.run([sys.executable, str(script), out, str(tmp_path / "state.json"), str(tmp_path / "next.npz")],
                        capture_output=True, text=True, timeout=300, cwd=os.getcwd())
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = np.load(tmp_path / "next.npz")
  np.testing.assert_array_equal(got["audio"], np.stack([b["audio"] for b in expected]))
  np.testing.assert_array_equal(got["labels"], np.stack([b["labels"] for b in expected]))


DIST_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    pid, port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    from data_pipeline.reader import ReaderConfig, make_dataset
    ds, _ = make_dataset(data_dir, ReaderConfig(crop_samples=48000, batch_size=1, shuffle_window=1, num_epochs=1),
                         process_index=jax.process_index(), process_count=jax.process_count())
    n = sum(1 for _ in ds)
    from data_pipeline import reader
    files = reader.process_files(reader.shard_paths(data_dir, reader.load_manifest(data_dir), "train"),
                                 jax.process_index(), jax.process_count())
    json.dump({"files": files, "crops": n}, open(out, "w"))
    jax.distributed.shutdown()
""")


def test_two_processes_read_disjoint_files_covering_the_corpus(prepared, tmp_path):
  import portpicker
  out, m = prepared
  script = tmp_path / "dist.py"
  script.write_text(DIST_SCRIPT)
  port = str(portpicker.pick_unused_port())
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port, out, str(tmp_path / f"p{i}.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
  r0, r1 = (json.load(open(tmp_path / f"p{i}.json")) for i in range(2))
  assert r0["files"] and r1["files"] and not set(r0["files"]) & set(r1["files"])
  all_shards = {os.path.join(out, s["path"]) for s in m["splits"]["train"]["shards"]}
  assert set(r0["files"]) | set(r1["files"]) == all_shards
  assert r0["crops"] + r1["crops"] == m["splits"]["train"]["num_records"]   # every record >= crop: one crop each


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
  with pytest.raises(FileNotFoundError, match="is not a folder written by `python -m data_pipeline.prepare`"):
    make_dataset(str(tmp_path), ReaderConfig())


# ------------------------------------------------------------------------------------ bad inputs

def _bad_folder(root):
  """Good real-music files and every kind of bad input; returns (good, bad) relative paths."""
  os.makedirs(root, exist_ok=True)
  music = example_audio.music_clip(seconds=12.0)
  good, bad = [], []
  def w(rel, x, sr, **kw):
    sf.write(os.path.join(root, rel), x, sr, **kw)
  w("good.wav", music, 24000, subtype="PCM_16"); good.append("good.wav")
  import soxr
  w("rate8k.wav", soxr.resample(music, 24000, 8000), 8000, subtype="PCM_16"); good.append("rate8k.wav")
  w("rate96k.flac", soxr.resample(music, 24000, 96000), 96000); good.append("rate96k.flac")
  w("six_channels.wav", np.stack([music * (0.5 + 0.1 * c) for c in range(6)], 1), 24000, subtype="PCM_16")
  good.append("six_channels.wav")
  # 2 hours at 8 kHz (115 MB): real music repeated.
  x8k = soxr.resample(music, 24000, 8000)
  two_hours = np.tile(x8k, int(np.ceil(2 * 3600 * 8000 / len(x8k))))[:2 * 3600 * 8000]
  w("two_hours.wav", two_hours, 8000, subtype="PCM_16"); good.append("two_hours.wav")
  # Bad ones.
  w("truncated.wav", music, 24000, subtype="PCM_16")
  size = os.path.getsize(os.path.join(root, "truncated.wav"))
  with open(os.path.join(root, "truncated.wav"), "r+b") as f:
    f.truncate(size // 2)
  bad.append("truncated.wav")
  open(os.path.join(root, "empty.wav"), "wb").close(); bad.append("empty.wav")
  with open(os.path.join(root, "not_audio.mp3"), "w") as f:
    f.write("this is a text file with an audio extension\n" * 100)
  bad.append("not_audio.mp3")
  nan = music.copy()
  nan[5000:5010] = np.nan
  w("nan.wav", nan, 24000, subtype="FLOAT"); bad.append("nan.wav")
  w("too_short.wav", music[:24000], 24000, subtype="PCM_16"); bad.append("too_short.wav")
  w("silent.wav", np.zeros(24000 * 5, np.float32), 24000, subtype="PCM_16"); bad.append("silent.wav")
  os.symlink(os.path.join(root, "does_not_exist.flac"), os.path.join(root, "dangling.flac")); bad.append("dangling.flac")
  w("no_permission.wav", music, 24000, subtype="PCM_16")
  os.chmod(os.path.join(root, "no_permission.wav"), 0)
  # Root reads files whatever their mode: then the file is good and must be used.
  (bad if not os.access(os.path.join(root, "no_permission.wav"), os.R_OK) else good).append("no_permission.wav")
  return sorted(good), sorted(bad)


def test_bad_inputs_nothing_lost(tmp_path):
  root, out = str(tmp_path / "in"), str(tmp_path / "out")
  good, bad = _bad_folder(root)
  proc = subprocess.run([sys.executable, "-m", "data_pipeline.prepare", f"--input={root}", f"--output={out}",
                         "--kmeans-codebooks=2", "--kmeans-codebook-size=16", "--kmeans-max-fit-frames=3000",
                         "--valid-fraction=0", "--workers=2", "--shard-seconds=1800"],
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == prepare_lib.EXIT_SKIPPED, proc.stderr[-3000:]
  skipped = {json.loads(line)["path"]: json.loads(line)["reason"] for line in open(os.path.join(out, "skipped.jsonl"))}
  assert set(skipped) == set(bad), skipped
  reasons = {"truncated.wav": "truncated", "empty.wav": "empty file", "not_audio.mp3": "cannot decode",
             "nan.wav": "non-finite", "too_short.wav": "too short", "silent.wav": "silent",
             "dangling.flac": "not a regular file", "no_permission.wav": "permission denied"}
  for path, reason in skipped.items():
    assert reasons[path] in reason, (path, reason)
  m = json.load(open(os.path.join(out, "manifest.json")))
  seen = {}
  for _, r in _records(out, m):
    seen[r["source_id"]] = seen.get(r["source_id"], 0) + r["num_samples"]
  assert set(seen) == set(good)
  assert abs(seen["two_hours.wav"] - 2 * 3600 * 24000) <= 3           # resampled 8 kHz -> 24 kHz
  assert m["num_skipped_files"] == len(bad)


def test_tfds_builder_writes_array_record_and_converts_for_the_reader(corpus, prepared, tmp_path):
  from data_pipeline import tfds_builder
  root, rels = corpus
  out, m = prepared
  bad = os.path.join(root, "..", "tfds_input")
  shutil.copytree(root, bad)
  open(os.path.join(bad, "broken.wav"), "wb").close()
  builder = tfds_builder.build(bad, str(tmp_path / "tfds"), os.path.join(out, "teacher"),
                               segment_seconds=10.0, valid_fraction=0.25)
  files = os.listdir(builder.data_dir)
  assert any(".array_record-" in f for f in files)
  assert builder.skipped == [{"path": "broken.wav", "reason": "empty file (0 bytes)"}]
  conv = tfds_builder.to_tfrecord(builder, str(tmp_path / "converted"), shard_seconds=20.0)
  # Same teacher, same decoding and segmentation: the same records as prepare (in another order).
  def record_set(d, man):
    return sorted((r["source_id"], r["offset"], r["audio"].tobytes(), r["tokens"].tobytes())
                  for _, r in _records(d, man))
  assert record_set(str(tmp_path / "converted"), conv) == record_set(out, m)
  assert conv["num_skipped_files"] == 1
  batch = next(iter(make_dataset(str(tmp_path / "converted"), ReaderConfig(crop_samples=48000, batch_size=2,
                                                                           shuffle_window=4))[0]))
  assert batch["audio"].shape == (2, 48000) and batch["labels"].shape == (2, 4, 150)


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
