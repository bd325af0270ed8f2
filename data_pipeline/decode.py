"""Decoding one input file for dataset preparation, with every way it can be bad named.

``decode_file`` returns 24 kHz mono int16 PCM or raises ``BadAudioError`` with a reason a user can
act on. It is stricter than ``mert_jax.audio_io.load_audio`` (which serves feature extraction):
truncated files, silence and non-finite samples are rejected rather than used.
"""

from __future__ import annotations

import os
import re

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.records import to_int16

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


class BadAudioError(ValueError):
  """An input file that cannot be used; the message is the reason written to skipped.jsonl."""


def decode_file(path: str, sample_rate: int, min_samples: int) -> np.ndarray:
  """(samples,) int16 mono PCM at ``sample_rate``; at least ``min_samples`` long."""
  if not os.path.isfile(path):
    raise BadAudioError("not a regular file (dangling link or directory)")
  if not os.access(path, os.R_OK):
    raise BadAudioError("permission denied: the file is not readable")
  if os.path.getsize(path) == 0:
    raise BadAudioError("empty file (0 bytes)")
  try:
    with sf.SoundFile(path) as f:
      declared, sr, channels = f.frames, f.samplerate, f.channels
      extra = f.extra_info
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
    raise BadAudioError(f"truncated: the header declares {short.group(1)} data bytes but the file holds "
                        f"{short.group(2)}")
  if 0 < declared and x.shape[0] < declared:
    raise BadAudioError(f"truncated: the header declares {declared} frames but only {x.shape[0]} decode")
  if not np.all(np.isfinite(x)):
    raise BadAudioError(f"{int((~np.isfinite(x)).sum())} non-finite (NaN/inf) samples")
  mono = x.mean(axis=1, dtype=np.float32) if channels > 1 else x[:, 0]
  del x
  if sr != sample_rate:
    mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
  if mono.shape[0] < min_samples:
    raise BadAudioError(f"too short: {mono.shape[0] / sample_rate:.2f} s < the minimum "
                        f"{min_samples / sample_rate:.2f} s (--min-seconds)")
  pcm = to_int16(mono)
  if not np.any(pcm):
    raise BadAudioError("silent: every sample is zero")
  return pcm
