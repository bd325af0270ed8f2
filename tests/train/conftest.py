"""Fixtures of the trainer tests."""

import pytest


@pytest.fixture(scope="module")
def data_dir(default_data: str) -> str:
  """The prepared tiny corpus (8 codebooks x 64 codes; train and valid splits)."""
  return default_data
