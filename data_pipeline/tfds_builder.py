"""The corpus the TFDS way: a tensorflow-datasets builder for a user's music folder.

  python -m data_pipeline.tfds_builder --input=MUSIC_DIR --data-dir=TFDS_DIR --teacher-dir=TEACHER \
      [--to-tfrecord=OUT_DIR]

``MertMusic`` decodes every audio file of the folder (the same checks as ``prepare``: bad files are
skipped and listed in ``skipped.jsonl`` next to the dataset, and in the log), tokenises it with a
saved teacher (``prepare``'s ``OUTPUT/teacher``, or a default k-means teacher fitted here, by
``teachers.factory.load_or_make_teacher`` like ``prepare``'s, when the teacher folder holds none),
cuts it into segments like ``prepare`` and writes a TFDS dataset in **array_record** format (TFDS
writes TFRecord only through TensorFlow, which this project does not need). Features: ``audio``
int16 (bytes-encoded), ``tokens`` int16 (K * T, row-major), ``num_codebooks``, ``source_id``,
``offset``; splits ``train`` and ``valid`` as ``prepare`` chooses them.

The trainer's reader streams TFRecord shards, so ``to_tfrecord`` converts a built TFDS dataset
into a ``prepare``-style folder (shards + manifest.json) that ``data_pipeline.reader`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_pipeline import manifest as manifest_lib
from data_pipeline import prepare_jobs
from data_pipeline.audio import BadAudioError, decode_file
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import encode_example, from_int16
from data_pipeline.teachers import base, factory
from data_pipeline.tfrecord import TFRecordWriter
from mert_jax.files.atomic import atomic_write_text


class MertMusic(tfds.core.GeneratorBasedBuilder):
  """A music folder (manual_dir) as 24 kHz int16 segments with teacher tokens."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass your music folder as download_config.manual_dir."

  def __init__(
    self,
    *,
    teacher_dir: str,
    segment_seconds: float = 30.0,
    min_seconds: float = 3.0,
    valid_fraction: float = 0.02,
    seed: int = 0,
    **kwargs: Any,
  ):
    self.teacher = factory.load_teacher(teacher_dir)
    self.segment = int(segment_seconds * self.teacher.sample_rate)
    self.min_samples = int(min_seconds * self.teacher.sample_rate)
    self.valid_fraction = valid_fraction
    self.seed = seed
    self.skipped: list[dict[str, str]] = []
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Music segments at 24 kHz (int16) with acoustic-teacher tokens, for MERT "
      "pretraining.",
      features=tfds.features.FeaturesDict(
        {
          "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
          "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding="bytes"),
          "num_codebooks": np.int64,
          "source_id": tfds.features.Text(),
          "offset": np.int64,
        }
      ),
      metadata=tfds.core.MetadataDict(teacher=self.teacher.config()),
    )

  def _split_generators(
    self, dl_manager: tfds.download.DownloadManager
  ) -> dict[str, Iterator[Any]]:
    folder = str(dl_manager.manual_dir)
    files, _ = prepare_jobs.scan(folder)
    valid = prepare_jobs.valid_split(files, self.valid_fraction, self.seed)
    splits = {"train": self._generate_examples(folder, [f for f in files if f not in valid])}
    if valid:
      splits["valid"] = self._generate_examples(folder, sorted(valid))
    return splits

  def _generate_examples(
    self, folder: str, files: list[str]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    for rel in files:
      try:
        pcm = decode_file(os.path.join(folder, rel), self.teacher.sample_rate, self.min_samples)
      except BadAudioError as e:
        self.skipped.append({"path": rel, "reason": str(e)})
        logging.warning("skipped %s: %s", rel, e)
        continue
      tokens = self.teacher.tokens(from_int16(pcm))
      hop = self.teacher.hop
      for start, length in prepare_jobs.segment_bounds(len(pcm), self.segment, self.min_samples):
        t0 = start // hop
        seg_tokens = tokens[:, t0 : t0 + -(-length // hop)]
        yield (
          f"{rel}@{start}",
          {
            "audio": pcm[start : start + length],
            "tokens": seg_tokens.reshape(-1),
            "num_codebooks": seg_tokens.shape[0],
            "source_id": rel,
            "offset": start,
          },
        )


def to_tfrecord(
  builder: MertMusic, output: str, *, shard_seconds: float = 3600.0
) -> dict[str, Any]:
  """Write the built dataset as reader-compatible TFRecord shards + manifest.json in ``output``."""
  os.makedirs(output, exist_ok=True)
  teacher = builder.teacher
  shard_samples = int(shard_seconds * teacher.sample_rate)
  shards_by_split, files_by_split = {}, {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    groups, current, size = [], [], 0
    for i in range(len(source)):
      current.append(i)
      size += len(source[i]["audio"])
      if size >= shard_samples:
        groups.append(current)
        current, size = [], 0
    if current:
      groups.append(current)
    infos, sources = [], set()
    for g, indices in enumerate(groups):
      path = os.path.join(output, manifest_lib.shard_name(split, g, len(groups)))
      lengths = []
      with TFRecordWriter(path) as writer:
        for i in indices:
          ex = source[i]
          k = int(ex["num_codebooks"])
          source_id = (
            ex["source_id"].decode() if isinstance(ex["source_id"], bytes) else str(ex["source_id"])
          )
          writer.write(
            encode_example(ex["audio"], ex["tokens"].reshape(k, -1), source_id, int(ex["offset"]))
          )
          lengths.append(len(ex["audio"]))
          sources.add(source_id)
      infos.append(manifest_lib.shard_info(path, lengths))
    shards_by_split[split], files_by_split[split] = infos, len(sources)
  used = sum(files_by_split.values())
  manifest = manifest_lib.build_manifest(
    shards_by_split,
    files_by_split,
    teacher.config(),
    sample_rate=teacher.sample_rate,
    hop=teacher.hop,
    counts={
      "num_input_files": used + len(builder.skipped),
      "num_used_files": used,
      "num_skipped_files": len(builder.skipped),
      "num_ignored_files": 0,
    },
    options={"source": f"tfds:{builder.name}/{builder.version}", "data_dir": str(builder.data_dir)},
  )
  manifest_lib.write_manifest(output, manifest)
  return manifest


def _decoded_audios(input_dir: str) -> Iterator[tuple[str, np.ndarray]]:
  """(file, float32 audio) of every usable audio file under ``input_dir``, one at a time (bad
  ones skipped)."""
  files, _ = prepare_jobs.scan(input_dir)
  for rel in files:
    try:
      yield rel, from_int16(decode_file(os.path.join(input_dir, rel), SAMPLE_RATE, 1))
    except BadAudioError:
      continue


def build(input_dir: str, data_dir: str, teacher_dir: str, **kwargs: Any) -> MertMusic:
  """Fit a k-means teacher if ``teacher_dir`` holds none, then build the TFDS dataset."""
  if not os.path.exists(os.path.join(teacher_dir, base.TEACHER_JSON)):
    factory.load_or_make_teacher(
      teacher_dir, "kmeans", audios=_decoded_audios(input_dir), seed=kwargs.get("seed", 0)
    )
  builder = MertMusic(teacher_dir=teacher_dir, data_dir=data_dir, **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=input_dir))
  skipped_path = os.path.join(str(builder.data_dir), prepare_jobs.SKIPPED)
  atomic_write_text(skipped_path, "".join(json.dumps(s) + "\n" for s in builder.skipped))
  return builder


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description="Build the MertMusic TFDS dataset from a music folder.")
  p.add_argument("--input", required=True)
  p.add_argument("--data-dir", required=True, help="TFDS data_dir")
  p.add_argument(
    "--teacher-dir", required=True, help="saved teacher (fitted here with k-means if empty)"
  )
  p.add_argument("--to-tfrecord", help="also convert to a reader folder here")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  builder = build(args.input, args.data_dir, args.teacher_dir, seed=args.seed)
  print(
    f"built {builder.name} {builder.version} in {builder.data_dir}; skipped "
    f"{len(builder.skipped)} files"
  )
  if args.to_tfrecord:
    m = to_tfrecord(builder, args.to_tfrecord)
    print(f"converted to {args.to_tfrecord}: {m['total_hours']:.3f} h")
  return prepare_jobs.EXIT_SKIPPED if builder.skipped else 0


if __name__ == "__main__":
  sys.exit(main())
