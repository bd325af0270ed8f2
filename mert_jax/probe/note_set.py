"""The NSynth-style probe set: single General MIDI notes rendered from a SoundFont (render.py), with
exact labels by construction for two tasks:

* **pitch**: the MIDI pitch (classes: the pitches of ``NoteSetConfig.pitches``);
* **instrument**: NSynth's 11 instrument families, from General MIDI program groups (FAMILIES).

Splits are instrument-disjoint as NSynth's are: within each family the programs (instruments) are
dealt to train / valid / test, so a test note is always played by an instrument the probe never
heard. Notes quieter than ``min_rms_db`` (a SoundFont with a near-silent zone) are dropped and
counted. The set is deterministic given its config and is cached as one .npz per config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import numpy as np

from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import to_int16
from mert_jax.probe import render, set_cache

# NSynth's families from General MIDI program groups (programs 0-127). Left out: synth pads and
# effects, ethnic, percussive and sound-effect groups, timpani (47) and orchestra hit (55), which
# have no NSynth family.
FAMILIES: dict[str, tuple[int, ...]] = {
  "bass": tuple(range(32, 40)),
  "brass": tuple(range(56, 64)),
  "flute": tuple(range(72, 80)),
  "guitar": tuple(range(24, 32)),
  "keyboard": tuple(range(0, 8)),
  "mallet": tuple(range(8, 16)),
  "organ": tuple(range(16, 24)),
  "reed": tuple(range(64, 72)),
  "string": (*range(40, 47), *range(48, 52)),
  "synth_lead": tuple(range(80, 88)),
  "vocal": (52, 53, 54),
}
SPLITS = ("train", "valid", "test")


def deal_splits(
  n: int, valid_fraction: float, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
  """(n,) int32 split index (into SPLITS) per item: a seeded permutation, its first
  ``test_fraction`` to test and the next ``valid_fraction`` to valid (at least one each), the rest
  to train. The key and beat sets deal their chorales and grooves with it."""
  order = rng.permutation(n)
  n_test = max(1, round(test_fraction * n))
  n_valid = max(1, round(valid_fraction * n))
  split = np.zeros(n, np.int32)
  split[order[:n_test]] = SPLITS.index("test")
  split[order[n_test : n_test + n_valid]] = SPLITS.index("valid")
  return split


@dataclasses.dataclass(frozen=True)
class NoteSetConfig:
  """What the set holds (its cache key)."""

  families: tuple[str, ...] = tuple(FAMILIES)  # instrument families (all of NSynth's 11)
  programs_per_family: int = 0  # programs kept per family (0: all), dealt to the splits
  pitches: tuple[int, int] = (36, 84)  # lowest and highest MIDI pitch, inclusive
  notes_per_program: int = 12  # pitches drawn per program (seeded)
  velocities: tuple[int, ...] = (75, 100, 127)  # one drawn per note (NSynth has 5)
  hold_seconds: float = 3.0  # key held (NSynth: 3 s)
  release_seconds: float = 1.0  # after the key is released (NSynth notes: 4 s in all)
  min_rms_db: float = -60.0  # notes quieter than this (dB re full scale) are dropped
  seed: int = 0

  @property
  def num_pitches(self) -> int:
    return self.pitches[1] - self.pitches[0] + 1


# Set sizes (the probe's --set): "full" is NSynth-like in kind, not in size (86 programs x 12).
PRESETS = {
  "full": NoteSetConfig(),
  "small": NoteSetConfig(notes_per_program=4, hold_seconds=1.5, release_seconds=0.5),
  "tiny": NoteSetConfig(
    families=("keyboard", "flute", "organ"),
    programs_per_family=3,
    pitches=(57, 69),
    notes_per_program=3,
    hold_seconds=0.5,
    release_seconds=0.25,
  ),
}


def program_splits(cfg: NoteSetConfig) -> dict[int, tuple[str, str]]:
  """program -> (family, split): each family's programs dealt (seeded) one each to test, valid and
  train, then the rest 60/20/20; every family is in every split (families need 3 programs)."""
  rng = np.random.default_rng(cfg.seed)
  out = {}
  for family in cfg.families:
    programs = list(rng.permutation(FAMILIES[family]))
    if cfg.programs_per_family:
      programs = programs[: cfg.programs_per_family]
    if len(programs) < 3:
      raise ValueError(f"family {family!r}: {len(programs)} programs; the 3 splits need 3")
    n_test = max(1, round(0.2 * len(programs)))
    n_valid = max(1, round(0.2 * len(programs)))
    for i, program in enumerate(programs):
      split = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
      out[int(program)] = (family, split)
  return out


def note_plan(cfg: NoteSetConfig) -> list[dict[str, Any]]:
  """The notes to render: program, family, split, pitch, velocity (seeded)."""
  rng = np.random.default_rng([cfg.seed, 1])
  pitches = np.arange(cfg.pitches[0], cfg.pitches[1] + 1)
  plan = []
  for program, (family, split) in sorted(program_splits(cfg).items()):
    drawn = rng.choice(pitches, min(cfg.notes_per_program, len(pitches)), replace=False)
    for pitch in sorted(drawn):
      velocity = int(rng.choice(cfg.velocities))
      plan.append(
        dict(program=program, family=family, split=split, pitch=int(pitch), velocity=velocity)
      )
  return plan


CACHE_FORMAT = 2  # bumped when the cached arrays change


@dataclasses.dataclass
class NoteSet:
  """The rendered notes: audio (N, samples) int16 at 24 kHz and their labels and splits."""

  audio: np.ndarray
  pitch: np.ndarray  # (N,) MIDI pitch
  family: np.ndarray  # (N,) index into config.families
  program: np.ndarray  # (N,) General MIDI program
  split: np.ndarray  # (N,) index into SPLITS
  info: dict[str, Any]  # size, render seconds, dropped notes, data hash

  def labels(self, task: str) -> tuple[np.ndarray, int]:
    """(class per note, number of classes) of ``task``: "pitch" or "instrument"."""
    cfg = NoteSetConfig(
      **{k: tuple(v) if isinstance(v, list) else v for k, v in self.info["config"].items()}
    )
    if task == "pitch":
      return self.pitch - cfg.pitches[0], cfg.num_pitches
    if task == "instrument":
      return self.family, len(cfg.families)
    raise ValueError(f"the note set has the tasks pitch and instrument, not {task!r}")


def build(cfg: NoteSetConfig, cache_dir: str) -> NoteSet:
  """The set of ``cfg``: read from ``cache_dir`` when rendered before, else rendered and cached."""
  path = set_cache.path(cache_dir, "notes", CACHE_FORMAT, dataclasses.asdict(cfg))
  if cached := set_cache.load(path):
    arrays, info = cached
    return NoteSet(**arrays, info=info)
  t0 = time.perf_counter()
  plan = note_plan(cfg)
  kept, audio, dropped = [], [], 0
  for note in plan:
    x = render.single_note(
      note["program"], note["pitch"], note["velocity"], cfg.hold_seconds, cfg.release_seconds
    )
    rms_db = 10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20)
    if rms_db < cfg.min_rms_db:
      dropped += 1
      continue
    kept.append(note)
    audio.append(to_int16(x))
  seconds = time.perf_counter() - t0
  if not kept:
    raise ValueError(f"every one of the {len(plan)} notes is below {cfg.min_rms_db} dB RMS")
  audio_arr = np.stack(audio)
  info = {
    "config": dataclasses.asdict(cfg),
    "num_notes": len(kept),
    "num_dropped_quiet": dropped,
    "hours": audio_arr.size / SAMPLE_RATE / 3600,
    "render_seconds": round(seconds, 2),
    "per_split": {s: sum(n["split"] == s for n in kept) for s in SPLITS},
    "data_sha256": hashlib.sha256(audio_arr.tobytes()).hexdigest(),
  }
  info = json.loads(json.dumps(info))  # as read back from the cache (lists, not tuples)
  note_set = NoteSet(
    audio_arr,
    np.array([n["pitch"] for n in kept], np.int32),
    np.array([cfg.families.index(n["family"]) for n in kept], np.int32),
    np.array([n["program"] for n in kept], np.int32),
    np.array([SPLITS.index(n["split"]) for n in kept], np.int32),
    info,
  )
  arrays = {k: getattr(note_set, k) for k in ("audio", "pitch", "family", "program", "split")}
  set_cache.save(path, arrays, info)
  return note_set
