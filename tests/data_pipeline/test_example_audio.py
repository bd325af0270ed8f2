"""data_pipeline/example_audio.py: real music when installed, deterministic synthesis otherwise."""

from __future__ import annotations

import warnings

import numpy as np
import soundfile as sf

from data_pipeline import example_audio
from data_pipeline.audio_format import SAMPLE_RATE


def test_synth_music_is_deterministic_and_in_range():
  a = example_audio.synth_music(2.0, seed=1)
  assert a.shape == (2 * SAMPLE_RATE,) and a.dtype == np.float32
  np.testing.assert_array_equal(a, example_audio.synth_music(2.0, seed=1))
  assert not np.array_equal(a, example_audio.synth_music(2.0, seed=2))
  assert 0.01 < np.abs(a).max() < 1.0


def test_music_clip_length(monkeypatch):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    clip = example_audio.music_clip(seconds=3.0, offset_seconds=5.0)
  assert clip.shape == (3 * SAMPLE_RATE,) and clip.dtype == np.float32
  monkeypatch.setattr(example_audio, "real_music_files", lambda: [])
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    synth = example_audio.music_clip(seconds=3.0, index=2)
  assert any("singularity-music" in str(w.message) for w in caught)
  np.testing.assert_array_equal(synth, example_audio.synth_music(3.0, seed=2))


def test_music_file_falls_back_to_a_synthesised_wav(monkeypatch, tmp_path):
  monkeypatch.setattr(example_audio, "real_music_files", lambda: [])
  path = example_audio.music_file(tmp_path)
  info = sf.info(path)
  assert info.samplerate == SAMPLE_RATE and info.duration == 6.0
