"""Example music for the demo and the tests: game soundtracks from Debian packages.

``apt-get install singularity-music`` (CC-BY-SA-3.0, 49 MB, no dependencies; ``.ci/run`` does it)
gives 1.1 h of recorded music; wesnoth music is found too (warzone2100-music never is: it is
kept for independent checks). When none is
installed, a music-like signal is synthesised instead (chords of harmonic tones with decaying
envelopes) and a warning says so, so everything still runs on machines without apt.
"""

from __future__ import annotations

import glob
import os
import shutil
import warnings

import numpy as np
import soundfile as sf

from data_pipeline.audio import load_audio
from data_pipeline.audio_format import SAMPLE_RATE

MUSIC_GLOBS = (
  "/usr/share/games/singularity/music/*.ogg",
  "/usr/share/games/wesnoth/*/data/core/music/*.ogg",
)
# warzone2100-music is never used: it is held back for independent checks.


def real_music_files() -> list[str]:
  files = []
  for pattern in MUSIC_GLOBS:
    files.extend(sorted(glob.glob(pattern)))
  return files


def copy_real_music(folder: str, minutes: float) -> float:
  """Copy installed real music files into ``folder`` until ``minutes`` of audio (whole files, in
  order); returns the seconds copied. Exits with the apt line when none is installed
  (benchmarks measure real music only)."""
  total = 0.0
  for path in real_music_files():
    if total >= minutes * 60:
      break
    shutil.copy(path, folder)
    total += sf.info(path).duration
  if total == 0:
    raise SystemExit("no Debian music package installed (apt-get install singularity-music)")
  return total


def synth_music(seconds: float, seed: int = 0) -> np.ndarray:
  """A deterministic music-like fallback: chords of harmonic tones with decaying envelopes."""
  rng = np.random.RandomState(seed)
  n = int(seconds * SAMPLE_RATE)
  t = np.arange(n) / SAMPLE_RATE
  out = np.zeros(n, np.float64)
  beat = 0.25
  for start in np.arange(0, seconds, beat):
    midi = rng.choice([45, 48, 52, 55, 57, 60, 64, 67, 69, 72], size=3, replace=False)
    seg = (t >= start) & (t < start + 4 * beat)
    env = np.exp(-(t[seg] - start) * 3.0)
    for m in midi:
      f = 440.0 * 2 ** ((m - 69) / 12)
      for h in range(1, 5):
        out[seg] += 0.05 / h * env * np.sin(2 * np.pi * f * h * t[seg])
  return out.astype(np.float32)


def music_clip(seconds: float = 8.0, offset_seconds: float = 20.0, index: int = 0) -> np.ndarray:
  files = real_music_files()
  if not files:
    warnings.warn(
      "no Debian music package installed (apt-get install singularity-music); "
      "tests use synthesised music instead"
    )
    return synth_music(seconds, seed=index)
  x = load_audio(files[index % len(files)], SAMPLE_RATE)
  start = min(int(offset_seconds * SAMPLE_RATE), max(0, len(x) - int(seconds * SAMPLE_RATE)))
  return np.ascontiguousarray(x[start : start + int(seconds * SAMPLE_RATE)])


def music_file(tmp_dir: str | os.PathLike) -> str:
  """A real music file in its original format, or a synthesised wav written into ``tmp_dir``."""
  files = real_music_files()
  if files:
    return files[0]
  path = os.path.join(str(tmp_dir), "synth_music.wav")
  sf.write(path, synth_music(6.0), SAMPLE_RATE)
  return path
