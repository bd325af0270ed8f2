"""Shared CLI fixtures: a saved tiny checkpoint (a trained workdir: tests/conftest.py)."""

import pytest

from mert_jax.config import model_config
from mert_jax.model.mert import create_model
from mert_jax.train import checkpoints


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
  """A tiny model checkpoint (checkpoints.save_model), seed 11."""
  path = tmp_path_factory.mktemp("tiny_ckpt") / "ckpt"
  checkpoints.save_model(path, create_model(model_config("tiny"), seed=11))
  return str(path)
