"""MIDI -> audio for the probe sets: General MIDI rendered with a SoundFont, as 24 kHz mono float32.

The synthesiser is ``midirenderer`` (a compiled TinySoundFont with no dependencies); the SoundFont
is TimGM6mb, which ``pretty_midi`` ships, so the sets need nothing from the system. Why not the
others: ``tinysoundfont`` on PyPI depends on pyaudio, which does not build without the PortAudio
headers, and pyfluidsynth needs the system's libfluidsynth. Rendering is deterministic (the same
bytes for the same MIDI), which the tests check.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os

import numpy as np
import soundfile as sf
import soxr

from data_pipeline.audio_format import SAMPLE_RATE

SOUNDFONT = "TimGM6mb.sf2"  # in pretty_midi's package folder
# Seconds of silence after the last event, so that the release is rendered (the synthesiser stops
# at the MIDI file's last event).
TAIL_SECONDS = 0.5


@functools.cache
def soundfont_bytes() -> bytes:
  """The SoundFont's bytes (read once)."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  with open(os.path.join(os.path.dirname(pretty_midi.__file__), SOUNDFONT), "rb") as f:
    return f.read()


def soundfont_sha256() -> str:
  """Identifies the SoundFont in a set's cache key."""
  return hashlib.sha256(soundfont_bytes()).hexdigest()


def render_midi(
  midi: "pretty_midi.PrettyMIDI",  # noqa: F821
  tail_seconds: float = TAIL_SECONDS,
) -> np.ndarray:
  """(samples,) float32 mono at 24 kHz of ``midi``, ending ``tail_seconds`` after its last
  event."""
  import midirenderer  # pylint: disable=g-import-not-at-top
  import pretty_midi  # pylint: disable=g-import-not-at-top

  end = midi.get_end_time() + tail_seconds
  holder = midi.instruments[0] if midi.instruments else None
  if holder is not None:  # a no-op controller (sustain off) at the end extends the file
    holder.control_changes.append(pretty_midi.ControlChange(number=64, value=0, time=end))
  buf = io.BytesIO()
  midi.write(buf)
  wav = midirenderer.render_wave_from(soundfont_bytes(), buf.getvalue())
  audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
  mono = audio.mean(axis=1)
  return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)


def single_note(
  program: int, pitch: int, velocity: int, hold_seconds: float, release_seconds: float
) -> np.ndarray:
  """One General MIDI note (``program`` 0-127, ``pitch`` as MIDI) held ``hold_seconds``, then
  ``release_seconds`` of release: (samples,) float32 at 24 kHz, exactly that long."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  midi = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=program)
  inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=0.0, end=hold_seconds))
  midi.instruments.append(inst)
  audio = render_midi(midi, release_seconds)
  n = int(round((hold_seconds + release_seconds) * SAMPLE_RATE))
  return np.pad(audio[:n], (0, max(0, n - len(audio))))
