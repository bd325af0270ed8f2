"""Representation health at each evaluation (mert_jax/train/health.py): the effective rank and the
prior baseline against hand computations, and the numbers and warnings of a real run in
metrics.jsonl and on the console."""

import numpy as np
import pytest

from mert_jax.train import health
from mert_jax.train.loop import train
from tests.train.helpers import rows, tiny


def test_effective_rank_by_hand() -> None:
  rng = np.random.RandomState(0)
  # k orthogonal directions with equal energy: rank k (the centred rows span them evenly)
  basis = np.linalg.qr(rng.randn(64, 64))[0][:4]
  x = np.concatenate([basis * 3, -basis * 3])  # (8, 64), zero mean
  assert health.effective_rank(x) == pytest.approx(4.0, rel=1e-9)
  # singular values (3, 1): (3 + 1)^2 / (9 + 1) = 1.6
  y = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) / np.sqrt(2)
  assert health.effective_rank(y) == pytest.approx(1.6, rel=1e-9)
  assert health.effective_rank(np.ones((5, 3))) == 0.0  # every clip the same: nothing


def test_prior_accuracy_by_hand() -> None:
  train_counts = np.array([[1.0, 5.0, 2.0], [4.0, 0.0, 3.0]])  # most frequent: 1, then 0
  eval_counts = np.array([[2.0, 1.0, 7.0], [5.0, 5.0, 0.0]])
  np.testing.assert_allclose(health.prior_accuracy(train_counts, eval_counts), [0.1, 0.5])


def test_health_numbers_and_warnings_in_a_run(data_dir, tmp_path, capsys) -> None:
  config = tiny(
    data_dir,
    **{
      "total_steps": 4,
      "log_every": 2,
      "eval_every": 2,
      "eval_batches": 1,
      "health_clips": 8,
      "health_min_rank": 1000.0,  # unreachable: the collapse warning must show
      "health_prior_patience": 1,
    },
  )
  train(config, str(tmp_path / "run"))
  evals = [r for r in rows(tmp_path / "run") if "eval_loss" in r]
  assert [r["step"] for r in evals] == [2, 4]
  for r in evals:
    ranks = [r[f"eval_rank_l{i}"] for i in range(3)]  # the CNN projection + 2 layers
    assert all(0 < x <= 8 for x in ranks)
    assert len(r["eval_prior_accuracy"]) == 8 and all(0 <= p <= 1 for p in r["eval_prior_accuracy"])
    want = np.mean(r["eval_accuracy"]) - np.mean(r["eval_prior_accuracy"])
    assert r["eval_accuracy_over_prior"] == pytest.approx(want, abs=1e-9)
    assert "eval_code_counts" not in r
  out = capsys.readouterr().out
  assert out.count("warning: feature collapse: effective rank") == 2
  eval_lines = [line for line in out.splitlines() if line.startswith("eval ")]
  assert len(eval_lines) == 2 and all(" prior 0." in x and " rank " in x for x in eval_lines)


def test_no_health_numbers_when_turned_off(data_dir, tmp_path) -> None:
  config = tiny(
    data_dir, **{"total_steps": 2, "eval_every": 2, "eval_batches": 1, "health_clips": 0}
  )
  train(config, str(tmp_path / "run"))
  (row,) = [r for r in rows(tmp_path / "run") if "eval_loss" in r]
  assert "eval_rank_l0" not in row and "eval_prior_accuracy" not in row
