"""mert_jax/probe/beat_set.py and the beat metric: seeded grooves whose beats are known by
construction, labelled on the model's 75 Hz frame grid, scored with mir_eval."""

from __future__ import annotations

import mir_eval
import numpy as np
import pytest

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from mert_jax.probe import beat_set, metrics

TINY = beat_set.PRESETS["tiny"]
FRAME_RATE = SAMPLE_RATE / HOP
OFFSET = 200 / SAMPLE_RATE  # frame 0's centre: half the 400-sample receptive field


@pytest.fixture(scope="module")
def beats(tmp_path_factory) -> beat_set.BeatSet:
  return beat_set.build(TINY, str(tmp_path_factory.mktemp("beats")))


def _flux(audio: np.ndarray) -> np.ndarray:
  """Spectral flux per hop (numpy only): an onset detector independent of the set's code."""
  x = audio.astype(np.float32) / 32768
  win = np.hanning(1024)
  frames = np.stack(
    [x[i : i + 1024] * win for i in range(0, len(x) - 1024, HOP)]
  )  # frame i centred at (i * HOP + 512) / SAMPLE_RATE
  mag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
  return np.concatenate([[0.0], np.maximum(np.diff(mag, axis=0), 0).sum(axis=1)])


def test_the_labelled_beats_are_where_the_onsets_are(beats):
  """Spectral flux around the labelled beats is well above its mean: the beats are heard."""
  ratios = []
  for audio, times in zip(beats.audio, beats.beats):
    flux = _flux(audio)
    times = times[~np.isnan(times)]
    at = np.round((times - 512 / SAMPLE_RATE) * FRAME_RATE).astype(int)
    at = at[(at >= 1) & (at < len(flux) - 1)]
    peak = np.max(np.stack([flux[at - 1], flux[at], flux[at + 1]]), axis=0)
    ratios.append(peak.mean() / flux.mean())
  assert np.median(ratios) > 1.5


def test_labels_layout_and_splits(beats):
  n = int(TINY.clip_seconds * SAMPLE_RATE)
  frames = (n - 400) // 320 + 1
  assert beats.audio.shape == (9, n) and beats.frames.shape == (9, frames)
  assert set(beats.split) == {0, 1, 2} and beats.labels("beat") == (beats.frames, 2)
  for labels, times in zip(beats.frames, beats.beats):
    times = times[~np.isnan(times)]
    assert np.all(np.diff(times) >= 60 / TINY.bpm_range[1] - 1e-4)  # tempo within the range
    decoded = metrics.beat_times(labels, FRAME_RATE, OFFSET)
    # Every beat is one run of 3 frames (1 at a clip's edge), decoded within half a frame.
    assert len(decoded) == len(times)
    assert np.max(np.abs(decoded - times)) <= 1.5 / FRAME_RATE
  with pytest.raises(ValueError, match="the beat set has the task beat"):
    beats.labels("key")


def test_deterministic_and_cached(beats, tmp_path, monkeypatch):
  again = beat_set.build(TINY, str(tmp_path))
  assert again.info["data_sha256"] == beats.info["data_sha256"]
  np.testing.assert_array_equal(again.frames, beats.frames)
  monkeypatch.setattr(beat_set, "groove", lambda *a: pytest.fail("rendered again"))
  assert beat_set.build(TINY, str(tmp_path)).info == again.info


def test_beat_f_measure_is_mir_evals_on_the_decoded_beats():
  times = np.arange(0.5, 7.5, 0.5)
  true = beat_set.frame_labels(times, 600, FRAME_RATE, OFFSET)[None]
  every_other = beat_set.frame_labels(times[::2], 600, FRAME_RATE, OFFSET)[None]
  late = beat_set.frame_labels(times + 0.1, 600, FRAME_RATE, OFFSET)[None]  # 100 ms > 70 ms
  assert metrics.beat_f_measure(true, true) == 1.0
  expected = mir_eval.beat.f_measure(
    metrics.beat_times(true[0], FRAME_RATE, OFFSET), metrics.beat_times(every_other[0], 75, OFFSET)
  )
  assert metrics.beat_f_measure(true, every_other) == pytest.approx(expected)
  assert expected == pytest.approx(2 * 0.5 / 1.5)  # precision 1, recall 1/2
  assert metrics.beat_f_measure(true, late) == 0.0
  assert metrics.beat_f_measure(true, np.zeros_like(true)) == 0.0  # no beats predicted
  # The mean over clips.
  both = metrics.beat_f_measure(np.concatenate([true, true]), np.concatenate([true, late]))
  assert both == pytest.approx(0.5)
