"""Shared CLI fixtures: a saved tiny checkpoint and a 2-step training workdir."""

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


@pytest.fixture(scope="session")
def trained_workdir(default_data: str, tmp_path_factory) -> tuple[str, dict]:
  """A tiny training workdir with checkpoints at steps 1 and 2, and the final trained params."""
  from configs import mert as mert_configs
  from mert_jax.train.loop import train

  c = mert_configs.get_config("tiny")
  c.data.dir, c.total_steps, c.checkpoint_every = default_data, 2, 1
  c.log_every, c.eval_every, c.data.shuffle_window = 1, 0, 16
  wd = str(tmp_path_factory.mktemp("workdir") / "run")
  state = train(c, wd)["state"]
  return wd, state["params"]
