"""The probe tasks' metrics, from the libraries MIR researchers trust: accuracy (scikit-learn) and
the MIREX weighted key score (mir_eval: 1 same key, 0.5 a fifth apart, 0.3 relative, 0.2
parallel, else 0). Each maps (true, predicted) class ids to a score in [0, 1]."""

from __future__ import annotations

from typing import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]  # (true classes, predicted classes) -> score

# The 24 key classes: 0-11 major on C, C#, ..., B; 12-23 minor on the same tonics.
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
KEYS = tuple(f"{t} major" for t in TONICS) + tuple(f"{t} minor" for t in TONICS)


def accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
  """Fraction of examples whose class is predicted (sklearn.metrics.accuracy_score)."""
  from sklearn.metrics import accuracy_score  # pylint: disable=g-import-not-at-top

  return float(accuracy_score(np.asarray(true), np.asarray(predicted)))


def key_weighted_score(true: np.ndarray, predicted: np.ndarray) -> float:
  """Mean MIREX weighted key score over examples (mir_eval.key.weighted_score); class ids index
  KEYS."""
  import mir_eval  # pylint: disable=g-import-not-at-top

  scores = [
    mir_eval.key.weighted_score(KEYS[int(t)], KEYS[int(p)]) for t, p in zip(true, predicted)
  ]
  return float(np.mean(scores)) if scores else float("nan")
