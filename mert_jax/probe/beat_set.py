"""The beat probe set: seeded General MIDI grooves with beat times known by construction, rendered
with the SoundFont (render.py), labelled per model frame (75 Hz).

Each clip is a 4/4 groove at a seeded tempo (``bpm_range``): a chord progression on a comping
instrument in one of a few rhythms (every beat, beats 1 and 3, off-beat eighths), a bass line, and
on ``drums_fraction`` of the clips a drum kit (kick, snare on 2 and 4, eighth-note hi-hats, with
seeded fills and drop-outs). The first beat falls at a seeded phase within the first beat period,
so a clip does not start on a beat. Timing is exact (no humanisation): the beats are the quarter
notes of the MIDI file.

Labels: frame t (the model's frame centred at (320 t + 200) / 24000 s) is a beat frame when it is
the frame nearest a beat, or either neighbour of it (targets widened by one frame on each side, as
beat trackers' training targets often are). The metric (metrics.beat_f_measure) decodes the centre
of each run of beat frames as a beat and scores it with mir_eval's F-measure at 70 ms against the
centres of the labelled runs, i.e. against the beats quantised to the frame grid (at most 6.7 ms
off, well inside the 70 ms window). Splits are by clip (each clip is its own groove).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import numpy as np

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.records import to_int16
from mert_jax.config import MERT_CONV_LAYERS
from mert_jax.model.conv_extractor import num_frames, receptive_field
from mert_jax.probe import render, set_cache
from mert_jax.probe.note_set import SPLITS, deal_splits

CACHE_FORMAT = 1  # bumped when the cached arrays change

COMPING_PROGRAMS = (0, 4, 16, 24, 25, 48, 61)  # pianos, organ, guitars, strings, brass section
BASS_PROGRAMS = (32, 33, 34, 38)  # acoustic, finger, pick and synth bass
# General MIDI percussion keys (channel 10).
KICK, SNARE, CLOSED_HAT, OPEN_HAT = 36, 38, 42, 46
# Chord progressions as scale degrees of the major scale, one chord per bar.
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 4))
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
RHYTHMS = ("beats", "half", "offbeats")  # comping: every beat, beats 1 and 3, off-beat eighths
WIDEN = 1  # frames labelled on each side of a beat's nearest frame


@dataclasses.dataclass(frozen=True)
class BeatSetConfig:
  """What the set holds (its cache key)."""

  num_clips: int = 150  # grooves, one clip each
  clip_seconds: float = 12.0  # audio per clip
  bpm_range: tuple[float, float] = (70.0, 150.0)  # tempo, drawn uniformly per clip
  drums_fraction: float = 0.7  # clips with a drum kit
  valid_fraction: float = 0.15
  test_fraction: float = 0.15
  seed: int = 0


# Set sizes (the probe's --set).
PRESETS = {
  "full": BeatSetConfig(),
  "small": BeatSetConfig(num_clips=60, clip_seconds=8.0),
  "tiny": BeatSetConfig(num_clips=9, clip_seconds=3.0),
}


@dataclasses.dataclass
class BeatSet:
  """Rendered grooves: audio (N, samples) int16 at 24 kHz, beat-frame labels (N, frames) int32
  (1 on beat frames), split per clip, the exact beat times (N, max beats) float32 padded with
  NaN."""

  audio: np.ndarray
  frames: np.ndarray
  split: np.ndarray
  beats: np.ndarray
  info: dict[str, Any]

  def labels(self, task: str) -> tuple[np.ndarray, int]:
    if task != "beat":
      raise ValueError(f"the beat set has the task beat, not {task!r}")
    return self.frames, 2


def frame_labels(beat_times: np.ndarray, num_frames: int, frame_rate: float, offset_s: float):
  """(num_frames,) int32: 1 on the frame nearest each beat (frame t centred at t / frame_rate +
  offset_s seconds) and on ``WIDEN`` frames either side, else 0."""
  out = np.zeros(num_frames, np.int32)
  for b in beat_times:
    t = int(round((b - offset_s) * frame_rate))
    out[max(0, t - WIDEN) : min(num_frames, t + WIDEN + 1)] = 1
  return out


def _scale_pitch(tonic: int, degree: int) -> int:
  """MIDI pitch of scale ``degree`` (0 = the tonic, 7 = an octave up) of the major key on
  ``tonic`` (0-11), from the C below middle C."""
  return 48 + tonic + MAJOR_SCALE[degree % 7] + 12 * (degree // 7)


def groove(rng: np.random.Generator, cfg: BeatSetConfig) -> tuple[Any, np.ndarray]:
  """One seeded groove: (a pretty_midi.PrettyMIDI, its beat times in seconds within the clip)."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  bpm = float(rng.uniform(*cfg.bpm_range))
  period = 60.0 / bpm
  first = float(rng.uniform(0.0, period))  # phase of the first beat
  beats = first + period * np.arange(int((cfg.clip_seconds - first) / period) + 1)
  beats = beats[beats < cfg.clip_seconds]
  tonic = int(rng.integers(0, 12))
  progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
  rhythm = RHYTHMS[int(rng.integers(len(RHYTHMS)))]
  midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
  comp = pretty_midi.Instrument(program=int(rng.choice(COMPING_PROGRAMS)))
  bass = pretty_midi.Instrument(program=int(rng.choice(BASS_PROGRAMS)))
  drums = pretty_midi.Instrument(program=0, is_drum=True)

  def note(inst, pitch, start, length, velocity):
    v = int(np.clip(velocity + rng.integers(-8, 9), 1, 127))
    inst.notes.append(pretty_midi.Note(v, int(pitch), float(start), float(start + length)))

  # A bar before the first beat, so the clip does not start in silence on a beat.
  for i in range(-1, len(beats)):
    t = first + i * period
    if t < 0:
      continue
    beat_in_bar = i % 4
    degree = progression[(i // 4) % len(progression)]
    chord = [_scale_pitch(tonic, degree + k) for k in (0, 2, 4)]  # a triad of the major key
    root = chord[0]
    if rhythm == "beats" or (rhythm == "half" and beat_in_bar in (0, 2)):
      for p in chord:
        note(comp, p, t, 0.8 * period, 80)
    elif rhythm == "offbeats":
      for p in chord:
        note(comp, p, t + period / 2, 0.4 * period, 75)
    if beat_in_bar in (0, 2) or rng.random() < 0.3:
      note(bass, root - 12, t, 0.9 * period, 95)
  if rng.random() < cfg.drums_fraction:
    for i in range(-1, len(beats)):
      t = first + i * period
      if t < 0:
        continue
      beat_in_bar = i % 4
      if beat_in_bar in (0, 2) or rng.random() < 0.15:
        note(drums, KICK, t, 0.1, 110)
      if beat_in_bar in (1, 3) and rng.random() > 0.05:
        note(drums, SNARE, t, 0.1, 100)
      for half in (0.0, 0.5):
        if rng.random() > 0.1:
          hat = OPEN_HAT if (half and rng.random() < 0.1) else CLOSED_HAT
          note(drums, hat, t + half * period, 0.05, 70)
  midi.instruments += [inst for inst in (comp, bass, drums) if inst.notes]
  return midi, beats.astype(np.float32)


def build(cfg: BeatSetConfig, cache_dir: str) -> BeatSet:
  """The set of ``cfg``, labelled on the MERT frame grid (75 Hz; every model size shares its
  strides): from ``cache_dir`` when rendered before, else rendered and cached."""
  path = set_cache.path(cache_dir, "beats", CACHE_FORMAT, dataclasses.asdict(cfg))
  if cached := set_cache.load(path):
    arrays, info = cached
    return BeatSet(**arrays, info=info)
  t0 = time.perf_counter()
  rng = np.random.default_rng(cfg.seed)
  n = int(round(cfg.clip_seconds * SAMPLE_RATE))
  frames = num_frames(n, MERT_CONV_LAYERS)
  frame_offset_s = receptive_field(MERT_CONV_LAYERS) / 2 / SAMPLE_RATE  # frame 0's centre
  split = deal_splits(cfg.num_clips, cfg.valid_fraction, cfg.test_fraction, rng)
  audio, labels, beats, drums = [], [], [], 0
  for _ in range(cfg.num_clips):
    midi, times = groove(rng, cfg)
    drums += any(inst.is_drum for inst in midi.instruments)
    x = render.render_midi(midi, 0.0)[:n]
    audio.append(to_int16(np.pad(x, (0, n - len(x)))))
    labels.append(frame_labels(times, frames, SAMPLE_RATE / HOP, frame_offset_s))
    beats.append(times)
  width = max(len(b) for b in beats)
  beat_arr = np.full((cfg.num_clips, width), np.nan, np.float32)
  for i, b in enumerate(beats):
    beat_arr[i, : len(b)] = b
  audio_arr = np.stack(audio)
  info = json.loads(
    json.dumps(
      {
        "config": dataclasses.asdict(cfg),
        "num_clips": cfg.num_clips,
        "clips_with_drums": drums,
        "frames_per_clip": frames,
        "beat_frame_fraction": float(np.mean(labels)),
        "hours": audio_arr.size / SAMPLE_RATE / 3600,
        "render_seconds": round(time.perf_counter() - t0, 2),
        "per_split": {s: int(np.sum(split == i)) for i, s in enumerate(SPLITS)},
        "data_sha256": hashlib.sha256(audio_arr.tobytes()).hexdigest(),
      }
    )
  )
  out = BeatSet(audio_arr, np.stack(labels), split, beat_arr, info)
  set_cache.save(path, {k: getattr(out, k) for k in ("audio", "frames", "split", "beats")}, info)
  return out
