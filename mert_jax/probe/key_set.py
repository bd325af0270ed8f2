"""The key probe set: Bach chorales from music21's corpus, whose scores carry their key (tonic and
mode), each transposed by a seeded interval (the label moves with it) and rendered with a seeded
General MIDI ensemble (render.py), one clip of ``clip_seconds`` from the start of each.

24 classes (metrics.KEYS: 12 tonics x major/minor); the metric is MIREX's weighted key score
(mir_eval). Splits are by chorale, so no chorale is heard in two splits. Deterministic given its
config; cached as one .npz per config. The key is the score's notated key, which describes the
whole chorale; a clip from its opening is assumed to be in it (chorales open in their key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from typing import Any

import numpy as np

from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import to_int16
from mert_jax.probe import metrics, render, set_cache
from mert_jax.probe.note_set import SPLITS, deal_splits

# General MIDI programs the voices are drawn from: piano, organs, strings, choir, brass, reeds,
# flutes (one per voice, seeded per chorale).
# Bumped when the cached arrays change (2: the chorale of each clip; 3: records.to_int16 scaling;
# 4: chorales music21 cannot render are skipped and listed).
CACHE_FORMAT = 4
ENSEMBLE_PROGRAMS = (0, 19, 20, 40, 41, 42, 48, 52, 56, 57, 60, 64, 68, 70, 71, 73)


@dataclasses.dataclass(frozen=True)
class KeySetConfig:
  """What the set holds (its cache key)."""

  num_chorales: int = 0  # chorales used, in corpus order (0: all of music21's Bach chorales)
  transpositions: int = 2  # seeded transpositions rendered per chorale (-5..+6 semitones)
  clip_seconds: float = 15.0  # audio per example, from the chorale's start
  quarter_note_bpm: float = 96.0  # tempo of the rendering
  valid_fraction: float = 0.15  # chorales held out for validation
  test_fraction: float = 0.15  # chorales held out for test
  seed: int = 0


# Set sizes (the probe's --set).
PRESETS = {
  "full": KeySetConfig(),
  "small": KeySetConfig(num_chorales=120, transpositions=1, clip_seconds=10.0),
  "tiny": KeySetConfig(num_chorales=6, transpositions=2, clip_seconds=5.0),
}


@dataclasses.dataclass
class KeySet:
  """Rendered clips: audio (N, samples) int16 at 24 kHz, key class per clip, split per clip."""

  audio: np.ndarray
  key: np.ndarray  # (N,) index into metrics.KEYS
  split: np.ndarray  # (N,) index into SPLITS
  chorale: np.ndarray  # (N,) which chorale (index in corpus order)
  info: dict[str, Any]

  def labels(self, task: str) -> tuple[np.ndarray, int]:
    if task != "key":
      raise ValueError(f"the key set has the task key, not {task!r}")
    return self.key, len(metrics.KEYS)


def key_class(tonic_pitch_class: int, mode: str) -> int:
  """Index into metrics.KEYS of a key."""
  return int(tonic_pitch_class) % 12 + (12 if mode == "minor" else 0)


def _chorales(cfg: KeySetConfig) -> list[Any]:
  from music21 import corpus  # pylint: disable=g-import-not-at-top

  paths = sorted(corpus.getComposer("bach"), key=str)
  return paths[: cfg.num_chorales] if cfg.num_chorales else paths


def _render(score: Any, programs: list[int], cfg: KeySetConfig) -> np.ndarray:
  """A music21 score -> the first clip_seconds at 24 kHz, its parts on ``programs``."""
  import pretty_midi  # pylint: disable=g-import-not-at-top
  from music21 import (
    key,  # pylint: disable=g-import-not-at-top
    tempo,  # pylint: disable=g-import-not-at-top
  )
  from music21 import midi as m21midi  # pylint: disable=g-import-not-at-top

  # Key signatures leave the MIDI (a transposed one may be spelt with 8 sharps, which MIDI cannot
  # hold); the pitches are what sounds.
  for signature in list(score.recurse().getElementsByClass(key.KeySignature)):
    signature.activeSite.remove(signature)
  score.insert(0, tempo.MetronomeMark(number=cfg.quarter_note_bpm))
  data = m21midi.translate.music21ObjectToMidiFile(score).writestr()
  midi = pretty_midi.PrettyMIDI(io.BytesIO(data))
  for inst, program in zip(midi.instruments, programs):
    inst.program, inst.is_drum = program, False
    inst.notes = [n for n in inst.notes if n.start < cfg.clip_seconds]
  audio = render.render_midi(midi, 0.0)
  n = int(round(cfg.clip_seconds * SAMPLE_RATE))
  return np.pad(audio[:n], (0, max(0, n - len(audio))))


def build(cfg: KeySetConfig, cache_dir: str) -> KeySet:
  """The set of ``cfg``: from ``cache_dir`` when rendered before, else rendered and cached."""
  from music21 import corpus, key  # pylint: disable=g-import-not-at-top

  path = set_cache.path(cache_dir, "keys", CACHE_FORMAT, dataclasses.asdict(cfg))
  if cached := set_cache.load(path):
    arrays, info = cached
    return KeySet(**arrays, info=info)
  t0 = time.perf_counter()
  rng = np.random.default_rng(cfg.seed)
  chorales = _chorales(cfg)
  split_of = deal_splits(len(chorales), cfg.valid_fraction, cfg.test_fraction, rng)
  audio, keys, splits, sources, skipped, unrenderable = [], [], [], [], [], {}
  for index, chorale in enumerate(chorales):
    score = corpus.parse(chorale)
    notated = next(iter(score.recurse().getElementsByClass(key.Key)), None)
    if notated is None:  # a key signature without a mode: no label
      skipped.append(str(chorale.name))
      continue
    for shift in rng.choice(np.arange(-5, 7), cfg.transpositions, replace=False):
      moved = score.transpose(int(shift))
      k = next(iter(moved.recurse().getElementsByClass(key.Key)))
      programs = [int(p) for p in rng.choice(ENSEMBLE_PROGRAMS, len(moved.parts))]
      try:
        x = _render(moved, programs, cfg)
      except Exception as e:  # noqa: BLE001 - music21 raises its own kinds (e.g. bad repeats)
        # A score music21 cannot turn into MIDI is left out, named in the set's info.
        unrenderable[str(chorale.name)] = f"{type(e).__name__}: {e}"
        break
      audio.append(to_int16(x))
      keys.append(key_class(k.tonic.pitchClass, k.mode))
      splits.append(split_of[index])
      sources.append(index)
  audio_arr = np.stack(audio)
  info = json.loads(
    json.dumps(
      {
        "config": dataclasses.asdict(cfg),
        "num_clips": len(audio),
        "num_chorales": len(chorales),
        "skipped_without_mode": skipped,
        "skipped_unrenderable": unrenderable,
        "hours": audio_arr.size / SAMPLE_RATE / 3600,
        "render_seconds": round(time.perf_counter() - t0, 2),
        "per_split": {s: int(np.sum(np.array(splits) == i)) for i, s in enumerate(SPLITS)},
        "data_sha256": hashlib.sha256(audio_arr.tobytes()).hexdigest(),
      }
    )
  )
  out = KeySet(
    audio_arr,
    np.array(keys, np.int32),
    np.array(splits, np.int32),
    np.array(sources, np.int32),
    info,
  )
  set_cache.save(path, {k: getattr(out, k) for k in ("audio", "key", "split", "chorale")}, info)
  return out
