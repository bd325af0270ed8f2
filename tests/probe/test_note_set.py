"""mert_jax/probe/note_set.py and render.py: General MIDI notes rendered from the SoundFont
pretty_midi ships, with labels by construction and instrument-disjoint splits."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest

from mert_jax.probe import note_set, render

TINY = dataclasses.replace(note_set.PRESETS["tiny"], notes_per_program=2)


def test_splits_are_instrument_disjoint_and_cover_every_family():
  splits = note_set.program_splits(note_set.NoteSetConfig())
  assert len(splits) == sum(len(p) for p in note_set.FAMILIES.values()) == 86
  for family in note_set.FAMILIES:
    seen = {s for f, s in splits.values() if f == family}
    assert seen == set(note_set.SPLITS), family  # a program is in exactly one split (a dict)
  with pytest.raises(ValueError, match="'vocal': 2 programs; the 3 splits need 3"):
    note_set.program_splits(note_set.NoteSetConfig(families=("vocal",), programs_per_family=2))


def _f0(x: np.ndarray, sr: int = 24000, fmin: float = 100.0, fmax: float = 1000.0) -> float:
  """YIN's first dip (de Cheveigne and Kawahara 2002) of one 2048-sample frame, in numpy: librosa's
  yin runs numba gufuncs, which crashed pytest-xdist workers here (a segfault in localmin)."""
  frame = x[:2048].astype(np.float64)
  lags = np.arange(int(sr / fmax), int(sr / fmin) + 1)
  w = len(frame) - lags[-1]
  diff = np.array([np.sum((frame[:w] - frame[lag : lag + w]) ** 2) for lag in range(lags[-1] + 1)])
  cmnd = diff[1:] * np.arange(1, len(diff)) / np.maximum(np.cumsum(diff[1:]), 1e-12)
  cmnd = np.concatenate([[1.0], cmnd])
  below = [lag for lag in lags if cmnd[lag] < 0.15 and cmnd[lag] <= cmnd[lag + 1]]
  return sr / (below[0] if below else lags[np.argmin(cmnd[lags])])


@pytest.mark.parametrize("program, pitch", [(73, 69), (0, 57), (19, 64)])
def test_a_rendered_note_has_its_pitch(program, pitch):
  """Flute A4, piano A3, church organ E4: the median f0 (YIN) of frames of the held part is the
  MIDI pitch's frequency within a quarter tone."""
  x = render.single_note(program, pitch, 100, 1.0, 0.25)
  assert x.dtype == np.float32 and len(x) == int(1.25 * 24000)
  f0 = np.median([_f0(x[start:]) for start in range(2400, 19200, 2400)])
  assert abs(12 * np.log2(f0 / librosa.midi_to_hz(pitch))) < 0.5, f0


def test_build_is_deterministic_cached_and_labelled(tmp_path, monkeypatch):
  a = note_set.build(TINY, str(tmp_path / "a"))
  b = note_set.build(TINY, str(tmp_path / "b"))
  assert a.info["data_sha256"] == b.info["data_sha256"] and a.info["num_notes"] == 18
  assert a.audio.shape == (18, int(0.75 * 24000)) and a.audio.dtype == np.int16
  assert a.info["per_split"] == {"train": 6, "valid": 6, "test": 6}
  pitch, classes = a.labels("pitch")
  assert classes == 13 and pitch.min() >= 0 and pitch.max() < 13
  family, n_families = a.labels("instrument")
  assert n_families == 3 and set(family) == {0, 1, 2}
  for p in set(a.program):  # one split per program
    assert len(set(a.split[a.program == p])) == 1
  monkeypatch.setattr(render, "single_note", lambda *a, **k: pytest.fail("rendered again"))
  c = note_set.build(TINY, str(tmp_path / "a"))  # from the cache
  assert c.info == a.info and np.array_equal(c.audio, a.audio)
  with pytest.raises(ValueError, match="tasks pitch and instrument, not 'key'"):
    a.labels("key")


def test_near_silent_notes_are_dropped_and_counted(tmp_path):
  loud_only = note_set.NoteSetConfig(**{**TINY.__dict__, "min_rms_db": -25.0})
  s = note_set.build(loud_only, str(tmp_path))
  assert (
    0 < s.info["num_dropped_quiet"] < 18 and s.info["num_notes"] == 18 - s.info["num_dropped_quiet"]
  )
  never = note_set.NoteSetConfig(**{**TINY.__dict__, "min_rms_db": 10.0})
  with pytest.raises(ValueError, match="every one of the 18 notes is below 10.0 dB RMS"):
    note_set.build(never, str(tmp_path))
