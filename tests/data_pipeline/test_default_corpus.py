"""data_pipeline/default_corpus.py: prepared once, reused while its manifest matches, refused
when it was prepared for another teacher shape."""

from __future__ import annotations

import json
import os

import pytest

from data_pipeline import default_corpus, prepare_local
from data_pipeline import manifest as manifest_lib


def test_default_corpus_is_prepared_for_the_teacher_shape(default_data):
  m = manifest_lib.load_manifest(default_data)
  assert os.path.basename(default_data) == "default_8x64"
  assert (m["num_codebooks"], m["codebook_size"]) == (8, 64)
  assert set(m["splits"]) == {"train", "valid"} and m["num_skipped_files"] == 0
  assert m["total_hours"] * 60 >= 6.0 * (1 - 1e-9)  # at least the minutes asked for (float sums)


def test_default_corpus_is_reused_when_its_manifest_matches(default_data, monkeypatch):
  def never(*args, **kwargs):
    raise AssertionError("a finished default corpus must not be prepared again")

  monkeypatch.setattr(prepare_local, "prepare", never)
  before = os.stat(manifest_lib.manifest_path(default_data)).st_mtime_ns
  again = default_corpus.ensure_default_corpus(
    os.path.dirname(default_data), num_codebooks=8, codebook_size=64, minutes=6.0
  )
  assert again == default_data
  assert os.stat(manifest_lib.manifest_path(default_data)).st_mtime_ns == before


def test_default_corpus_for_another_teacher_shape_is_refused(default_data, tmp_path):
  out = default_corpus.corpus_dir(str(tmp_path), 4, 32)
  os.makedirs(out)
  m = dict(manifest_lib.load_manifest(default_data), num_codebooks=8, codebook_size=64)
  with open(manifest_lib.manifest_path(out), "w") as f:
    json.dump(m, f)
  with pytest.raises(ValueError, match=r"prepared for a 8 x 64 teacher, not 4 x 32; delete it"):
    default_corpus.ensure_default_corpus(
      str(tmp_path), num_codebooks=4, codebook_size=32, minutes=1.0
    )
