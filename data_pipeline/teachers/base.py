"""What every acoustic teacher is: audio (24 kHz mono) -> K streams of discrete tokens at 75 Hz
(spec §2.3, §2.7), saved in a folder and rebuilt from it.

Every teacher maps ``L`` samples to ``num_tokens(L) = ceil(L / 320)`` tokens per codebook; token t
describes samples ``[320 t, 320 t + 320)``. The teachers: ``kmeans.KMeansTeacher`` (default, nothing
to download) and ``encodec.EncodecTeacher`` (MERT-v1's); ``factory`` builds and loads them.
``save(directory)`` writes ``teacher.json`` (plus a teacher's arrays); ``factory.load_teacher``
rebuilds the identical teacher, so a resumed preparation run and the trainer agree on the tokens.
"""

from __future__ import annotations

import abc
import json
import os
from typing import Any

import fsspec
import numpy as np

from data_pipeline.audio_format import HOP
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_write_text

TEACHER_JSON = "teacher.json"
FORMAT_VERSION = 1


def num_tokens(num_samples: int, hop: int = HOP) -> int:
  """Tokens per codebook for ``num_samples`` samples: ceil(num_samples / hop)."""
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  return -(-int(num_samples) // hop)


def as_audio(audio: np.ndarray) -> np.ndarray:
  """(samples,) float32 contiguous; raises ValueError on other shapes or non-finite samples."""
  x = np.asarray(audio)
  if x.ndim != 1:
    raise ValueError(f"teacher input must be mono audio of shape (samples,), got shape {x.shape}")
  x = np.ascontiguousarray(x, dtype=np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError("teacher input contains NaN/inf samples")
  return x


def check_tokens(
  codes: np.ndarray, num_codebooks: int, codebook_size: int, frames: int
) -> np.ndarray:
  """Assert the output contract: (K, frames) int16 with values in [0, codebook_size)."""
  if codes.shape != (num_codebooks, frames):
    raise AssertionError(
      f"teacher produced shape {codes.shape}, expected {(num_codebooks, frames)}"
    )
  if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
    raise AssertionError(f"teacher produced codes outside [0, {codebook_size})")
  return codes.astype(np.int16, copy=False)


def write_json(directory: str | os.PathLike, payload: dict[str, Any]) -> None:
  storage.makedirs(directory)
  atomic_write_text(
    os.path.join(directory, TEACHER_JSON), json.dumps(payload, indent=2, sort_keys=True)
  )


def read_teacher_json(directory: str | os.PathLike) -> dict[str, Any]:
  """The dict saved by ``Teacher.save``; raises FileNotFoundError / ValueError naming the file."""
  path = os.path.join(directory, TEACHER_JSON)
  if not storage.exists(path):
    raise FileNotFoundError(f"{path}: no saved teacher (Teacher.save writes it)")
  with fsspec.open(path, "r") as f:
    d = json.load(f)
  if d.get("format_version") != FORMAT_VERSION:
    raise ValueError(
      f"{path}: format_version {d.get('format_version')!r}, this code reads {FORMAT_VERSION}"
    )
  return d


class Teacher(abc.ABC):
  """Audio -> (num_codebooks, num_tokens(len)) int16 codes at ``sample_rate / hop`` Hz."""

  name: str  # "kmeans" | "encodec"
  num_codebooks: int  # K
  codebook_size: int  # codes per codebook
  sample_rate: int  # Hz of the input audio
  hop: int  # samples per token

  @property
  def label_rate(self) -> float:
    """Tokens per second (75.0 for 24 kHz / 320)."""
    return self.sample_rate / self.hop

  def _layout(self) -> dict[str, Any]:
    """The fields every teacher's config starts with: what it emits and at which rate."""
    return {
      "name": self.name,
      "num_codebooks": self.num_codebooks,
      "codebook_size": self.codebook_size,
      "sample_rate": self.sample_rate,
      "hop": self.hop,
      "label_rate": self.label_rate,
    }

  @abc.abstractmethod
  def config(self) -> dict[str, Any]:
    """JSON-able description for the dataset manifest."""

  @abc.abstractmethod
  def tokens(self, audio: np.ndarray) -> np.ndarray:
    """(samples,) float32 mono at ``sample_rate`` in [-1, 1] -> (K, num_tokens(samples)) int16."""

  @abc.abstractmethod
  def save(self, directory: str | os.PathLike) -> None:
    """Write ``teacher.json`` (and any arrays) so ``load`` rebuilds the same teacher."""

  @classmethod
  @abc.abstractmethod
  def load(cls, directory: str | os.PathLike) -> "Teacher":
    """Inverse of ``save``."""


# ----------------------------------------------------------------------------------------------
# EnCodec teacher
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Factory: every teacher is built by make_teacher (load_or_make_teacher: built once, then loaded)
# ----------------------------------------------------------------------------------------------
