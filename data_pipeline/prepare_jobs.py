"""The work of a preparation that both engines share (``prepare.py`` is the command): the options
(``PrepareConfig``), the per-file jobs (decode, tokens, shards and their checks) and the plan
(scan, segments, valid split, shards), and the teacher the options ask for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from typing import Any, Iterable

import numpy as np

from data_pipeline import manifest as manifest_lib
from data_pipeline.audio import AUDIO_EXTENSIONS, BadAudioError, decode_file
from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.records import encode_example, from_int16, parse_example
from data_pipeline.teachers import base, encodec, factory, kmeans_features
from data_pipeline.tfrecord import CorruptRecordError, TFRecordReader, TFRecordWriter
from mert_jax.files import storage
from mert_jax.files.atomic import (
  atomic_save_npy,
  atomic_write_text,
)

SKIPPED = "skipped.jsonl"
IGNORED = "ignored.jsonl"
WORK = ".work"
BEAM_WORK = ".beam"  # --engine=beam: what its passes hand to the launcher (beam_prepare.py)
PLAN = "plan.json"
TEACHER_DIR = "teacher"
EXIT_SKIPPED = 3
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


_TEACHER: base.Teacher | None = None


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
    _TEACHER = factory.load_teacher(teacher_dir)
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


# ------------------------------------------------------------------------------------ teacher


def kmeans_config(cfg: PrepareConfig) -> kmeans_features.KMeansConfig:
  """The k-means teacher's settings that the --kmeans-* options set."""
  return kmeans_features.KMeansConfig(
    num_codebooks=cfg.kmeans_codebooks,
    codebook_size=cfg.kmeans_codebook_size,
    max_fit_frames=cfg.kmeans_max_fit_frames,
    codebook_features=cfg.kmeans_features,
  )


def teacher_request(
  cfg: PrepareConfig, audios: Iterable[tuple[str, np.ndarray]]
) -> tuple[str, dict[str, Any]]:
  """``teachers.factory.make_teacher``'s arguments for the --teacher options (``audios``: the
  k-means fit's (file, audio) pairs)."""
  if cfg.teacher == "kmeans":
    return "kmeans", {"audios": audios, "config": kmeans_config(cfg), "seed": cfg.seed}
  if cfg.teacher == "encodec":
    if not cfg.encodec:
      raise ValueError(
        "--teacher=encodec needs --encodec=PATH_OR_HUB_ID (a local EnCodec 24 kHz folder)"
      )
    # One torch thread per worker process: parallel over files, and the codes do not depend on
    # the machine's core count (torch's thread count moves near ties, as the batch does).
    ecfg = encodec.EncodecTeacherConfig(mode=cfg.encodec_mode, device=cfg.device, num_threads=1)
    if cfg.encodec.startswith("random-init"):
      return "encodec", {"seed": cfg.seed, "config": ecfg}
    return "encodec", {"source": cfg.encodec, "config": ecfg}
  raise ValueError(f"--teacher must be kmeans or encodec, got {cfg.teacher!r}")
