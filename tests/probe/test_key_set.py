"""mert_jax/probe/key_set.py: Bach chorales with their notated keys, transposed and rendered."""

from __future__ import annotations

import numpy as np
import pytest

from mert_jax.probe import key_set, metrics

TINY = key_set.PRESETS["tiny"]
# Krumhansl-Kessler key profiles (C major, C minor), for an audio key estimate independent of ours.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> key_set.KeySet:
  return key_set.build(TINY, str(tmp_path_factory.mktemp("keys")))


def _chroma(audio: np.ndarray, n_fft: int = 8192) -> np.ndarray:
  """(12,) mean pitch-class energy from a numpy STFT (65 Hz - 2 kHz folded onto pitch classes).
  numpy only: librosa's chroma_cqt runs numba code that crashed a pytest-xdist worker in CI."""
  x = audio.astype(np.float32) / 32768
  win = np.hanning(n_fft)
  frames = np.stack([x[i : i + n_fft] * win for i in range(0, len(x) - n_fft, n_fft // 4)])
  mag = np.abs(np.fft.rfft(frames, axis=1)).mean(axis=0)
  freqs = np.fft.rfftfreq(n_fft, 1 / 24000)
  band = (freqs > 65) & (freqs < 2000)
  classes = np.round(12 * np.log2(freqs[band] / 440.0) + 69).astype(int) % 12
  return np.bincount(classes, weights=mag[band], minlength=12)


def _estimate(audio: np.ndarray) -> int:
  chroma = _chroma(audio)
  scores = [np.corrcoef(chroma, np.roll(p, t))[0, 1] for p in (MAJOR, MINOR) for t in range(12)]
  return int(np.argmax(scores))


def test_the_labels_are_the_keys_heard(keys):
  """A chroma + Krumhansl key estimate of the rendered audio agrees with the labels far above
  chance (MIREX weighted score; random keys average about 0.08)."""
  predicted = np.array([_estimate(a) for a in keys.audio])
  assert metrics.key_weighted_score(keys.key, predicted) >= 0.4


def test_transpositions_move_the_label_and_splits_hold_whole_chorales(keys):
  assert keys.audio.shape == (12, 5 * 24000) and keys.info["num_clips"] == 12
  for c in set(keys.chorale):
    same = keys.chorale == c
    assert len(set(keys.split[same])) == 1  # a chorale is in one split
    assert len(set(keys.key[same] // 12)) == 1  # transposing keeps the mode
  assert set(keys.split) == {0, 1, 2}
  labels, classes = keys.labels("key")
  assert classes == 24 and labels is keys.key


def test_deterministic_and_cached(keys, tmp_path, monkeypatch):
  again = key_set.build(TINY, str(tmp_path))
  assert again.info["data_sha256"] == keys.info["data_sha256"]
  monkeypatch.setattr(key_set, "_render", lambda *a: pytest.fail("rendered again"))
  assert key_set.build(TINY, str(tmp_path)).info == again.info


def test_a_chorale_music21_cannot_render_is_left_out_and_named(tmp_path, monkeypatch):
  """music21 refuses some corpus scores (badly formed repeats): the set is built without them
  and its info names them with the reason."""
  real = key_set._render
  calls = []

  def render(score, programs, cfg):
    calls.append(1)
    if len(calls) == 1:
      raise ValueError("cannot expand Stream: badly formed repeats")
    return real(score, programs, cfg)

  monkeypatch.setattr(key_set, "_render", render)
  got = key_set.build(TINY, str(tmp_path))
  assert got.info["num_clips"] == 12 - TINY.transpositions
  ((name, why),) = got.info["skipped_unrenderable"].items()
  assert why == "ValueError: cannot expand Stream: badly formed repeats"
