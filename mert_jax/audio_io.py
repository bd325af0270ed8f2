"""Decoding audio files to the model's input: mono float32 at the model's sample rate.

soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3) decodes; librosa's audioread fallback
covers what libsndfile cannot when an ffmpeg/gstreamer backend is installed. Stereo is averaged
to mono (as MERT's loader does) and soxr resamples (HQ).
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr


def load_audio(path: str | os.PathLike, sample_rate: int = 24000) -> np.ndarray:
  """(samples,) float32 mono audio at ``sample_rate``; raises ValueError naming the file on failure."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such audio file")
  try:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError) as sf_err:
    try:
      import librosa  # pylint: disable=g-import-not-at-top
      y, sr = librosa.load(path, sr=None, mono=False)
    except Exception as e:  # audioread raises several unrelated types
      raise ValueError(f"{path}: cannot decode audio ({sf_err}; fallback: {e}). Convert it to "
                       f"wav/flac/ogg first.") from e
    x = np.atleast_2d(np.asarray(y, np.float32)).T            # (samples, channels)
  if x.size == 0:
    raise ValueError(f"{path}: the file holds no audio samples")
  mono = x.mean(axis=1)
  if sr != sample_rate:
    mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
  mono = np.ascontiguousarray(mono, dtype=np.float32)
  if not np.all(np.isfinite(mono)):
    raise ValueError(f"{path}: decoded audio contains NaN/inf samples")
  return mono
