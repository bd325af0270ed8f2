"""mert_jax/probe: the MARBLE v1 head and its training on synthetic features whose answer is
known: the label lives in one layer only."""

from __future__ import annotations

import dataclasses

import mir_eval
import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from mert_jax.probe import fit, head, metrics

FAST = fit.ProbeConfig(learning_rates=(1e-2, 1e-3), max_epochs=30, early_stop_patience=5)


def _splits(n=(192, 64, 64), layers=4, dim=16, classes=4, informative=2, seed=0):
  """Class means in layer ``informative`` only (noise elsewhere): train/valid/test Splits."""
  rng = np.random.default_rng(seed)
  means = 2.0 * rng.standard_normal((classes, dim))
  out = []
  for size in n:
    y = rng.integers(0, classes, size)
    x = rng.standard_normal((size, layers + 1, dim)).astype(np.float32)
    x[:, informative] += means[y]
    out.append(fit.Split(x, y.astype(np.int32)))
  return out


def test_the_informative_layer_wins_and_the_weighted_sum_finds_it():
  train, valid, test = _splits()
  scores = {
    layer: fit.probe_layer(
      train, valid, test, layer=layer, classes=4, metric=metrics.accuracy, cfg=FAST
    )
    for layer in (1, 2, head.WEIGHTED)
  }
  assert scores[2]["test"] > 0.85 and scores[1]["test"] < 0.5  # chance is 0.25
  assert scores[head.WEIGHTED]["test"] > 0.7
  weights = head.layer_weights(scores[head.WEIGHTED]["params"])
  assert int(np.argmax(weights)) == 1  # layers 1..L: index 1 is layer 2
  assert set(scores[2]["valid_by_lr"]) == {"0.01", "0.001"}


def test_same_seed_same_result_and_another_seed_differs():
  train, valid, test = _splits(informative=1)
  run = lambda cfg: fit.fit_head(  # noqa: E731
    train, valid, test, layer=1, lr=1e-3, classes=4, metric=metrics.accuracy, cfg=cfg
  )
  a, b = run(FAST), run(FAST)
  assert (a["valid"], a["test"], a["best_epoch"]) == (b["valid"], b["test"], b["best_epoch"])
  np.testing.assert_array_equal(np.asarray(a["params"]["w1"]), np.asarray(b["params"]["w1"]))
  c = run(dataclasses.replace(FAST, seed=1))
  assert not np.array_equal(np.asarray(a["params"]["w1"]), np.asarray(c["params"]["w1"]))


def test_plateau_halves_the_rate_and_early_stopping_ends_the_run():
  """Labels independent of the features: the validation metric stalls, so the rate is halved
  every plateau_patience epochs until early stopping."""
  train, valid, test = _splits()
  rng = np.random.default_rng(9)
  shuffled = [fit.Split(s.features, rng.permutation(s.labels)) for s in (train, valid, test)]
  cfg = dataclasses.replace(FAST, plateau_patience=2, early_stop_patience=6, max_epochs=50)
  r = fit.fit_head(*shuffled, layer=3, lr=1e-2, classes=4, metric=metrics.accuracy, cfg=cfg)
  stalled = r["epochs"] - r["best_epoch"]
  assert stalled == cfg.early_stop_patience and r["epochs"] < cfg.max_epochs
  halvings = (stalled - 1) // cfg.plateau_patience  # the stopping epoch ends before a cut
  assert r["final_lr"] == pytest.approx(1e-2 * 0.5**halvings, rel=1e-6) and halvings == 2


def test_metrics_agree_with_scikit_learn_and_mir_eval():
  rng = np.random.default_rng(3)
  true, pred = rng.integers(0, 24, 200), rng.integers(0, 24, 200)
  assert metrics.accuracy(true, pred) == accuracy_score(true, pred)
  by_hand = np.mean(
    [mir_eval.key.weighted_score(metrics.KEYS[t], metrics.KEYS[p]) for t, p in zip(true, pred)]
  )
  assert metrics.key_weighted_score(true, pred) == pytest.approx(by_hand)
  # The MIREX weights themselves, on known pairs: same, fifth, relative minor, parallel, other.
  c, g, a_min, c_min, d = 0, 7, 12 + 9, 12, 2
  got = [metrics.key_weighted_score([c], [p]) for p in (c, g, a_min, c_min, d)]
  assert got == [1.0, 0.5, 0.3, 0.2, 0.0]


def test_chance_is_the_majority_training_class_under_the_task_metric():
  from mert_jax.probe import run

  labels = np.array([0, 0, 1, 7, 0, 12])
  split = np.array([0, 0, 0, 2, 2, 2])  # train: 0, 0, 1 -> always answer 0 (C major)
  assert run.chance(labels, split, metrics.accuracy) == pytest.approx(1 / 3)
  # Test keys G major (answering C, a fourth above G: 0 in MIREX, which credits only the fifth
  # above), C major (1), C minor (parallel: 0.2).
  assert run.chance(labels, split, metrics.key_weighted_score) == pytest.approx((0 + 1 + 0.2) / 3)


ONE_RATE = dataclasses.replace(FAST, learning_rates=(1e-2,))


def test_a_frame_level_head_finds_the_beats_in_the_informative_layer():
  """Frame-level features (N, L + 1, T, D) with the beat frames marked in layer 2 only: the head
  classifies each frame, and the beat F-measure on layer 2 beats layer 1's, which is noise."""
  from mert_jax.probe import beat_set

  rng = np.random.default_rng(4)
  direction = rng.standard_normal(8).astype(np.float32)
  out = []
  for clips in (24, 6, 6):
    labels = np.stack(
      [
        beat_set.frame_labels(np.arange(rng.uniform(0, 0.6), 4.0, 0.6), 300, 75.0, 0.0)
        for _ in range(clips)
      ]
    )
    x = rng.standard_normal((clips, 4, 300, 8)).astype(np.float16)  # stored as float16
    x[:, 2] += (3.0 * labels[..., None] * direction).astype(np.float16)
    out.append(fit.Split(x, labels))
  got = {
    layer: fit.probe_layer(
      *out, layer=layer, classes=2, metric=metrics.beat_f_measure, cfg=ONE_RATE
    )["test"]
    for layer in (1, 2)
  }
  assert got[2] > 0.9 and got[1] < 0.3
