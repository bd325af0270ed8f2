"""Pretraining learns when its targets are learnable: the tiny model, trained by the real trainer
on a seeded synthetic corpus whose codes are the pitch of the tone sounding at each frame
(data_pipeline/learnability.py), must predict masked frames' codes from their context at least
``MULTIPLE`` times as often as the most frequent code occurs, within ``STEPS`` steps.

Measured on the 2-core CPU (2026-12-07): 0.373 masked validation accuracy at step 200 against a
most-frequent-code rate of 0.134 (2.8x); at step 100, 0.326. A change that breaks learning (the
targets misaligned, the gradient cut, the mask leaking nothing) ends near 1x."""

import numpy as np
import pytest

from configs import mert as mert_configs
from data_pipeline import learnability
from mert_jax.train.loop import train
from tests.train.helpers import rows

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)

STEPS = 200
MULTIPLE = 2.0


def test_the_tiny_model_learns_a_learnable_code(tmp_path) -> None:
  data = str(tmp_path / "corpus")
  manifest = learnability.write_corpus(data, train_seconds=600, valid_seconds=60, seed=0)
  rate = learnability.code_rates(data).max()
  assert 0.1 < rate < 0.2  # 8 pitches and rests, near-uniform
  c = mert_configs.get_config("tiny")
  c.data.dir = data
  c.model.num_codebooks, c.model.codebook_size = 1, manifest["codebook_size"]
  c.model.dropout = c.model.layerdrop = 0.0
  c.objective.mixup_prob = 0.0
  c.total_steps, c.eval_every, c.eval_batches = STEPS, STEPS, 4
  c.log_every, c.checkpoint_every, c.health_clips = 50, STEPS, 0
  train(c, str(tmp_path / "run"))
  (last,) = [r for r in rows(tmp_path / "run") if "eval_accuracy" in r]
  accuracy = float(np.mean(last["eval_accuracy"]))
  assert accuracy >= MULTIPLE * rate, (accuracy, rate)
