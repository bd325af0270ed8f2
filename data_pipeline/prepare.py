r"""Prepare a pretraining dataset: a folder of music -> 24 kHz mono int16 + teacher tokens ->
sharded TFRecord files + manifest.json.

  python -m data_pipeline.prepare --input=DIR --output=DIR --teacher=kmeans|encodec \
      [--encodec=PATH_OR_HUB_ID] [--workers=N] [--seed=S] [--overwrite]

Stages (each parallel over files or shards, each restartable: its outputs are written to a
temporary name and renamed when complete (mert_jax/files/atomic.py), and a re-run reuses what is
finished after verifying it: decoded and token caches by shape, shards by reading them back against
the plan and the earlier manifest's size and sha256; what fails is rebuilt, in one line each):

1. scan     every file under --input; audio extensions are inputs, other files are listed in
            ignored.jsonl;
2. decode   decode, downmix, resample to 24 kHz, int16 (cached in OUTPUT/.work/); bad files go to
            skipped.jsonl with the reason (truncated, empty, undecodable, unreadable, NaN, silent,
            too short);
3. teacher  k-means: fitted on the training files; encodec: the model you name (saved in
            OUTPUT/teacher/, and reused by a resumed run);
4. tokens   teacher tokens for each whole file (cached);
5. shards   files are cut into segments of --segment-seconds on hop boundaries, segments are
            shuffled (seeded) and written as `{split}-NNNNN-of-NNNNN.tfrecord`
            (data_pipeline/records.py has the record format); a small seeded fraction of files
            forms the `valid` split;
6. manifest manifest.json (data_pipeline/manifest.py): shards, record counts, hours, sample rate,
            teacher config, codebook sizes, label rate and a content hash (sha256 over the shards
            and the teacher config).

--input and --output may be in a bucket (gs://BUCKET/PATH, the gcs extra): input files are
downloaded one at a time to be decoded, and the caches stay local (--cache-dir; by default a
folder named after the output under the system's temporary folder), while the teacher, shards,
reports and manifest are uploaded, each in one piece once complete (the teacher's files before its
teacher.json). A bucket that does not exist or refuses writes is refused before anything is read.

A re-run on an output prepared (or partly prepared) with other content options (seed, teacher,
k-means settings, segment or shard lengths, valid fraction, ...) or other input files is refused in
one line naming the differences, before anything is written: use a new --output, or --overwrite to
delete the earlier run's files and prepare again.

Exit status: 0 when every input file was used, 3 when it finished but skipped files, 1 on failure.
The result is deterministic given the input files, the options and --seed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any, Iterable, Iterator

import fsspec
import numpy as np

from data_pipeline import beam_options
from data_pipeline import manifest as manifest_lib
from data_pipeline import teachers as teachers_lib
from data_pipeline.audio import AUDIO_EXTENSIONS, BadAudioError, decode_file
from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.records import encode_example, from_int16, parse_example
from data_pipeline.tfrecord import CorruptRecordError, TFRecordReader, TFRecordWriter
from mert_jax.files import storage
from mert_jax.files.atomic import (
  TMP_SUFFIX,
  atomic_save_npy,
  atomic_write_jsonl,
  atomic_write_text,
)
from mert_jax.terminal import progress as progress_lib
from mert_jax.terminal.cli_help import ArgumentParser, field_comments, prog

SKIPPED = "skipped.jsonl"
IGNORED = "ignored.jsonl"
WORK = ".work"
BEAM_WORK = ".beam"  # --engine=beam: what its passes hand to the launcher (beam_prepare.py)
PLAN = "plan.json"
TEACHER_DIR = "teacher"
EXIT_SKIPPED = 3
# Options that do not change what is written (a re-run may change them freely).
NOT_CONTENT_OPTIONS = (
  "input",
  "output",
  "workers",
  "keep_cache",
  "cache_dir",
  "overwrite",
  "engine",
)
MANIFEST_OMITS = ("input", "output", "workers", "cache_dir", "overwrite", "engine")
OVERWRITE_HINT = "use a new --output, or --overwrite to delete it and prepare again"
_SHARD_FILE = re.compile(r"^\w+-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$")


TEACHERS = ("kmeans", "encodec")  # the values of --teacher
ENGINES = ("local", "beam")  # the values of --engine


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """The options of a run; each field's comment is its --help text (parse_args)."""

  input: str  # the folder of music (searched recursively; wav, flac, ogg, opus, mp3, ...)
  output: str  # the dataset folder to write (or to finish, after an interrupted run)
  # "kmeans": fitted on the corpus (sizes: --kmeans-*) | "encodec": EnCodec 24 kHz codes, as MERT-v1
  teacher: str = "kmeans"
  # with --teacher=encodec: the weights, a local folder or a Hugging Face Hub id
  # (facebook/encodec_24khz); "random-init" (tests only)
  encodec: str | None = None
  # with --teacher=encodec: "windowed" (30 s windows with 1 s of left context: bounded memory) |
  # "whole" (each file in one causal pass, as the reference; memory grows with the file)
  encodec_mode: str = "windowed"
  # with --teacher=encodec: the torch device (cpu, cuda, cuda:N, or auto: cuda when present); the
  # codes can differ between devices in near ties, so it is recorded with the teacher
  device: str = "cpu"
  workers: int = 0  # processes; 0 = all cores
  seed: int = 0  # shuffling, valid split and k-means
  sample_rate: int = SAMPLE_RATE  # Hz
  hop: int = HOP  # samples per label frame (75 Hz)
  segment_seconds: float = 30.0  # files are cut into records of this length (hop-aligned)
  min_seconds: float = 3.0  # shorter files are skipped (the reference's min_sample_size)
  shard_seconds: float = 3600.0  # audio per shard (one hour of int16 audio is ~173 MB)
  valid_fraction: float = 0.02  # fraction of files held out as the `valid` split
  kmeans_codebooks: int = 8  # k-means teacher: residual codebooks
  kmeans_codebook_size: int = 1024  # k-means teacher: codes per codebook
  kmeans_max_fit_frames: int = 200_000  # k-means teacher: frames sampled for fitting
  # k-means teacher: "" = residual codebooks on MFCC + chroma; else one feature group per codebook
  # (mfcc, chroma, logmel, pitch), comma-separated: independent codebooks, each on its own group
  kmeans_features: str = ""
  keep_cache: bool = False  # keep the caches (decoded audio and tokens) afterwards
  # where the caches go, in a folder named after the output (default: OUTPUT/.work; for a gs://
  # output, the system's temporary folder); they hold the decoded corpus, 173 MB per hour
  cache_dir: str | None = None
  overwrite: bool = False  # delete an earlier run's files in OUTPUT first (whatever its options)
  # "local": this machine's process pool, through a cache of decoded files | "beam": an Apache
  # Beam pipeline streaming each file (no cache; data_pipeline/beam_prepare.py), on any runner:
  # Beam's options (--runner, --direct_num_workers, Dataflow's ...) pass through
  engine: str = "local"


def _cache_key(path: str, rel: str, stamp: str | None = None) -> str:
  """The cache name of input ``path`` (``rel`` under --input; ``stamp``: its ``storage.stamp``,
  looked up when not given): another name once the file changes."""
  if stamp is None:
    try:
      stamp = storage.stamp(path)
    except OSError:
      stamp = "unstatable"
  return hashlib.sha1(f"{rel}|{stamp}".encode()).hexdigest()[:20]


def work_dir(cfg: PrepareConfig) -> str:
  """Where the caches and the plan of a run live: OUTPUT/.work, or with --cache-dir or a remote
  output (the caches are memory-mapped and read many times) a local folder named after the output
  in --cache-dir (default: the system's temporary folder)."""
  if not cfg.cache_dir and not storage.is_remote(cfg.output):
    return os.path.join(cfg.output, WORK)
  key = hashlib.sha1(cfg.output.rstrip("/").encode()).hexdigest()[:16]
  return os.path.join(cfg.cache_dir or tempfile.gettempdir(), f"mert-prepare-{key}")


# ------------------------------------------------------------------------------------ workers
# Top-level functions so that the process pool (spawn) can pickle them.


def _npy_problem(path: str, shape: tuple[int, ...]) -> str | None:
  """Why the cached int16 array ``path`` cannot be reused (missing, cut, another shape), or None."""
  try:
    array = np.load(path, mmap_mode="r")  # a file shorter than its header says fails to map
  except (OSError, ValueError, EOFError) as e:
    return f"{os.path.basename(path)} is unreadable ({e})"
  if array.dtype != np.int16 or array.shape != tuple(shape):
    return (
      f"{os.path.basename(path)} holds {array.dtype} {array.shape}, expected int16 {tuple(shape)}"
    )
  return None


def _decode_job(path: str, cache: str, sample_rate: int, min_samples: int) -> dict[str, Any]:
  """Decode one file into the cache; an earlier run's result is reused when its cache is whole
  (else decoded again, with the reason in ``"rebuilt"``)."""
  status = cache + ".json"
  note = None
  if os.path.exists(status):  # finished in an earlier run
    try:
      result = json.loads(open(status).read())
    except ValueError as e:
      note = f"{os.path.basename(status)} is unreadable ({e})"
    else:
      if not result["ok"]:
        return result
      note = _npy_problem(cache + ".npy", (result["num_samples"],))
      if note is None:
        return result
  pcm, result = decode_source(path, sample_rate, min_samples, os.path.dirname(cache))
  if pcm is not None:
    atomic_save_npy(cache + ".npy", pcm)
  atomic_write_text(status, json.dumps(result))
  return {**result, "rebuilt": note} if note else result


def decode_source(
  path: str, sample_rate: int, min_samples: int, scratch: str | None = None
) -> tuple[np.ndarray | None, dict[str, Any]]:
  """(int16 mono audio at ``sample_rate`` or None, {"ok", "num_samples" | "reason"}) of input file
  ``path``; a remote file is downloaded into ``scratch`` (default: a temporary folder) first."""
  try:
    with storage.local_copy(path, scratch) as local:
      pcm = decode_file(local, sample_rate, min_samples)
  except BadAudioError as e:
    return None, {"ok": False, "reason": str(e)}
  except MemoryError:
    return None, {"ok": False, "reason": "out of memory while decoding"}
  except OSError as e:  # a remote file that could not be downloaded
    return None, {"ok": False, "reason": f"unreadable ({e})"}
  return pcm, {"ok": True, "num_samples": int(pcm.shape[0])}


_TEACHER: teachers_lib.Teacher | None = None


def _tokens_job(cache: str, teacher_dir: str, shape: tuple[int, int]) -> str | None:
  """Tokenise one decoded file (``shape``: its tokens' (K, frames)); an earlier run's tokens are
  reused when whole. Returns why they were computed again, or None."""
  global _TEACHER
  out = cache + ".tokens.npy"
  note = None
  if os.path.exists(out):
    note = _npy_problem(out, shape)
    if note is None:
      return None
  if _TEACHER is None:
    _TEACHER = teachers_lib.load_teacher(teacher_dir)
  pcm = np.load(cache + ".npy", mmap_mode="r")
  tokens = _TEACHER.tokens(from_int16(pcm))
  atomic_save_npy(out, np.asarray(tokens, np.int16))
  return note


def verify_shard(
  path: str, segments: list[tuple[str, str, int, int]], recorded: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
  """Read back a shard an earlier run wrote: (its ``tfrecord.scan_shard`` result, None) when it
  holds exactly the planned records (CRC-checked, source, offset and length each) and matches
  ``recorded`` (its entry in the earlier manifest: size, digests); else (None, what is wrong)."""
  reader = TFRecordReader(path, hash_crcs=True, hash_bytes=True)
  try:
    for i, payload in enumerate(reader):
      if i >= len(segments):
        return None, f"holds more than the {len(segments)} records planned"
      r = parse_example(payload)
      _, source, start, length = segments[i]
      if (r["source_id"], r["offset"], r["num_samples"]) != (source, start, length):
        return None, (
          f"record {i} holds {r['source_id']} [{r['offset']}, +{r['num_samples']}), the plan "
          f"has {source} [{start}, +{length})"
        )
    scan = {"num_records": reader.index, "num_bytes": reader.tell(), **reader.digests()}
  except CorruptRecordError as e:
    return None, f"is corrupt ({e.detail})"
  except Exception as e:  # a payload that is no record (protobuf, key errors): rebuilt too
    return None, f"is unreadable ({type(e).__name__}: {e})"
  finally:
    reader.close()
  if scan["num_records"] != len(segments):
    return None, (
      f"holds {scan['num_records']} of its {len(segments)} records ({scan['num_bytes']} bytes)"
    )
  for key in ("num_bytes", "record_crcs_sha256", "sha256"):
    want = (recorded or {}).get(key)
    if want is not None and scan[key] != want:
      return None, f"has another {key} than its manifest entry"
  return scan, None


def _shard_job(
  path: str, segments: list[tuple[str, str, int, int]], hop: int, recorded: dict[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
  """Write one shard, or reuse the one an earlier run wrote if ``verify_shard`` passes it;
  segments are (cache, source_id, start, length). Returns (manifest entry, why an existing shard
  was rebuilt or None)."""
  lengths = [length for _, _, _, length in segments]
  note = None
  if storage.exists(path):
    scan, note = verify_shard(path, segments, recorded)
    if note is None:
      return manifest_lib.shard_info(path, lengths, scan), None
  with TFRecordWriter(path) as writer:
    for cache, source_id, start, length in segments:
      pcm = np.load(cache + ".npy", mmap_mode="r")
      tokens = np.load(cache + ".tokens.npy", mmap_mode="r")
      t0, n_tok = start // hop, -(-length // hop)
      writer.write(
        encode_example(
          np.asarray(pcm[start : start + length]),
          np.asarray(tokens[:, t0 : t0 + n_tok]),
          source_id,
          start,
        )
      )
  return manifest_lib.shard_info(path, lengths), note


# ------------------------------------------------------------------------------------ planning


def split_audio(rels: Iterable[str]) -> tuple[list[str], list[str]]:
  """(audio files, other files) of ``rels``, by extension, in their order."""
  audio, other = [], []
  for rel in rels:
    (audio if rel.lower().endswith(AUDIO_EXTENSIONS) else other).append(rel)
  return audio, other


def scan(input_dir: str) -> tuple[list[str], list[str]]:
  """(audio files, other files) as sorted paths relative to ``input_dir`` (local or remote)."""
  return split_audio(storage.files_under(input_dir))


def segment_bounds(num_samples: int, segment: int, minimum: int) -> list[tuple[int, int]]:
  """Cut [0, num_samples) into (start, length) pieces of ``segment`` samples (a multiple of the
  hop); a remainder shorter than ``minimum`` is appended to the last piece, so nothing is lost."""
  n_full, rest = divmod(num_samples, segment)
  bounds = [(i * segment, segment) for i in range(n_full)]
  if rest >= minimum or not bounds:
    bounds.append((n_full * segment, rest))
  elif rest:
    start, length = bounds[-1]
    bounds[-1] = (start, length + rest)
  return [b for b in bounds if b[1] > 0]


def valid_split(sources: list[str], fraction: float, seed: int) -> set[str]:
  """Seeded, stable choice of held-out files (by hash of the path): at least one when fraction > 0
  and there are at least two files."""
  if fraction <= 0 or len(sources) < 2:
    return set()
  score = {s: valid_score(s, seed) for s in sources}
  chosen = {s for s in sources if score[s] < fraction}
  return chosen or {min(sources, key=lambda s: (score[s], s))}


def valid_score(source: str, seed: int) -> float:
  """The seeded draw in [0, 1) of ``source`` that ``valid_split`` compares with the fraction."""
  return int(hashlib.sha256(f"{seed}|{source}".encode()).hexdigest()[:12], 16) / 16**12


def plan_shards(segments: list[tuple], shard_samples: int, seed: int) -> list[list[tuple]]:
  """Seeded shuffle of the segments (their last item: the length in samples), then consecutive
  groups of about ``shard_samples`` samples."""
  order = np.random.default_rng(seed).permutation(len(segments))
  shards, current, size = [], [], 0
  for i in order:
    current.append(segments[i])
    size += segments[i][-1]
    if size >= shard_samples:
      shards.append(current)
      current, size = [], 0
  if current:
    shards.append(current)
  return shards


def plan_splits(
  num_samples: dict[str, int], valid: set[str], cfg: PrepareConfig
) -> tuple[dict[str, list[list[tuple[str, int, int]]]], str]:
  """The shards of each split as lists of (file, start, length) segments, and the plan's hash:
  ``num_samples`` of every usable file (sorted by path), ``valid`` the held-out ones."""
  segment = int(cfg.segment_seconds * cfg.sample_rate)
  shard_samples = int(cfg.shard_seconds * cfg.sample_rate)
  min_samples = int(cfg.min_seconds * cfg.sample_rate)
  train = [rel for rel in sorted(num_samples) if rel not in valid]
  plans = {}
  for split, files in (("train", train), ("valid", sorted(valid))):
    segs = [
      (rel, start, length)
      for rel in files
      for start, length in segment_bounds(num_samples[rel], segment, min_samples)
    ]
    if segs:
      plans[split] = plan_shards(segs, shard_samples, cfg.seed)
  plan_hash = hashlib.sha256(json.dumps(plans).encode()).hexdigest()
  return plans, plan_hash


# ------------------------------------------------------------------------------------ main


def _cached_audios(caches: dict[str, str]) -> Iterator[tuple[str, np.ndarray]]:
  """(file, decoded float32 audio) of ``caches`` (file -> its cache), one at a time (the k-means
  fit streams them; its frame sample is keyed by the file's path, not its position)."""
  for rel, cache in caches.items():
    yield rel, from_int16(np.load(cache + ".npy", mmap_mode="r"))


def kmeans_config(cfg: PrepareConfig) -> teachers_lib.KMeansConfig:
  """The k-means teacher's settings that the --kmeans-* options set."""
  return teachers_lib.KMeansConfig(
    num_codebooks=cfg.kmeans_codebooks,
    codebook_size=cfg.kmeans_codebook_size,
    max_fit_frames=cfg.kmeans_max_fit_frames,
    codebook_features=cfg.kmeans_features,
  )


def teacher_request(
  cfg: PrepareConfig, audios: Iterable[tuple[str, np.ndarray]]
) -> tuple[str, dict[str, Any]]:
  """``teachers.make_teacher``'s arguments for the --teacher options (``audios``: the k-means
  fit's (file, audio) pairs)."""
  if cfg.teacher == "kmeans":
    return "kmeans", {"audios": audios, "config": kmeans_config(cfg), "seed": cfg.seed}
  if cfg.teacher == "encodec":
    if not cfg.encodec:
      raise ValueError(
        "--teacher=encodec needs --encodec=PATH_OR_HUB_ID (a local EnCodec 24 kHz folder)"
      )
    # One torch thread per worker process: parallel over files, and the codes do not depend on
    # the machine's core count (torch's thread count moves near ties, as the batch does).
    ecfg = teachers_lib.EncodecTeacherConfig(
      mode=cfg.encodec_mode, device=cfg.device, num_threads=1
    )
    if cfg.encodec.startswith("random-init"):
      return "encodec", {"seed": cfg.seed, "config": ecfg}
    return "encodec", {"source": cfg.encodec, "config": ecfg}
  raise ValueError(f"--teacher must be kmeans or encodec, got {cfg.teacher!r}")


def content_options(cfg: PrepareConfig) -> dict[str, Any]:
  """The options that decide the output's content (a re-run must repeat them)."""
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_CONTENT_OPTIONS}


def manifest_options(cfg: PrepareConfig) -> dict[str, Any]:
  """The options the manifest records: the content options and --keep-cache."""
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in MANIFEST_OMITS}


def option_changes(recorded: dict[str, Any], cfg: PrepareConfig) -> list[str]:
  """``--flag RECORDED -> NOW`` for each content option of ``cfg`` that differs from
  ``recorded`` (an earlier run's options)."""
  changes = []
  for key, now in content_options(cfg).items():
    then = recorded.get(key, "(not recorded)")
    if then != now:
      changes.append(f"--{key.replace('_', '-')} {then} -> {now}")
  return changes


def previous_run(out: str, work: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
  """(manifest of a finished run, plan record of an unfinished or cached one) found in ``out`` and
  its cache folder ``work``."""
  found: list[dict[str, Any] | None] = []
  for path in (manifest_lib.manifest_path(out), os.path.join(work, PLAN)):
    try:
      with fsspec.open(path, "r") as f:
        found.append(json.load(f))
    except FileNotFoundError:
      found.append(None)
    except ValueError as e:
      raise ValueError(f"{path} is unreadable ({e}); {OVERWRITE_HINT}") from e
  return found[0], found[1]


def refuse_other_options(out: str, cfg: PrepareConfig, manifest: dict | None, plan: dict | None):
  """Refuse (in one line) to continue an earlier run in ``out`` made with other content options."""
  for what, record in (("a dataset", manifest), ("an unfinished run", plan)):
    if record is None or "options" not in record:  # plan records before options were recorded
      continue
    changes = option_changes(record["options"], cfg)
    if changes:
      raise ValueError(
        f"{out} holds {what} prepared with other options ({'; '.join(changes)}); {OVERWRITE_HINT}"
      )


def _plan_difference(split_plans: dict[str, list], plan_hash: str, manifest: dict) -> str | None:
  """How the planned shards differ from those of a finished run's ``manifest`` (its plan hash, or
  for manifests without one, each shard's record and sample counts), or None."""
  if "plan_hash" in manifest:
    return None if manifest["plan_hash"] == plan_hash else "the segments planned differ"
  counts = {
    split: [(len(shard), sum(seg[3] for seg in shard)) for shard in shards]
    for split, shards in split_plans.items()
  }
  recorded = {
    split: [(s["num_records"], s["num_samples"]) for s in info["shards"]]
    for split, info in manifest["splits"].items()
  }
  return None if counts == recorded else "the shards' record and sample counts differ"


def other_inputs(
  out: str,
  split_plans: dict[str, list],
  plan_hash: str,
  manifest: dict[str, Any] | None,
  plan: dict[str, Any] | None,
) -> str | None:
  """The one-line refusal of a run whose planned segments differ from those of the earlier run
  in ``out`` (other input files under the same options), or None."""
  if manifest is not None and (differs := _plan_difference(split_plans, plan_hash, manifest)):
    return f"{out} holds a dataset prepared from other input files ({differs}); {OVERWRITE_HINT}"
  if plan is not None and plan["plan"] != plan_hash:
    return f"{out} holds an unfinished run over other input files or options; {OVERWRITE_HINT}"
  return None


def clear_output(out: str, work: str) -> list[str]:
  """Delete what a run of prepare wrote in ``out`` (the manifest first, so that the folder stops
  looking finished) and its cache folder ``work``; other files are kept. Returns the names
  removed."""
  removed = []
  names = sorted(storage.list_names(out), key=lambda n: n != manifest_lib.MANIFEST)
  for name in names:
    path = os.path.join(out, name)
    if name in (WORK, BEAM_WORK, TEACHER_DIR, TEACHER_DIR + TMP_SUFFIX) and storage.isdir(path):
      storage.remove(path)
    elif (
      name in (manifest_lib.MANIFEST, SKIPPED, IGNORED)
      or name.removesuffix(TMP_SUFFIX) in (manifest_lib.MANIFEST, SKIPPED, IGNORED)
      or _SHARD_FILE.match(name)
    ):
      storage.remove(path)
    else:
      continue
    removed.append(name)
  if os.path.isdir(work) and WORK not in removed:
    shutil.rmtree(work)
    removed.append(work)
  return removed


def warn(msg: str) -> None:
  """A line about reused work that was bad and redone: printed even without progress output."""
  print(msg, file=sys.stderr, flush=True)


def open_run(cfg: PrepareConfig, work: str) -> tuple[dict | None, dict | None]:
  """The checks before any file is read (input, options, output), then the earlier run in the
  output: (its manifest, its plan record), after refusing one made with other options; with
  --overwrite, its files are deleted first and there is none. ``work``: the run's work folder."""
  storage.check_bucket(cfg.input, "--input")
  if not storage.isdir(cfg.input):
    raise ValueError(f"--input={cfg.input} is not a directory")
  check_options(cfg)  # bad teacher or output options fail before hours of decoding
  if cfg.segment_seconds * cfg.sample_rate % cfg.hop:
    raise ValueError(
      f"--segment-seconds={cfg.segment_seconds} is not a whole number of {cfg.hop}-sample frames"
    )
  if cfg.overwrite:
    removed = clear_output(cfg.output, work)
    if removed:
      warn(f"prepare: --overwrite: deleted the earlier run's {len(removed)} files in {cfg.output}")
    return None, None
  previous, previous_plan = previous_run(cfg.output, work)  # before anything is written
  refuse_other_options(cfg.output, cfg, previous, previous_plan)
  return previous, previous_plan


def checked_teacher(
  cfg: PrepareConfig, teacher_dir: str, name: str, kwargs: dict[str, Any]
) -> teachers_lib.Teacher:
  """The teacher saved in ``teacher_dir``, else made from ``teacher_request``'s (name, kwargs) and
  saved there; refused when its rate or hop is not the run's."""
  teacher = teachers_lib.load_or_make_teacher(teacher_dir, name, **kwargs)
  if teacher.sample_rate != cfg.sample_rate or teacher.hop != cfg.hop:
    raise ValueError(
      f"teacher rate {teacher.sample_rate} Hz / hop {teacher.hop} does not match "
      f"{cfg.sample_rate} Hz / {cfg.hop}"
    )
  return teacher


def recorded_shards(previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
  """Shard name -> its entry in an earlier run's manifest (what a kept shard is checked against)."""
  return {
    s["path"]: s for info in (previous or {}).get("splits", {}).values() for s in info["shards"]
  }


def dataset_manifest(
  cfg: PrepareConfig,
  shards_by_split: dict[str, list[dict[str, Any]]],
  files: dict[str, Any],
  skipped: list[dict[str, str]],
  other: list[str],
  teacher: teachers_lib.Teacher,
  plan_hash: str,
) -> dict[str, Any]:
  """The manifest of a finished run: ``files`` holds the "input", "used", "train" and "valid"
  files."""
  return manifest_lib.build_manifest(
    shards_by_split,
    {"train": len(files["train"]), "valid": len(files["valid"])},
    teacher.config(),
    sample_rate=cfg.sample_rate,
    hop=cfg.hop,
    counts={
      "num_input_files": len(files["input"]),
      "num_used_files": len(files["used"]),
      "num_skipped_files": len(skipped),
      "num_ignored_files": len(other),
    },
    options=manifest_options(cfg),
    plan_hash=plan_hash,
  )


def prepare(cfg: PrepareConfig, *, progress: bool = True) -> dict[str, Any]:
  """Run every stage; returns the manifest (also written to OUTPUT/manifest.json)."""
  work = work_dir(cfg)
  previous, previous_plan = open_run(cfg, work)
  t_start = time.time()
  out = cfg.output
  say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
  work_existed = os.path.isdir(work)
  workers = cfg.workers or os.cpu_count() or 1
  ctx = multiprocessing.get_context("spawn")

  audio_files, other = scan(cfg.input)
  # A bucket's stamps from one listing (local files are examined one by one by _cache_key).
  stamps = storage.file_stamps(cfg.input) if storage.is_remote(cfg.input) else {}
  if not audio_files:
    raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {cfg.input}")
  say(
    f"prepare: {len(audio_files)} audio files under {cfg.input} ({len(other)} other files "
    f"ignored), {workers} workers"
  )
  caches = {
    rel: os.path.join(work, _cache_key(os.path.join(cfg.input, rel), rel, stamps.get(rel)))
    for rel in audio_files
  }
  min_samples = int(cfg.min_seconds * cfg.sample_rate)

  os.makedirs(work, exist_ok=True)
  with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    futs = {
      pool.submit(
        _decode_job, os.path.join(cfg.input, rel), caches[rel], cfg.sample_rate, min_samples
      ): rel
      for rel in audio_files
    }
    decoded = {}
    for fut in progress_lib.progress(
      cf.as_completed(futs), len(futs), "decode", "files", enabled=progress
    ):
      decoded[futs[fut]] = fut.result()
  for rel in audio_files:
    if decoded[rel].get("rebuilt"):
      warn(f"prepare: the decoded cache of {rel} was bad ({decoded[rel]['rebuilt']}); redone")
  skipped = [
    {"path": rel, "reason": decoded[rel]["reason"]} for rel in audio_files if not decoded[rel]["ok"]
  ]
  good = [rel for rel in audio_files if decoded[rel]["ok"]]

  valid = valid_split(good, cfg.valid_fraction, cfg.seed)
  train_files = [rel for rel in good if rel not in valid]
  rel_plans, plan_hash = plan_splits({rel: decoded[rel]["num_samples"] for rel in good}, valid, cfg)
  split_plans = {
    split: [[(caches[rel], rel, st, ln) for rel, st, ln in shard] for shard in shards]
    for split, shards in rel_plans.items()
  }
  refusal = other_inputs(out, split_plans, plan_hash, previous, previous_plan)
  if refusal:
    if not work_existed:
      shutil.rmtree(work, ignore_errors=True)  # leave the folder as it was
    raise ValueError(refusal)
  atomic_write_text(
    os.path.join(work, PLAN), json.dumps({"plan": plan_hash, "options": content_options(cfg)})
  )
  atomic_write_jsonl(
    os.path.join(out, IGNORED),
    ({"path": p, "reason": "not an audio file extension"} for p in other),
  )
  atomic_write_jsonl(os.path.join(out, SKIPPED), skipped)
  for s in skipped:
    say(f"  skipped {s['path']}: {s['reason']}")
  if not good:
    raise ValueError(
      f"none of the {len(audio_files)} audio files could be used; see {os.path.join(out, SKIPPED)}"
    )

  teacher_dir = os.path.join(out, TEACHER_DIR)
  say(f"teacher: {cfg.teacher}")
  fit_audios = progress_lib.progress(  # lazy: silent when a saved teacher is reused
    _cached_audios({rel: caches[rel] for rel in train_files}),
    len(train_files),
    "k-means features",
    "files",
    enabled=progress,
  )
  name, kwargs = teacher_request(cfg, fit_audios)
  if name == "kmeans":
    kwargs["progress"] = progress  # the clustering's own lines (per codebook, per step)
  teacher = checked_teacher(cfg, teacher_dir, name, kwargs)
  recorded = recorded_shards(previous)
  with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    token_futs = {
      pool.submit(
        _tokens_job,
        caches[rel],
        teacher_dir,
        (teacher.num_codebooks, teachers_lib.num_tokens(decoded[rel]["num_samples"], cfg.hop)),
      ): rel
      for rel in good
    }
    for fut in progress_lib.progress(
      cf.as_completed(token_futs), len(token_futs), "tokens", "files", enabled=progress
    ):
      if note := fut.result():
        warn(f"prepare: the token cache of {token_futs[fut]} was bad ({note}); redone")
    shard_futs = {}
    for split, shards in split_plans.items():
      for i, shard in enumerate(shards):
        shard_name = manifest_lib.shard_name(split, i, len(shards))
        path = os.path.join(out, shard_name)
        fut = pool.submit(_shard_job, path, shard, cfg.hop, recorded.get(shard_name))
        shard_futs[fut] = (split, i, shard_name)
    results: dict[str, dict[int, Any]] = {s: {} for s in split_plans}
    for fut in progress_lib.progress(
      cf.as_completed(shard_futs), len(shard_futs), "shards", "shards", enabled=progress
    ):
      split, i, shard_name = shard_futs[fut]
      results[split][i], note = fut.result()
      if note:
        warn(f"prepare: {os.path.join(out, shard_name)} {note}; rebuilt it")

  shards_by_split = {
    split: [by_index[i] for i in sorted(by_index)] for split, by_index in results.items()
  }
  files = {"input": audio_files, "used": good, "train": train_files, "valid": valid}
  manifest = dataset_manifest(cfg, shards_by_split, files, skipped, other, teacher, plan_hash)
  splits = manifest["splits"]
  manifest_lib.write_manifest(out, manifest)
  if not cfg.keep_cache:
    shutil.rmtree(work, ignore_errors=True)
  say(
    f"done in {time.time() - t_start:.1f} s: {manifest['total_hours']:.3f} h in "
    f"{sum(len(s['shards']) for s in splits.values())} shards; {len(skipped)} files skipped "
    f"(see {SKIPPED}); manifest {manifest_lib.manifest_path(out)}"
  )
  return manifest


# --flag metavars, where the field's type says too little.
_METAVARS = {
  "input": "DIR",
  "output": "DIR",
  "encodec": "PATH_OR_HUB_ID",
  "cache_dir": "DIR",
  "device": "DEVICE",
}


def build_parser() -> argparse.ArgumentParser:
  """The command line: one option per PrepareConfig field, its help the field's comment."""
  p = ArgumentParser(
    prog=prog("data_pipeline.prepare"),
    description=__doc__.split("\n\n")[0],
    epilog=__doc__.split("\n\n", 1)[1],
  )
  comments = field_comments(PrepareConfig)
  for field in dataclasses.fields(PrepareConfig):
    flag = "--" + field.name.replace("_", "-")
    kw: dict[str, Any] = {"help": comments[field.name], "dest": field.name}
    if field.default is dataclasses.MISSING:
      kw.update(required=True)
    elif isinstance(field.default, bool):
      kw.update(action="store_true", default=field.default)
    else:
      default = field.default
      kw.update(type=type(default) if default is not None else str, default=default)
    if field.name == "teacher":
      kw.update(choices=TEACHERS)
    elif field.name == "engine":
      kw.update(choices=ENGINES)
    elif field.name == "encodec_mode":
      kw.update(choices=teachers_lib.ENCODEC_MODES)
    elif field.name in _METAVARS or "type" in kw:
      kw.update(metavar=_METAVARS.get(field.name, "X" if kw.get("type") is float else "N"))
    p.add_argument(flag, **kw)
  return p


def parse_args(argv: list[str] | None) -> tuple[PrepareConfig, list[str]]:
  """(the options, the Beam pipeline options: the arguments prepare does not know, which only
  --engine=beam takes)."""
  parser = build_parser()
  known, rest = parser.parse_known_args(argv)
  cfg = PrepareConfig(**vars(known))
  return cfg, beam_options.pass_through(parser, rest, cfg.engine, "prepare")


def _looks_like_hub_id(source: str) -> bool:
  """``owner/name`` (facebook/encodec_24khz), not a path that merely does not exist."""
  return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.endswith(".py")


def check_options(cfg: PrepareConfig) -> None:
  """Refuses (one ValueError line) the options that would fail only after hours of decoding: the
  teacher's, an EnCodec source that is neither a folder nor a Hub id, an output that cannot be
  written (a file, a read-only folder, a bucket that does not exist or refuses writes)."""
  teacher_request(cfg, ())
  if cfg.teacher == "encodec" and not cfg.encodec.startswith("random-init"):
    if not os.path.exists(cfg.encodec) and not _looks_like_hub_id(cfg.encodec):
      raise ValueError(
        f"--encodec={cfg.encodec}: no such folder, and not a Hugging Face Hub id (owner/name, "
        "e.g. facebook/encodec_24khz)"
      )
  if cfg.encodec and cfg.teacher != "encodec":
    raise ValueError(f"--encodec applies only with --teacher=encodec (not --teacher={cfg.teacher})")
  if cfg.teacher == "encodec":
    teachers_lib.resolve_device(cfg.device)  # a CUDA device that is not there: one line, now
  storage.check_writable_folder(cfg.output, "--output")


def main(argv: list[str] | None = None) -> int:
  cfg, beam_args = parse_args(argv)
  try:
    if cfg.engine == "beam":
      # Imported here: Beam is the optional `beam` extra, and its module builds on this one.
      from data_pipeline import beam_prepare  # pylint: disable=g-import-not-at-top

      manifest = beam_prepare.prepare(cfg, beam_args)
    else:
      manifest = prepare(cfg)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return EXIT_SKIPPED if manifest["num_skipped_files"] else 0


if __name__ == "__main__":
  sys.exit(main())
