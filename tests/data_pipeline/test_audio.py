"""data_pipeline/audio.py: the one decoder, lenient (load_audio) and strict (decode_file)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data_pipeline.audio import BadAudioError, decode_file, load_audio
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import from_int16, to_int16


def test_both_modes_decode_real_music_to_the_same_samples(music_file):
  lenient = load_audio(music_file)
  strict = decode_file(music_file, SAMPLE_RATE, 1)
  assert lenient.dtype == np.float32 and strict.dtype == np.int16
  assert lenient.shape == strict.shape and len(strict) > 5 * SAMPLE_RATE
  np.testing.assert_array_equal(strict, to_int16(lenient))
  # int16 holds [-1, 1 - 2^-15]: decoded music beyond full scale (codecs overshoot) is clipped.
  full_scale = np.clip(lenient, -1.0, 1.0 - 1 / 32768)
  np.testing.assert_allclose(from_int16(strict), full_scale, atol=1 / 32768)


def test_strict_mode_rejects_a_truncated_wav_the_lenient_mode_reads(music, tmp_path):
  path = tmp_path / "truncated.wav"
  music = np.clip(music, -1.0, 1.0 - 1 / 32768)  # what 16-bit PCM can hold
  sf.write(path, music, SAMPLE_RATE, subtype="PCM_16")
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)
  lenient = load_audio(path)
  assert len(music) // 2 - 100 < len(lenient) < len(music) // 2
  np.testing.assert_allclose(lenient, music[: len(lenient)], atol=1e-4)
  with pytest.raises(BadAudioError, match="truncated"):
    decode_file(str(path), SAMPLE_RATE, 1)


def test_resampling_and_downmix(music, tmp_path):
  path = tmp_path / "stereo48k.flac"
  import soxr

  x48 = soxr.resample(music, SAMPLE_RATE, 48000)
  sf.write(path, np.stack([x48, 0.5 * x48], 1), 48000)
  y = load_audio(path)
  assert abs(len(y) - len(music)) <= 1
  # Exactly the channel mean of what is on disk, resampled by soxr HQ ...
  stereo, sr = sf.read(path, dtype="float32", always_2d=True)
  want = soxr.resample(stereo.mean(axis=1, dtype=np.float32), sr, SAMPLE_RATE, quality="HQ")
  np.testing.assert_allclose(y, want, atol=1e-6)
  # ... which is the original mix, 0.75 x the music, up to resampling and 16-bit error.
  n = min(len(y), len(music)) - 2000
  a, b = y[1000 : 1000 + n], music[1000 : 1000 + n]
  assert np.corrcoef(a, b)[0, 1] > 0.999 and abs(np.std(a) / np.std(b) - 0.75) < 0.01


def test_strict_mode_reasons(tmp_path):
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  with pytest.raises(BadAudioError, match=r"empty file \(0 bytes\)"):
    decode_file(str(empty), SAMPLE_RATE, 1)
  silent = tmp_path / "silent.wav"
  sf.write(silent, np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, subtype="PCM_16")
  with pytest.raises(BadAudioError, match="silent"):
    decode_file(str(silent), SAMPLE_RATE, 1)
  with pytest.raises(BadAudioError, match=r"too short: 1.00 s < the minimum 2.00 s"):
    decode_file(str(silent), SAMPLE_RATE, 2 * SAMPLE_RATE)


def test_lenient_mode_names_the_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such audio file"):
    load_audio(tmp_path / "missing.ogg")
