"""data_pipeline/tfds_builder.py: the TFDS builder and its conversion for the reader."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from data_pipeline.reader import ReaderConfig, make_dataset
from data_pipeline.teachers import factory
from tests.data_pipeline.fixtures import records


def test_tfds_builder_writes_array_record_and_converts_for_the_reader(corpus, prepared, tmp_path):
  from data_pipeline import tfds_builder

  root, rels = corpus
  out, m = prepared
  bad = os.path.join(root, "..", "tfds_input")
  shutil.copytree(root, bad)
  open(os.path.join(bad, "broken.wav"), "wb").close()
  builder = tfds_builder.build(
    bad,
    str(tmp_path / "tfds"),
    os.path.join(out, "teacher"),
    segment_seconds=10.0,
    valid_fraction=0.25,
  )
  files = os.listdir(builder.data_dir)
  assert any(".array_record-" in f for f in files)
  assert builder.skipped == [{"path": "broken.wav", "reason": "empty file (0 bytes)"}]
  skipped = [json.loads(line) for line in open(os.path.join(builder.data_dir, "skipped.jsonl"))]
  assert skipped == builder.skipped
  conv = tfds_builder.to_tfrecord(builder, str(tmp_path / "converted"), shard_seconds=20.0)

  # Same teacher, same decoding and segmentation: the same records as prepare (in another order).
  def record_set(d, man):
    return sorted(
      (r["source_id"], r["offset"], r["audio"].tobytes(), r["tokens"].tobytes())
      for _, r in records(d, man)
    )

  assert record_set(str(tmp_path / "converted"), conv) == record_set(out, m)
  assert conv["num_skipped_files"] == 1
  batch = next(
    iter(
      make_dataset(
        str(tmp_path / "converted"),
        ReaderConfig(crop_samples=48000, batch_size=2, shuffle_window=4),
      )[0]
    )
  )
  assert batch["audio"].shape == (2, 48000) and batch["labels"].shape == (2, 4, 150)


def test_build_fits_a_default_kmeans_teacher_when_none_is_saved(monkeypatch, tmp_path):
  """The teacher is made by load_or_make_teacher from the folder's decodable files, lazily."""
  from data_pipeline import tfds_builder

  calls = []

  def fake(directory, name, **kwargs):
    calls.append((directory, name, sorted(kwargs)))
    raise RuntimeError("stop before fitting")

  monkeypatch.setattr(factory, "load_or_make_teacher", fake)
  with pytest.raises(RuntimeError, match="stop before fitting"):
    tfds_builder.build(
      str(tmp_path / "in"), str(tmp_path / "tfds"), str(tmp_path / "teacher"), seed=4
    )
  assert calls == [(str(tmp_path / "teacher"), "kmeans", ["audios", "seed"])]
