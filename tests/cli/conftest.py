"""Shared CLI fixtures: a saved tiny checkpoint (a trained workdir: tests/conftest.py)."""

import pytest

from mert_jax.checkpointing import model_checkpoint
from mert_jax.config import model_config
from mert_jax.model.mert import create_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
  """A tiny model checkpoint (model_checkpoint.save_model), seed 11."""
  path = tmp_path_factory.mktemp("tiny_ckpt") / "ckpt"
  model_checkpoint.save_model(path, create_model(model_config("tiny"), seed=11))
  return str(path)
