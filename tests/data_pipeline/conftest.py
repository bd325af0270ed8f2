"""Fixtures shared by the data-pipeline tests: a small real-music corpus and its preparation
(once per session; the tests only read them)."""

from __future__ import annotations

import pytest

from data_pipeline import prepare_local
from tests.data_pipeline.fixtures import make_corpus, prepare_config


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[str, list[str]]:
  """(root folder, audio files relative to it): four excerpts in wav/flac/ogg at several rates."""
  root = tmp_path_factory.mktemp("corpus")
  return str(root), make_corpus(str(root))


@pytest.fixture(scope="session")
def prepared(corpus, tmp_path_factory) -> tuple[str, dict]:
  """(output folder, manifest) of ``prepare`` over ``corpus`` (cache kept)."""
  out = tmp_path_factory.mktemp("prepared")
  manifest = prepare_local.prepare(prepare_config(corpus[0], out, keep_cache=True), progress=False)
  return str(out), manifest
