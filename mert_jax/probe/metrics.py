"""The probe tasks' metrics, from the libraries MIR researchers trust: accuracy (scikit-learn) and
the MIREX weighted key score (mir_eval: 1 same key, 0.5 a fifth apart, 0.3 relative, 0.2
parallel, else 0), and beat F-measure at 70 ms (mir_eval) for frame-level beat classes. Each maps
(true, predicted) class ids to a score in [0, 1]."""

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


# beat: mir_eval's F-measure window (seconds), MARBLE's and MIREX's 70 ms
BEAT_WINDOW_S = 0.07


def beat_times(frames: np.ndarray, frame_rate: float, offset_s: float) -> np.ndarray:
  """Beat times (s) of one clip's frame labels or predictions (T,): the centre of each run of
  consecutive beat frames (class 1); frame t is centred at t / frame_rate + offset_s."""
  on = np.concatenate([[0], (np.asarray(frames) == 1).astype(np.int8), [0]])
  edges = np.diff(on)
  starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
  return (starts + ends) / 2.0 / frame_rate + offset_s


def beat_f_measure(
  true: np.ndarray, predicted: np.ndarray, frame_rate: float = 75.0, offset_s: float = 0.0
) -> float:
  """Mean over clips of mir_eval.beat.f_measure (70 ms) between the beats decoded from the true
  and the predicted frame classes, both (clips, T). The frame grid's offset cancels; it only
  matters to a reader of the times."""
  import warnings  # pylint: disable=g-import-not-at-top

  import mir_eval  # pylint: disable=g-import-not-at-top

  with warnings.catch_warnings():  # mir_eval warns on a clip without beats (scored 0)
    warnings.simplefilter("ignore", UserWarning)
    scores = [
      mir_eval.beat.f_measure(
        beat_times(t, frame_rate, offset_s),
        beat_times(p, frame_rate, offset_s),
        f_measure_threshold=BEAT_WINDOW_S,
      )
      for t, p in zip(np.asarray(true), np.asarray(predicted))
    ]
  return float(np.mean(scores)) if scores else float("nan")
