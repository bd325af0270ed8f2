r"""``prepare --engine=beam``: the preparation as an Apache Beam pipeline, for corpora that outgrow
one machine. The same options, output, exit codes and messages as the local engine
(data_pipeline/prepare_local.py); the manifest's content hash is the same as the local engine's for
the same inputs and options, and the same for any number of workers.

  python -m data_pipeline.prepare --engine=beam --input=gs://B/music --output=gs://B/data \
      --teacher=kmeans [--runner=DataflowRunner --project=P --region=R ...]

Two pipelines with small steps on the launching machine between them; nothing decoded is cached:
each pass decodes the files it needs again (decoding costs far less than the teacher's tokens).

1. read      every audio file: decode and resample (``prepare_jobs.decode_source``) -> its length,
             or why it is skipped; with the k-means teacher also its frame candidates, merged by a
             combiner into the seeded corpus-wide sample (data_pipeline/frame_sample.py; the
             held-out files are left out of it as the local engine leaves them out).
   (launcher) skipped.jsonl; valid split and shard plan (``prepare_jobs.plan_splits``); the teacher
             (the k-means fit runs here, on the sample, with its progress lines), saved in
             OUTPUT/teacher for the workers.
2. write     shards an earlier run finished are read back and kept when whole
             (``prepare_jobs.verify_shard``); for the rest, each file that has segments in them is
             decoded, tokenised once and cut into records, which are grouped by shard and written
             atomically in plan order.
   (launcher) manifest.json.

Between the passes the launcher reads what a pass left in OUTPUT/.beam/ (a local folder or the
bucket: any runner's workers can write there); the folder is deleted at the end.

Runners: Beam's DirectRunner runs here with ``--workers`` processes (its
``--direct_num_workers``/``--direct_running_mode`` win when given); Dataflow, Flink and Spark take
their own options (docs/beam.md). The teacher's files must be readable by the workers (a bucket, or
a Hugging Face Hub id for EnCodec).
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import sys
import time
from typing import Any, Iterable, Iterator

import fsspec
import numpy as np

from data_pipeline import beam_options, frame_sample
from data_pipeline import manifest as manifest_lib
from data_pipeline import prepare_jobs as jobs
from data_pipeline import prepare_run as runs
from data_pipeline.audio import AUDIO_EXTENSIONS
from data_pipeline.records import encode_example, from_int16
from data_pipeline.teachers import base, factory, kmeans_features
from data_pipeline.tfrecord import TFRecordWriter
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_write_bytes, atomic_write_jsonl, atomic_write_text
from mert_jax.terminal.progress import log_level

with log_level(logging.ERROR):  # Beam's import warns that optional BigQuery clients are missing
  import apache_beam as beam
  from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
  )

FILES = "files.json"
SAMPLE = "kmeans_sample.npz"
SHARDS = "shards.json"
NOTES = "rebuilt.json"
SAMPLE_TAG = "sample"


def _join(folder: str, name: str) -> str:
  return posixpath.join(folder, name) if storage.is_remote(folder) else os.path.join(folder, name)


# ------------------------------------------------------------------------------ pass 1: read


class ReadFile(beam.DoFn):
  """A file -> its summary (``{"path", "ok", "num_samples" | "reason"}``), and with the k-means
  teacher its frame candidates on the ``sample`` output as (valid score, path, FrameSample)."""

  def __init__(self, cfg: jobs.PrepareConfig, with_sample: bool):
    self.cfg, self.with_sample = cfg, with_sample

  def process(self, rel: str) -> Iterator[Any]:
    cfg = self.cfg
    min_samples = int(cfg.min_seconds * cfg.sample_rate)
    pcm, result = jobs.decode_source(_join(cfg.input, rel), cfg.sample_rate, min_samples)
    yield {"path": rel, **result}
    if pcm is not None and self.with_sample:
      kcfg = jobs.kmeans_config(cfg)
      sample = kmeans_features.file_candidates(rel, from_int16(pcm), kcfg, cfg.seed)
      yield beam.pvalue.TaggedOutput(SAMPLE_TAG, (jobs.valid_score(rel, cfg.seed), rel, sample))


class TrainSample:
  """The k-means sample of the training files, built from every usable file's candidates before
  the split is known (a Beam combiner's accumulator; pure, so any merge order gives one result).

  ``prepare.valid_split`` holds out the files whose score is below the fraction, or when there are
  none the lowest-scored file. So files scored below the fraction never enter ``sample``; of the
  rest, the lowest-scored one so far is held aside, and rejoins the sample in ``result`` unless
  it is that fallback valid file."""

  def __init__(self, limit: int, dim: int, fraction: float):
    self.sample = frame_sample.FrameSample.empty(limit, dim)
    self.aside: tuple[float, str, frame_sample.FrameSample] | None = None
    self.fraction, self.num_good, self.any_valid = fraction, 0, False

  def add(self, score: float, rel: str, candidates: frame_sample.FrameSample) -> "TrainSample":
    self.num_good += 1
    if score < self.fraction:
      self.any_valid = True
    else:
      self._offer_aside((score, rel, candidates))
    return self

  def _offer_aside(self, item: tuple[float, str, frame_sample.FrameSample]) -> None:
    if self.aside is None:
      self.aside = item
      return
    low, high = sorted([self.aside, item], key=lambda t: (t[0], t[1]))
    self.aside = low
    self.sample = self.sample.add(high[2])

  def merge(self, other: "TrainSample") -> "TrainSample":
    self.sample = self.sample.add(other.sample)
    self.num_good += other.num_good
    self.any_valid = self.any_valid or other.any_valid
    if other.aside is not None:
      self._offer_aside(other.aside)
    return self

  def result(self) -> frame_sample.FrameSample:
    fallback_valid = self.fraction > 0 and self.num_good >= 2 and not self.any_valid
    if self.aside is not None and not fallback_valid:
      return self.sample.add(self.aside[2]).compact()
    return self.sample.compact()


class TrainSampleFn(beam.CombineFn):
  """Combines (valid score, path, candidates) into the training files' FrameSample."""

  def __init__(self, limit: int, dim: int, fraction: float):
    self.limit, self.dim, self.fraction = limit, dim, fraction

  def create_accumulator(self) -> TrainSample:
    return TrainSample(self.limit, self.dim, self.fraction)

  def add_input(self, acc: TrainSample, item: tuple) -> TrainSample:
    return acc.add(*item)

  def merge_accumulators(self, accs: Iterable[TrainSample]) -> TrainSample:
    accs = list(accs)
    for other in accs[1:]:
      accs[0].merge(other)
    return accs[0]

  def extract_output(self, acc: TrainSample) -> frame_sample.FrameSample:
    return acc.result()


def _save_sample(sample: frame_sample.FrameSample, path: str) -> None:
  buf = io.BytesIO()
  np.savez(buf, keys=sample.keys, features=sample.features, frames_seen=sample.frames_seen)
  atomic_write_bytes(path, buf.getvalue())


def _load_sample(path: str, limit: int) -> frame_sample.FrameSample:
  with fsspec.open(path, "rb") as f, np.load(io.BytesIO(f.read())) as z:
    return frame_sample.FrameSample(limit, z["keys"], z["features"], int(z["frames_seen"]))


def read_pass(
  cfg: jobs.PrepareConfig, rels: list[str], work: str, options: PipelineOptions, with_sample: bool
) -> None:
  """Pass 1: OUTPUT/.beam/files.json (a summary per file) and, ``with_sample``,
  kmeans_sample.npz."""
  kcfg = jobs.kmeans_config(cfg)
  with beam.Pipeline(options=options) as p:
    read = (
      p
      | "files" >> beam.Create(rels)
      | "spread" >> beam.Reshuffle()
      | "decode" >> beam.ParDo(ReadFile(cfg, with_sample)).with_outputs(SAMPLE_TAG, main="summary")
    )
    _ = (
      read.summary
      | "all summaries" >> beam.combiners.ToList()
      | "write summaries"
      >> beam.Map(lambda rows: atomic_write_text(_join(work, FILES), json.dumps(rows)))
    )
    if with_sample:
      _ = (
        read[SAMPLE_TAG]
        | "k-means sample"
        >> beam.CombineGlobally(
          TrainSampleFn(kcfg.max_fit_frames, kcfg.feature_dim, cfg.valid_fraction)
        )
        | "write sample" >> beam.Map(_save_sample, _join(work, SAMPLE))
      )


# ----------------------------------------------------------------------------- pass 2: write


class KeepOrPlan(beam.DoFn):
  """A planned shard -> its manifest entry on ``kept`` when an earlier run wrote it whole, else
  (file, (shard, position, start, length)) for each of its segments, and on ``notes`` why an
  existing shard is rebuilt (the launcher prints them: a worker's own output may be far away)."""

  def __init__(self, out: str):
    self.out = out

  def process(self, shard: dict[str, Any]) -> Iterator[Any]:
    path = _join(self.out, shard["name"])
    segments = [(None, rel, st, ln) for rel, st, ln in shard["segments"]]
    if storage.exists(path):
      scan, note = jobs.verify_shard(path, segments, shard["recorded"])
      if note is None:
        lengths = [ln for _, _, ln in shard["segments"]]
        yield beam.pvalue.TaggedOutput(
          "kept", (shard["name"], manifest_lib.shard_info(path, lengths, scan))
        )
        return
      yield beam.pvalue.TaggedOutput("notes", f"prepare: {path} {note}; rebuilt it")
    for position, (rel, start, length) in enumerate(shard["segments"]):
      yield rel, (shard["name"], position, start, length)


class EncodeFile(beam.DoFn):
  """(file, its planned segments) -> (shard, (position, length, record bytes)) per segment: the file
  decoded once and tokenised whole by the saved teacher."""

  def __init__(self, cfg: jobs.PrepareConfig, teacher_dir: str):
    self.cfg, self.teacher_dir = cfg, teacher_dir
    self.teacher: base.Teacher | None = None

  def setup(self) -> None:
    self.teacher = factory.load_teacher(self.teacher_dir)

  def process(self, item: tuple[str, Iterable[tuple[str, int, int, int]]]) -> Iterator[Any]:
    rel, segments = item
    cfg = self.cfg
    pcm, result = jobs.decode_source(_join(cfg.input, rel), cfg.sample_rate, 1)
    if pcm is None:  # read in pass 1, unreadable now: the input changed under the run
      raise ValueError(f"{_join(cfg.input, rel)}: {result['reason']} (it was read in pass 1)")
    tokens = self.teacher.tokens(from_int16(pcm))
    for shard, position, start, length in segments:
      t0, n_tok = start // cfg.hop, -(-length // cfg.hop)
      record = encode_example(pcm[start : start + length], tokens[:, t0 : t0 + n_tok], rel, start)
      yield shard, (position, length, record)


def write_shard(item: tuple[str, Iterable[tuple[int, int, bytes]]], out: str) -> tuple[str, dict]:
  """(shard, its records) -> (shard, manifest entry): the records in plan order, written
  atomically."""
  name, records = item
  records = sorted(records, key=lambda r: r[0])
  path = _join(out, name)
  with TFRecordWriter(path) as writer:
    for _, _, record in records:
      writer.write(record)
  return name, manifest_lib.shard_info(path, [length for _, length, _ in records])


def write_pass(
  cfg: jobs.PrepareConfig, shards: list[dict[str, Any]], work: str, options: PipelineOptions
) -> None:
  """Pass 2: the shards, and OUTPUT/.beam/shards.json with each one's manifest entry."""
  teacher_dir = _join(cfg.output, jobs.TEACHER_DIR)
  with beam.Pipeline(options=options) as p:
    planned = (
      p
      | "shards" >> beam.Create(shards)
      | "spread" >> beam.Reshuffle()
      | "keep or plan"
      >> beam.ParDo(KeepOrPlan(cfg.output)).with_outputs("kept", "notes", main="todo")
    )
    _ = (
      planned.notes
      | "all notes" >> beam.combiners.ToList()
      | "write notes"
      >> beam.Map(lambda notes: atomic_write_text(_join(work, NOTES), json.dumps(sorted(notes))))
    )
    written = (
      planned.todo
      | "by file" >> beam.GroupByKey()
      | "encode" >> beam.ParDo(EncodeFile(cfg, teacher_dir))
      | "by shard" >> beam.GroupByKey()
      | "write" >> beam.Map(write_shard, cfg.output)
    )
    _ = (
      (written, planned.kept)
      | "entries" >> beam.Flatten()
      | "all entries" >> beam.combiners.ToDict()
      | "write entries" >> beam.Map(lambda d: atomic_write_text(_join(work, SHARDS), json.dumps(d)))
    )


# ---------------------------------------------------------------------------------- launcher


def _read_json(path: str) -> Any:
  with fsspec.open(path, "r") as f:
    return json.load(f)


def prepare(
  cfg: jobs.PrepareConfig, beam_args: list[str] | None = None, *, progress: bool = True
) -> dict[str, Any]:
  """Run both passes; returns the manifest (also written to OUTPUT/manifest.json)."""
  out = cfg.output
  work = _join(out, jobs.BEAM_WORK)
  previous, previous_plan = runs.open_run(cfg, work)
  t_start = time.time()
  say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
  options = beam_options.pipeline_options(cfg.workers, beam_args or [])
  runner = options.view_as(StandardOptions).runner or "DirectRunner"
  audio_files, other = jobs.scan(cfg.input)
  if not audio_files:
    raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {cfg.input}")
  workers = options.view_as(DirectOptions).direct_num_workers
  say(
    f"prepare: {len(audio_files)} audio files under {cfg.input} ({len(other)} other files "
    f"ignored), Beam {runner}" + (f" with {workers} workers" if runner == "DirectRunner" else "")
  )

  teacher_dir = _join(out, jobs.TEACHER_DIR)
  fit_kmeans = cfg.teacher == "kmeans" and not storage.exists(_join(teacher_dir, base.TEACHER_JSON))
  storage.makedirs(work)
  t0 = time.time()
  read_pass(cfg, audio_files, work, options, fit_kmeans)
  summaries = {row["path"]: row for row in _read_json(_join(work, FILES))}
  say(f"read: {len(audio_files)} files decoded in {time.time() - t0:.1f} s")
  skipped = [
    {"path": rel, "reason": summaries[rel]["reason"]}
    for rel in audio_files
    if not summaries[rel]["ok"]
  ]
  good = [rel for rel in audio_files if summaries[rel]["ok"]]
  valid = jobs.valid_split(good, cfg.valid_fraction, cfg.seed)
  train_files = [rel for rel in good if rel not in valid]
  plans, plan_hash = jobs.plan_splits(
    {rel: summaries[rel]["num_samples"] for rel in good}, valid, cfg
  )
  refusal = runs.other_inputs(out, plans, plan_hash, previous, previous_plan)
  if refusal:
    raise ValueError(refusal)
  atomic_write_text(
    _join(work, jobs.PLAN),
    json.dumps({"plan": plan_hash, "options": runs.content_options(cfg)}),
  )
  atomic_write_jsonl(
    _join(out, jobs.IGNORED),
    ({"path": p, "reason": "not an audio file extension"} for p in other),
  )
  atomic_write_jsonl(_join(out, jobs.SKIPPED), skipped)
  for s in skipped:
    say(f"  skipped {s['path']}: {s['reason']}")
  if not good:
    raise ValueError(
      f"none of the {len(audio_files)} audio files could be used; see {_join(out, jobs.SKIPPED)}"
    )

  say(f"teacher: {cfg.teacher}")
  name, kwargs = jobs.teacher_request(cfg, ())
  if name == "kmeans":
    kwargs.pop("audios")
    kwargs["progress"] = progress
    if fit_kmeans:
      kwargs["sample"] = _load_sample(_join(work, SAMPLE), kwargs["config"].max_fit_frames)
  teacher = runs.checked_teacher(cfg, teacher_dir, name, kwargs)
  recorded = runs.recorded_shards(previous)
  shard_list = [
    {
      "name": (shard_name := manifest_lib.shard_name(split, i, len(shards))),
      "segments": shard,
      "recorded": recorded.get(shard_name),
    }
    for split, shards in plans.items()
    for i, shard in enumerate(shards)
  ]
  t0 = time.time()
  write_pass(cfg, shard_list, work, options)
  entries = _read_json(_join(work, SHARDS))
  for note in _read_json(_join(work, NOTES)):
    runs.warn(note)
  say(f"shards: {len(shard_list)} written or kept in {time.time() - t0:.1f} s")
  shards_by_split = {
    split: [entries[manifest_lib.shard_name(split, i, len(shards))] for i in range(len(shards))]
    for split, shards in plans.items()
  }
  files = {"input": audio_files, "used": good, "train": train_files, "valid": valid}
  manifest = runs.dataset_manifest(cfg, shards_by_split, files, skipped, other, teacher, plan_hash)
  manifest_lib.write_manifest(out, manifest)
  storage.remove(work)
  say(
    f"done in {time.time() - t_start:.1f} s: {manifest['total_hours']:.3f} h in "
    f"{len(shard_list)} shards; {len(skipped)} files skipped (see {jobs.SKIPPED}); manifest "
    f"{manifest_lib.manifest_path(out)}"
  )
  return manifest
