"""The one audio decoder: files -> mono float32 at the model's rate (``audio_format.SAMPLE_RATE``).

soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3) decodes; stereo is averaged to mono (as
MERT's loader does) and soxr resamples (HQ). Two modes:

* lenient (``load_audio``, feature extraction and examples): librosa's audioread fallback covers
  what libsndfile cannot when an ffmpeg/gstreamer backend is installed;
* strict (``decode_file``, dataset preparation): truncated files, silence, too-short files and
  non-finite samples are rejected with a ``BadAudioError`` whose message is the reason a user acts
  on.
"""

from __future__ import annotations

import os
import re

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.audio_format import AUDIO_EXTENSIONS, SAMPLE_RATE  # noqa: F401 (re-exported)
from data_pipeline.records import to_int16


class BadAudioError(ValueError):
  """An input file that cannot be used; the message is the reason (written to skipped.jsonl)."""


def _read_strict(path: str) -> tuple[np.ndarray, int]:
  """(samples, channels) float32 and the file's rate; rejects unreadable and truncated files."""
  if not os.path.isfile(path):
    raise BadAudioError("not a regular file (dangling link or directory)")
  if not os.access(path, os.R_OK):
    raise BadAudioError("permission denied: the file is not readable")
  if os.path.getsize(path) == 0:
    raise BadAudioError("empty file (0 bytes)")
  try:
    with sf.SoundFile(path) as f:
      declared, sr, extra = f.frames, f.samplerate, f.extra_info
      x = f.read(dtype="float32", always_2d=True)
  except PermissionError as e:
    raise BadAudioError(f"permission denied: {e}") from e
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise BadAudioError(f"cannot decode: {e}") from e
  if x.shape[0] == 0:
    raise BadAudioError("no audio samples")
  # libsndfile clamps a truncated WAV's frame count to what is on disk but reports the header's
  # data size in its log, e.g. "data : 96000 (should be 47978)".
  short = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", extra, re.M)
  if short:
    raise BadAudioError(
      f"truncated: the header declares {short.group(1)} data bytes but the file "
      f"holds {short.group(2)}"
    )
  if 0 < declared and x.shape[0] < declared:
    raise BadAudioError(
      f"truncated: the header declares {declared} frames but only {x.shape[0]} decode"
    )
  return x, sr


def _read_lenient(path: str) -> tuple[np.ndarray, int]:
  """(samples, channels) float32 and the file's rate, with librosa's fallback decoders."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such audio file")
  try:
    return sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError) as sf_err:
    try:
      import librosa  # pylint: disable=g-import-not-at-top

      y, sr = librosa.load(path, sr=None, mono=False)
    except Exception as e:  # audioread raises several unrelated types
      raise ValueError(
        f"{path}: cannot decode audio ({sf_err}; fallback: {e}). Convert it to wav/flac/ogg first."
      ) from e
    return np.atleast_2d(np.asarray(y, np.float32)).T, sr  # (samples, channels)


def read_audio(
  path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, *, strict: bool = False
) -> np.ndarray:
  """(samples,) float32 mono audio at ``sample_rate``.

  strict: raises ``BadAudioError`` (reason only; the caller names the file). Lenient: raises
  ValueError / FileNotFoundError naming the file."""
  path = os.fspath(path)
  x, sr = _read_strict(path) if strict else _read_lenient(path)
  if x.size == 0:
    raise ValueError(f"{path}: the file holds no audio samples")
  bad = ~np.isfinite(x)
  if bad.any():
    raise BadAudioError(
      f"{int(bad.sum())} non-finite (NaN/inf) samples"
      if strict
      else f"{path}: decoded audio contains NaN/inf samples"
    )
  mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
  del x
  if sr != sample_rate:
    mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
  return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Lenient decoding for feature extraction: (samples,) float32 mono at ``sample_rate``."""
  return read_audio(path, sample_rate, strict=False)


def decode_file(path: str, sample_rate: int, min_samples: int) -> np.ndarray:
  """Strict decoding for dataset preparation: (samples,) int16 mono PCM at ``sample_rate``, at
  least ``min_samples`` long and not silent."""
  mono = read_audio(path, sample_rate, strict=True)
  if mono.shape[0] < min_samples:
    raise BadAudioError(
      f"too short: {mono.shape[0] / sample_rate:.2f} s < the minimum "
      f"{min_samples / sample_rate:.2f} s (--min-seconds)"
    )
  pcm = to_int16(mono)
  if not np.any(pcm):
    raise BadAudioError("silent: every sample is zero")
  return pcm
