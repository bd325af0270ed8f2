"""Acoustic teachers: audio (24 kHz mono) -> K streams of discrete tokens at 75 Hz (spec §2.3,
§2.7).

Every teacher maps ``L`` samples to ``num_tokens(L) = ceil(L / 320)`` tokens per codebook; token t
describes samples ``[320 t, 320 t + 320)``. Two teachers:

* ``KMeansTeacher`` (default, nothing to download): MFCC + chroma features computed on 1024-sample
  Hann windows centred on sample ``320 t + 160`` (the middle of token t's hop), standardised with
  fit-time statistics, then quantised by a *residual* k-means so the tokens have the RVQ structure
  of EnCodec's: codebook 1 clusters the features, codebook k+1 clusters what is left after
  subtracting codebook k's centroid. Fitted once with MiniBatchKMeans, assigned with NumPy.
* ``EncodecTeacher``: the EnCodec 24 kHz codec at 6 kbps (8 codebooks x 1024 codes) via
  ``transformers.EncodecModel``, as MERT-v1 uses. Weights come from a folder or hub id the user
  names (safetensors only); ``random_init(seed)`` builds an untrained model for tests.

``save(directory)`` writes ``teacher.json`` (plus the k-means arrays); ``load_teacher(directory)``
rebuilds the identical teacher, so a resumed preparation run and the trainer agree on the tokens.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
from typing import Any, Callable, Iterable, Iterator

import fsspec
import numpy as np

from data_pipeline import frame_sample
from data_pipeline.audio_format import HOP, SAMPLE_RATE
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_dir, atomic_open, atomic_write_text
from mert_jax.terminal import progress as progress_lib

TEACHER_JSON = "teacher.json"
KMEANS_ARRAYS = "kmeans_arrays.npz"
FORMAT_VERSION = 1


def num_tokens(num_samples: int, hop: int = HOP) -> int:
  """Tokens per codebook for ``num_samples`` samples: ceil(num_samples / hop)."""
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  return -(-int(num_samples) // hop)


def _as_audio(audio: np.ndarray) -> np.ndarray:
  """(samples,) float32 contiguous; raises ValueError on other shapes or non-finite samples."""
  x = np.asarray(audio)
  if x.ndim != 1:
    raise ValueError(f"teacher input must be mono audio of shape (samples,), got shape {x.shape}")
  x = np.ascontiguousarray(x, dtype=np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError("teacher input contains NaN/inf samples")
  return x


def _check_tokens(
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


def _write_json(directory: str | os.PathLike, payload: dict[str, Any]) -> None:
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
# K-means teacher
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
  """Features and residual k-means of the embedded teacher (defaults: 8 x 1024 like EnCodec at
  6 kbps)."""

  # --- token layout ---
  num_codebooks: int = 8  # K residual codebooks
  codebook_size: int = 1024  # centroids per codebook
  sample_rate: int = SAMPLE_RATE  # Hz of the input audio
  hop: int = HOP  # samples per token; frame t is centred on sample hop*t + hop//2
  # --- features: MFCC of log-mel + chroma, from one power STFT ---
  n_fft: int = 1024  # Hann window / FFT length in samples (42.7 ms); sets edge_margin
  n_mels: int = 64  # mel bands (Slaney mel filters, as librosa.filters.mel)
  fmin: float = 0.0  # Hz, lowest mel band edge
  fmax: float = 12000.0  # Hz, highest mel band edge (Nyquist at 24 kHz)
  n_mfcc: int = 20  # DCT-II (ortho) coefficients of the dB log-mel, c0 included
  log_amin: float = 1e-10  # power floor before 10*log10 (as librosa.power_to_db, no top_db)
  n_chroma: int = 12  # chroma bins, tuning fixed at 0 (no per-file tuning estimate)
  deltas: bool = False  # append (f[t+1] - f[t-1]) / 2 of each feature: 2x width, +1 margin frame
  # "" : residual codebooks over MFCC + chroma. Else one feature group per codebook, comma-separated
  # (mfcc, chroma, logmel, pitch): each codebook is an independent k-means on its own group
  # (MERT-v0 clustered MFCC and log-mel + chroma separately), so each carries its own signal
  codebook_features: str = ""
  n_pitch: int = 72  # "pitch" group: dB energy in semitone bands from pitch_fmin (6 octaves)
  pitch_fmin: float = 65.41  # Hz (C2), the lowest semitone band's centre
  std_floor: float = 1e-5  # standardisation divides by max(std, std_floor)
  # --- fitting (MiniBatchKMeans, after HuBERT's simple_kmeans) ---
  max_fit_frames: int = (
    200_000  # uniform seeded subsample of the frames given to fit (~44 min of audio)
  )
  n_init: int = 3  # k-means++ restarts (HuBERT: 20; fewer for CPU time)
  max_iter: int = 100  # passes over the fit frames
  batch_size: int = 10_000  # mini-batch size in frames
  max_no_improvement: int = 100  # early stop after this many batches without inertia improvement
  reassignment_ratio: float = 0.0  # no random reassignment of small clusters (HuBERT)
  tol: float = 0.0  # no center-change stopping rule (HuBERT)
  # --- threads and memory bounds ---
  # BLAS/OpenMP threads while fitting and assigning (threadpoolctl). MiniBatchKMeans' result depends
  # on the thread count (order of its inertia sums), and oversubscribed OpenMP barriers are very
  # slow when preparation workers share cores, so 1: parallelise over files instead. None: library
  # default.
  num_threads: int | None = 1
  feature_chunk_frames: int = (
    4500  # frames per STFT chunk (60 s; ~120 MB of temporaries, whatever the length)
  )
  assign_chunk_frames: int = 8192  # frames per distance matrix (8192 x 1024 float32 = 32 MB)

  @property
  def groups(self) -> tuple[str, ...]:
    """Each codebook's feature group; () for residual codebooks."""
    return (
      tuple(g.strip() for g in self.codebook_features.split(",")) if self.codebook_features else ()
    )

  def group_slices(self) -> dict[str, slice]:
    """Where each feature group sits in a frame's feature vector (before deltas)."""
    widths = {"mfcc": self.n_mfcc, "chroma": self.n_chroma}
    if self.groups:
      widths.update(logmel=self.n_mels, pitch=self.n_pitch)
    out, at = {}, 0
    for name, width in widths.items():
      out[name] = slice(at, at + width)
      at += width
    return out

  def codebook_dims(self, k: int) -> np.ndarray:
    """The feature dimensions codebook k clusters (all of them for residual codebooks)."""
    if not self.groups:
      return np.arange(self.feature_dim)
    group = self.group_slices()[self.groups[k]]
    dims = np.arange(group.start, group.stop)
    base = self.feature_dim // 2 if self.deltas else self.feature_dim
    return np.concatenate([dims, dims + base]) if self.deltas else dims

  @property
  def feature_dim(self) -> int:
    base = max(s.stop for s in self.group_slices().values())
    return 2 * base if self.deltas else base

  @property
  def edge_margin(self) -> int:
    """Frames at each edge of a hop-aligned clip whose window reaches past the clip (zero padding
    there).

    Frame t spans samples [hop*t + hop/2 - n_fft/2, hop*t + hop/2 + n_fft/2), so
    ceil((n_fft - hop) / (2 hop)) frames per edge (2 for 1024/320, = ceil(n_fft/2/hop)), plus 1
    with deltas. A clip end that is not on a hop boundary can add one more frame at the right edge.
    """
    return math.ceil((self.n_fft - self.hop) / (2 * self.hop)) + (1 if self.deltas else 0)

  def validate(self) -> None:
    if self.hop % 2:
      raise ValueError(f"kmeans.hop={self.hop} must be even (frames are centred on hop*t + hop/2)")
    if self.n_fft % 2 or self.n_fft < self.hop:
      raise ValueError(f"kmeans.n_fft={self.n_fft} must be even and >= hop={self.hop}")
    if self.n_mfcc > self.n_mels:
      raise ValueError(f"kmeans.n_mfcc={self.n_mfcc} cannot exceed n_mels={self.n_mels}")
    if self.max_fit_frames < self.codebook_size:
      raise ValueError(
        f"kmeans.max_fit_frames={self.max_fit_frames} is below codebook_size={self.codebook_size}"
      )
    if self.num_codebooks < 1 or self.codebook_size < 2:
      raise ValueError("kmeans needs num_codebooks >= 1 and codebook_size >= 2")
    if self.codebook_size > np.iinfo(np.int16).max + 1:
      raise ValueError(f"kmeans.codebook_size={self.codebook_size} does not fit int16 tokens")
    unknown = [g for g in self.groups if g not in FEATURE_GROUPS]
    if unknown or (self.groups and len(self.groups) != self.num_codebooks):
      raise ValueError(
        f"kmeans.codebook_features={self.codebook_features!r}: give one of "
        f"{', '.join(FEATURE_GROUPS)} per codebook ({self.num_codebooks}), comma-separated"
      )


FEATURE_GROUPS = ("mfcc", "chroma", "logmel", "pitch")  # KMeansConfig.codebook_features

_FILTERBANKS: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_PITCH_BANKS: dict[tuple[Any, ...], np.ndarray] = {}


def pitch_filterbank(cfg: KMeansConfig) -> np.ndarray:
  """(n_pitch, bins) float32 triangles centred on semitones from ``pitch_fmin``, each reaching
  the neighbouring semitones or, where FFT bins are wider than a semitone (below about
  sample_rate / n_fft / 0.06 Hz: 400 Hz at 24 kHz / 1024), one FFT bin: an octave-aware log
  spectrum from the teacher's one STFT, coarse in the lowest octaves. [written here: librosa's
  constant-Q filters need their own transform]"""
  key = (cfg.sample_rate, cfg.n_fft, cfg.n_pitch, cfg.pitch_fmin)
  if key not in _PITCH_BANKS:
    freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    centres = cfg.pitch_fmin * 2.0 ** (np.arange(cfg.n_pitch) / 12.0)
    half = np.maximum(centres * (2 ** (1 / 12) - 1), cfg.sample_rate / cfg.n_fft)
    bank = np.maximum(0.0, 1.0 - np.abs(freqs[None] - centres[:, None]) / half[:, None])
    _PITCH_BANKS[key] = bank.astype(np.float32)
  return _PITCH_BANKS[key]


def _filterbanks(cfg: KMeansConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(window (n_fft,), mel (n_mels, bins), chroma (n_chroma, bins)) float32, cached per setting."""
  key = (cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.n_chroma)
  if key not in _FILTERBANKS:
    import librosa  # pylint: disable=g-import-not-at-top

    window = librosa.filters.get_window("hann", cfg.n_fft, fftbins=True).astype(np.float32)
    mel = librosa.filters.mel(
      sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    ).astype(np.float32)
    chroma = librosa.filters.chroma(
      sr=cfg.sample_rate, n_fft=cfg.n_fft, tuning=0.0, n_chroma=cfg.n_chroma
    ).astype(np.float32)
    _FILTERBANKS[key] = (window, mel, chroma)
  return _FILTERBANKS[key]


_THREADPOOLS: list[Any] = []


def _thread_limit(
  num_threads: int | None, *, fresh: bool = False
) -> contextlib.AbstractContextManager[Any]:
  """Context limiting BLAS/OpenMP threads to ``num_threads`` (no-op for None or without
  threadpoolctl).

  The controller snapshots the libraries loaded when it is made; ``fresh`` re-scans (after sklearn
  loads).
  """
  if num_threads is None:
    return contextlib.nullcontext()
  try:
    from threadpoolctl import ThreadpoolController  # pylint: disable=g-import-not-at-top
  except ImportError:
    return contextlib.nullcontext()
  if fresh or not _THREADPOOLS:
    _THREADPOOLS[:] = [ThreadpoolController()]
  return _THREADPOOLS[0].limit(limits=num_threads)


def _padded_slice(x: np.ndarray, start: int, stop: int) -> np.ndarray:
  """x[start:stop] with zeros where the range leaves [0, len(x))."""
  out = np.zeros(stop - start, np.float32)
  a, b = max(start, 0), min(stop, len(x))
  if b > a:
    out[a - start : b - start] = x[a:b]
  return out


def _base_features(x: np.ndarray, start: int, stop: int, cfg: KMeansConfig) -> np.ndarray:
  """(stop - start, n_mfcc + n_chroma) float32 features of frames [start, stop).

  Frame t is the Hann-windowed ``n_fft`` samples centred on ``hop*t + hop//2``, zeros outside the
  audio: ``librosa.stft(np.pad(x, n_fft//2 - hop//2), center=False)``. (Dropping the first hop/2
  samples and using center=True gives the same frames except 0 and 1, which would lose x[:hop/2].)
  MFCC and chroma match librosa.feature.mfcc(S=power_to_db(mel, top_db=None)) and
  chroma_stft(S=power, tuning=0) to float32 rounding.
  """
  import scipy.fft  # pylint: disable=g-import-not-at-top

  window, mel_fb, chroma_fb = _filterbanks(cfg)
  half = cfg.n_fft // 2
  first = cfg.hop * start + cfg.hop // 2 - half
  seg = _padded_slice(x, first, first + cfg.hop * (stop - start - 1) + cfg.n_fft)
  frames = np.lib.stride_tricks.sliding_window_view(seg, cfg.n_fft)[:: cfg.hop]  # (frames, n_fft)
  power = np.abs(np.fft.rfft(frames * window, axis=-1)).astype(np.float32) ** 2  # (frames, bins)
  log_mel = 10.0 * np.log10(np.maximum(power @ mel_fb.T, cfg.log_amin))
  mfcc = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=-1)[:, : cfg.n_mfcc]
  raw_chroma = power @ chroma_fb.T
  peak = raw_chroma.max(axis=-1, keepdims=True)
  chroma = np.where(
    peak > np.finfo(np.float32).tiny,
    raw_chroma / np.maximum(peak, np.finfo(np.float32).tiny),
    raw_chroma,
  )  # librosa.util.normalize(norm=inf)
  groups = [mfcc, chroma]
  if cfg.groups:  # independent codebooks: every group, in group_slices' order
    pitch = 10.0 * np.log10(np.maximum(power @ pitch_filterbank(cfg).T, cfg.log_amin))
    groups += [log_mel, pitch]
  return np.concatenate(groups, axis=-1).astype(np.float32)


def frame_features(
  audio: np.ndarray, cfg: KMeansConfig, start: int = 0, stop: int | None = None
) -> np.ndarray:
  """(frames, cfg.feature_dim) float32 unstandardised features of tokens [start, stop) of ``audio``.

  Computed in chunks of ``cfg.feature_chunk_frames``; chunking does not change the result.
  """
  x = _as_audio(audio)
  stop = num_tokens(len(x), cfg.hop) if stop is None else stop
  pad = 1 if cfg.deltas else 0
  out = np.empty((stop - start, cfg.feature_dim), np.float32)
  for a in range(start, stop, cfg.feature_chunk_frames):
    b = min(a + cfg.feature_chunk_frames, stop)
    f = _base_features(x, a - pad, b + pad, cfg)
    if cfg.deltas:
      f = np.concatenate([f[1:-1], 0.5 * (f[2:] - f[:-2])], axis=-1)
    out[a - start : b - start] = f
  return out


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, chunk: int) -> np.ndarray:
  """(n,) int64 index of the nearest centroid (squared Euclidean; ties -> lowest index).

  x: (n, d) float32, centroids: (k, d) float32; at most ``chunk`` x k distances held at once.
  """
  c_sq = np.einsum("kd,kd->k", centroids, centroids)
  out = np.empty(len(x), np.int64)
  for a in range(0, len(x), chunk):
    d = c_sq[None, :] - 2.0 * (x[a : a + chunk] @ centroids.T)  # ||x||^2 omitted: same argmin
    out[a : a + chunk] = np.argmin(d, axis=-1)
  return out


def _residual_quantize(
  z: np.ndarray, centroids: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
  """Residual VQ of standardised features z (n, d) -> codes (K, n) int64, final residual (n, d)."""
  codes = np.empty((len(centroids), len(z)), np.int64)
  r = z.copy()
  for k, c in enumerate(centroids):
    codes[k] = nearest_centroid(r, c, chunk)
    r -= c[codes[k]]
  return codes, r


def named_audios(
  audios: Iterable[np.ndarray] | Iterable[tuple[str, np.ndarray]],
) -> Iterator[tuple[str, np.ndarray]]:
  """(file id, (samples,) audio) pairs of ``audios``: pairs as given; bare arrays are named by
  their position in the stream ("#0", "#1", ...)."""
  for i, item in enumerate(audios):
    yield item if isinstance(item, tuple) else (f"#{i}", item)


def sample_frames(
  audios: Iterable[tuple[str, np.ndarray]], cfg: KMeansConfig, seed: int
) -> frame_sample.FrameSample:
  """The seeded uniform sample of at most max_fit_frames feature rows of (file id, audio) pairs
  (data_pipeline/frame_sample.py: the same for any order or partition of the files)."""
  sample = frame_sample.FrameSample.empty(cfg.max_fit_frames, cfg.feature_dim)
  for file_id, audio in audios:
    sample = sample.add(file_candidates(file_id, audio, cfg, seed))
  return sample.compact()


def file_candidates(
  file_id: str, audio: np.ndarray, cfg: KMeansConfig, seed: int
) -> frame_sample.FrameSample:
  """One file's contribution to ``sample_frames``: its features' smallest-keyed frames."""
  with _thread_limit(cfg.num_threads):
    feats = frame_features(audio, cfg)
  return frame_sample.FrameSample.of_file(cfg.max_fit_frames, feats, seed, file_id)


def _check_fit_frames(frames: int, cfg: KMeansConfig) -> None:
  if frames < cfg.codebook_size:
    rate = cfg.sample_rate / cfg.hop
    raise ValueError(
      f"k-means teacher: only {frames} feature frames to fit {cfg.codebook_size} centroids per "
      f"codebook "
      f"({frames / rate:.1f} s of audio at {rate:g} Hz); give at least {cfg.codebook_size} frames "
      f"({cfg.codebook_size / rate:.1f} s), ideally ~100x more, or lower codebook_size"
    )


def _reporting_kmeans(on_step: Callable[[int, int], None]) -> type:
  """A MiniBatchKMeans subclass that calls ``on_step(step, n_steps)`` (step from 1) after each
  mini-batch step of ``fit``. It only observes: the centroids are bit-identical to MiniBatchKMeans'.

  sklearn has no progress callback (``verbose`` prints every step to stdout); this hooks the
  private per-step ``_mini_batch_convergence`` (sklearn 1.1+). Should a later sklearn rename it, the
  hook is never called and only the fit's opening line remains (tests/data_pipeline/
  test_progress.py checks that the steps are reported)."""
  from sklearn.cluster import MiniBatchKMeans  # pylint: disable=g-import-not-at-top

  class ReportingMiniBatchKMeans(MiniBatchKMeans):
    def _mini_batch_convergence(self, step, n_steps, *args, **kwargs):
      stop = super()._mini_batch_convergence(step, n_steps, *args, **kwargs)
      on_step(step + 1, n_steps)
      return stop

  return ReportingMiniBatchKMeans


class _FitReport:
  """The mini-batch steps of all K codebooks' fits as one progress bar, made at the first step
  (when sklearn's step limit is known, after the k-means++ inits); a codebook that converges early
  takes its unrun steps off the total, so the ETA stays the time left at the rate so far."""

  def __init__(self, num_codebooks: int, enabled: bool):
    self.num_codebooks, self.enabled = num_codebooks, enabled
    self.bar: Any = None
    self.codebook, self.steps, self.limit, self.early = 0, 0, 0, 0

  def _where(self) -> str:
    return f"codebook {self.codebook + 1}/{self.num_codebooks}"

  def start(self, codebook: int) -> None:
    """Codebook ``codebook`` (from 0) is being fitted next."""
    self.codebook, self.steps = codebook, 0
    if self.bar is not None:
      self.bar.set_postfix_str(self._where())

  def __call__(self, step: int, n_steps: int) -> None:
    """sklearn finished mini-batch step ``step`` (from 1) of at most ``n_steps``."""
    if self.bar is None:
      total = n_steps * self.num_codebooks
      self.bar = progress_lib.bar(total, "k-means", "steps", enabled=self.enabled)
      self.bar.set_postfix_str(self._where())
    self.bar.update(step - self.steps)
    self.steps, self.limit = step, n_steps

  def end(self) -> None:
    """The current codebook is fitted; steps it did not need leave the total."""
    if self.bar is not None and self.steps < self.limit:
      self.bar.total -= self.limit - self.steps
      self.early += 1

  def close(self) -> None:
    """The final line, saying how many codebooks converged before the step limit."""
    if self.bar is None:
      return
    early = f", {self.early} converged before the {self.limit}-step limit" if self.early else ""
    self.bar.set_postfix_str(f"{self.num_codebooks} codebooks{early}")
    self.bar.close()


def _fit_plan(frames: int, cfg: KMeansConfig) -> str:
  """The line that opens a fit: what is clustered, and how (sizes in frames; the step limit as
  MiniBatchKMeans computes it)."""
  batch = min(cfg.batch_size, frames)
  return (
    f"k-means: {cfg.num_codebooks} residual codebooks x {cfg.codebook_size} centroids on {frames} "
    f"frames x {cfg.feature_dim} features; per codebook {cfg.n_init} k-means++ inits, then up to "
    f"{cfg.max_iter * frames // batch} mini-batch steps of {batch} frames"
  )


def _fit_codebooks(
  z: np.ndarray, cfg: KMeansConfig, seeds: list[np.random.SeedSequence], progress: bool = False
) -> np.ndarray:
  """(K, codebook_size, d) float32 centroids. Residual codebooks (``cfg.groups`` empty): codebook
  k+1 is fitted on the residual of codebooks 1..k. Independent codebooks: codebook k is a k-means
  of its own feature group's dimensions (``cfg.codebook_dims(k)``), 0 on the other dimensions.

  z: (frames, d) standardised features; seeds: one SeedSequence per codebook; progress: print the
  plan and each codebook's mini-batch steps to stderr (``mert_jax/terminal/progress.py``).
  """
  residual = not cfg.groups
  r = np.array(z, np.float32)  # a copy: residual codebooks subtract from it
  centroids = np.zeros((cfg.num_codebooks, cfg.codebook_size, cfg.feature_dim), np.float32)
  if progress:
    print(_fit_plan(len(r), cfg), file=sys.stderr, flush=True)
  report = _FitReport(cfg.num_codebooks, progress)
  reporting_kmeans = _reporting_kmeans(report)
  for k, seq in enumerate(seeds):
    report.start(k)
    km = reporting_kmeans(
      n_clusters=cfg.codebook_size,
      init="k-means++",
      n_init=cfg.n_init,
      max_iter=cfg.max_iter,
      batch_size=cfg.batch_size,
      tol=cfg.tol,
      max_no_improvement=cfg.max_no_improvement,
      reassignment_ratio=cfg.reassignment_ratio,
      compute_labels=False,
      random_state=int(seq.generate_state(1)[0]),
    )
    dims = cfg.codebook_dims(k)
    km.fit(r if residual else np.ascontiguousarray(r[:, dims]))
    report.end()
    centroids[k][:, dims] = km.cluster_centers_
    if residual:
      r -= centroids[k][nearest_centroid(r, centroids[k], cfg.assign_chunk_frames)]
  report.close()
  return centroids


def _sha256(*arrays: np.ndarray) -> str:
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a, dtype="<f4").tobytes())
  return h.hexdigest()


class KMeansTeacher(Teacher):
  """MFCC + chroma features at 75 Hz, standardised, quantised by residual k-means (K codebooks)."""

  name = "kmeans"

  def __init__(
    self,
    cfg: KMeansConfig,
    mean: np.ndarray,
    std: np.ndarray,
    centroids: np.ndarray,
    fit_info: dict[str, Any] | None = None,
  ):
    """mean, std: (d,) fit-time feature statistics; centroids: (K, codebook_size, d)."""
    cfg.validate()
    d = cfg.feature_dim
    if (
      mean.shape != (d,)
      or std.shape != (d,)
      or centroids.shape != (cfg.num_codebooks, cfg.codebook_size, d)
    ):
      raise ValueError(
        f"k-means arrays do not match the config: mean {mean.shape}, std {std.shape}, centroids "
        f"{centroids.shape}; expected ({d},), ({d},), {(cfg.num_codebooks, cfg.codebook_size, d)}"
      )
    self.cfg = cfg
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.centroids = np.ascontiguousarray(centroids, np.float32)
    self.fit_info = dict(fit_info or {})
    self.num_codebooks = cfg.num_codebooks
    self.codebook_size = cfg.codebook_size
    self.sample_rate = cfg.sample_rate
    self.hop = cfg.hop

  @classmethod
  def fit(
    cls,
    audios: Iterable[np.ndarray] | Iterable[tuple[str, np.ndarray]],
    *,
    config: KMeansConfig = KMeansConfig(),
    seed: int = 0,
    progress: bool = False,
  ) -> "KMeansTeacher":
    """Fit on a seeded sample of the frames of ``audios``: (file id, (samples,) float32) pairs at
    24 kHz, or bare arrays (named by position). The sample depends on the files' ids and content,
    not on their order (``sample_frames``).

    ``progress``: report the clustering on stderr (the plan, then each codebook's mini-batch steps
    with an ETA); the result is the same either way. To see the feature pass over ``audios`` too,
    wrap them in ``mert_jax.terminal.progress.progress`` (as prepare does)."""
    config.validate()
    if isinstance(audios, np.ndarray) and audios.ndim == 1:
      audios = [audios]  # one clip, not a stream of samples
    sample = sample_frames(named_audios(audios), config, seed)
    return cls.fit_sample(sample, config=config, seed=seed, progress=progress)

  @classmethod
  def fit_sample(
    cls,
    sample: frame_sample.FrameSample,
    *,
    config: KMeansConfig = KMeansConfig(),
    seed: int = 0,
    progress: bool = False,
  ) -> "KMeansTeacher":
    """Fit on a frame sample (``sample_frames``, or merged ``file_candidates`` of many workers)."""
    # Imported here so that its OpenMP runtime is loaded before the thread limit is taken.
    import sklearn.cluster  # pylint: disable=g-import-not-at-top

    config.validate()
    feats = sample.compact().features
    _, *km_seqs = np.random.SeedSequence(seed).spawn(1 + config.num_codebooks)
    with _thread_limit(config.num_threads, fresh=True):
      _check_fit_frames(len(feats), config)
      mean = feats.mean(axis=0, dtype=np.float64).astype(np.float32)
      std = np.maximum(feats.std(axis=0, dtype=np.float64), config.std_floor).astype(np.float32)
      centroids = _fit_codebooks((feats - mean) / std, config, km_seqs, progress)
    info = {
      "seed": int(seed),
      "fit_frames": int(len(feats)),
      "frames_seen": int(sample.frames_seen),
      "sklearn_version": sklearn.__version__,
    }
    return cls(config, mean, std, centroids, info)

  def standardized_features(
    self, audio: np.ndarray, start: int = 0, stop: int | None = None
  ) -> np.ndarray:
    """(frames, d) float32 features of tokens [start, stop), standardised with the fit stats."""
    return (frame_features(audio, self.cfg, start, stop) - self.mean) / self.std

  def tokens(self, audio: np.ndarray) -> np.ndarray:
    x = _as_audio(audio)
    n = num_tokens(len(x), self.hop)
    codes = np.empty((self.num_codebooks, n), np.int16)
    with _thread_limit(self.cfg.num_threads):
      for a in range(0, n, self.cfg.feature_chunk_frames):
        b = min(a + self.cfg.feature_chunk_frames, n)
        z = self.standardized_features(x, a, b)
        if self.cfg.groups:
          for k, c in enumerate(self.centroids):
            dims = self.cfg.codebook_dims(k)
            codes[k, a:b] = nearest_centroid(z[:, dims], c[:, dims], self.cfg.assign_chunk_frames)
        else:
          codes[:, a:b] = _residual_quantize(z, self.centroids, self.cfg.assign_chunk_frames)[0]
    return _check_tokens(codes, self.num_codebooks, self.codebook_size, n)

  def quantization_errors(self, audio: np.ndarray) -> np.ndarray:
    """(K + 1,) mean squared residual per feature dim after 0, 1, ..., K codebooks (standardised
    units)."""
    r = self.standardized_features(audio)
    errs = [float(np.mean(r**2))]
    for c in self.centroids:
      r = r - c[nearest_centroid(r, c, self.cfg.assign_chunk_frames)]
      errs.append(float(np.mean(r**2)))
    return np.asarray(errs)

  @property
  def centroids_sha256(self) -> str:
    """sha256 of the float32 little-endian bytes of mean, std and centroids, in that order."""
    return _sha256(self.mean, self.std, self.centroids)

  def config(self) -> dict[str, Any]:
    groups = self.cfg.groups
    what = (
      f"independent codebooks on {', '.join(groups)}"
      if groups
      else f"residual codebooks on mfcc{self.cfg.n_mfcc}(log-mel{self.cfg.n_mels}) + "
      f"chroma{self.cfg.n_chroma}"
    )
    return {
      **self._layout(),
      "features": what
      + (" + deltas" if self.cfg.deltas else "")
      + f", hann {self.cfg.n_fft} centred on hop*t + hop/2",
      "feature_dim": self.cfg.feature_dim,
      "edge_margin_frames": self.cfg.edge_margin,
      "settings": dataclasses.asdict(self.cfg),
      "fit": self.fit_info,
      "centroids_sha256": self.centroids_sha256,
    }

  def save(self, directory: str | os.PathLike) -> None:
    storage.makedirs(directory)
    with atomic_open(os.path.join(directory, KMEANS_ARRAYS), "wb") as f:
      np.savez(f, mean=self.mean, std=self.std, centroids=self.centroids)
    _write_json(
      directory, {"format_version": FORMAT_VERSION, "arrays": KMEANS_ARRAYS, **self.config()}
    )

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "KMeansTeacher":
    d = read_teacher_json(directory)
    if d.get("name") != cls.name:
      raise ValueError(f"{directory}: saved teacher is {d.get('name')!r}, not {cls.name!r}")
    with fsspec.open(os.path.join(directory, d["arrays"]), "rb") as f:
      arrays = io.BytesIO(f.read())
    with np.load(arrays, allow_pickle=False) as z:
      mean, std, centroids = z["mean"], z["std"], z["centroids"]
    teacher = cls(KMeansConfig(**d["settings"]), mean, std, centroids, d.get("fit"))
    if teacher.centroids_sha256 != d["centroids_sha256"]:
      raise ValueError(
        f"{directory}: {d['arrays']} does not match the sha256 in {TEACHER_JSON} "
        f"(corrupt or replaced)"
      )
    return teacher


# ----------------------------------------------------------------------------------------------
# EnCodec teacher
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncodecTeacherConfig:
  """How the EnCodec codec is run (MERT-v1: 24 kHz model, 6 kbps -> 8 codebooks x 1024)."""

  bandwidth: float = 6.0  # kbps; 1.5/3/6/12/24 -> 2/4/8/16/32 codebooks
  # "windowed": windows of window_seconds, each with context_seconds of left context (bounded
  # memory; 1.2-1.3 % of codes differed from one pass on real music with the untrained model,
  # benchmarks/encodec_modes.py) | "whole": each file in one causal pass, as the
  # reference encodes it (memory grows with the file; files over whole_max_seconds are refused)
  mode: str = "windowed"
  whole_max_seconds: float = 1800.0  # "whole": the longest file encoded in one pass
  window_seconds: float = 30.0  # audio encoded per call, rounded to whole hops (bounds memory)
  # Hop-aligned left context re-encoded before each window (warms up the causal convs and the
  # LSTM); its codes are dropped. Without it ~15 frames after each window start differed from
  # whole-file codes (untrained model, tests); with 1 s, only isolated near-tie flips (~1 %).
  context_seconds: float = 1.0
  # "windowed": a file's windows of equal length encoded together, this many per call. Only a
  # file's own windows share a call: the codes depend on the batch at the level of float rounding
  # (a near tie flips), so batching several files would tie a file's codes to its neighbours;
  # on one CPU thread the batch gains 1 % (benchmarks/encodec_modes.py).
  batch_windows: int = 8
  device: str = "cpu"  # torch device: cpu, cuda, cuda:N, or auto (cuda when present)
  num_threads: int | None = (
    None  # torch intra-op threads while encoding (then restored); None: as set
  )
  # Random-init (test) models only: the untrained codebooks are all zeros, which maps every frame
  # to code 0; codebook k is instead filled with residual frames of a seeded calibration signal
  # plus jitter.
  calibration_seconds: float = 4.0  # seeded noise bursts encoded to draw the random codebooks
  calibration_jitter: float = 0.5  # Gaussian jitter, in units of the per-channel residual std

  @property
  def window_samples(self) -> int:
    return max(1, round(self.window_seconds * SAMPLE_RATE / HOP)) * HOP

  @property
  def context_samples(self) -> int:
    return max(0, round(self.context_seconds * SAMPLE_RATE / HOP)) * HOP


ENCODEC_MODES = ("windowed", "whole")


def resolve_device(device: str) -> str:
  """The torch device of ``device``: "auto" is cuda when torch sees a GPU, else cpu; a CUDA
  device that is not there is one line."""
  import torch  # pylint: disable=g-import-not-at-top

  if device == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  if device.startswith("cuda") and not torch.cuda.is_available():
    raise ValueError(f"EnCodec device {device!r}: torch sees no CUDA device here (use cpu or auto)")
  return device


@contextlib.contextmanager
def _torch_threads(num_threads: int | None):
  """Temporarily set torch's intra-op thread count (process-global) to ``num_threads``."""
  import torch  # pylint: disable=g-import-not-at-top

  before = torch.get_num_threads()
  if num_threads is not None:
    torch.set_num_threads(num_threads)
  try:
    yield
  finally:
    torch.set_num_threads(before)


def _fit_length(codes: np.ndarray, frames: int) -> np.ndarray:
  """Trim extra frames at the end, or repeat the last frame; (K, n) -> (K, frames).

  transformers 5.24's EnCodec already returns ceil(L / 320) frames (checked in tests), so this
  only guards against other versions.
  """
  if codes.shape[1] >= frames:
    return codes[:, :frames]
  if codes.shape[1] == 0:
    raise ValueError(f"EnCodec returned no frames where {frames} were expected")
  return np.concatenate([codes, np.repeat(codes[:, -1:], frames - codes.shape[1], axis=1)], axis=1)


def _calibration_signal(seconds: float, seed: int) -> np.ndarray:
  """Seeded noise bursts with a random level per 0.25 s (float32, SAMPLE_RATE) for random
  codebooks."""
  rng = np.random.default_rng(seed)
  n = int(seconds * SAMPLE_RATE)
  block = SAMPLE_RATE // 4
  levels = np.repeat(10.0 ** rng.uniform(-3, -0.5, -(-n // block)), block)[:n]
  return (levels * rng.standard_normal(n)).astype(np.float32)


def _randomize_codebooks(model: Any, cfg: EncodecTeacherConfig, seed: int) -> None:
  """Fill the zero codebooks of an untrained EncodecModel from a seeded calibration signal (in
  place)."""
  import torch  # pylint: disable=g-import-not-at-top

  gen = torch.Generator().manual_seed(seed)
  x = torch.from_numpy(_calibration_signal(cfg.calibration_seconds, seed))[None, None]
  with torch.inference_mode():
    r = model.encoder(x)[0].T.float()  # (frames, codebook_dim)
  for layer in model.quantizer.layers:
    book = layer.codebook
    pick = torch.randint(0, len(r), (book.codebook_size,), generator=gen)
    std = r.std(dim=0, keepdim=True)
    embed = r[pick] + cfg.calibration_jitter * std * torch.randn(book.embed.shape, generator=gen)
    with torch.no_grad():
      book.embed.copy_(embed)
      book.embed_avg.copy_(embed)
    with torch.inference_mode():
      r = r - book.embed[book.quantize(r)]


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _load_pretrained(source: str, revision: str | None) -> tuple[Any, str, str | None, str | None]:
  """(EncodecModel, source, resolved revision, sha256 of a local model.safetensors); never
  unpickles."""
  from transformers import EncodecModel  # pylint: disable=g-import-not-at-top

  weights_sha256 = None
  if os.path.isdir(source):
    source = os.path.abspath(source)
    st = os.path.join(source, "model.safetensors")
    if not os.path.exists(st):
      has_bin = os.path.exists(os.path.join(source, "pytorch_model.bin"))
      raise ValueError(
        f"{source}: no model.safetensors"
        + (
          " (only pytorch_model.bin, which this code will not unpickle; convert it with "
          "safetensors.torch.save_file(torch.load(path, weights_only=True), "
          "'model.safetensors'))"
          if has_bin
          else ""
        )
      )
    weights_sha256 = _file_sha256(st)
  try:
    model = EncodecModel.from_pretrained(source, revision=revision, use_safetensors=True)
  except OSError as e:
    raise ValueError(f"cannot load EnCodec from {source!r} with safetensors weights: {e}") from e
  return model, source, revision or getattr(model.config, "_commit_hash", None), weights_sha256


class EncodecTeacher(Teacher):
  """EnCodec 24 kHz RVQ codes (MERT-v1's teacher) via transformers.EncodecModel, CPU by default."""

  name = "encodec"

  def __init__(
    self,
    model: Any,
    *,
    source: str | None = None,
    seed: int | None = None,
    revision: str | None = None,
    weights_sha256: str | None = None,
    config: EncodecTeacherConfig = EncodecTeacherConfig(),
  ):
    """``model``: a transformers EncodecModel (give ``source`` to record where it came from), or a
    folder / hub id to load with safetensors (same as ``from_pretrained``). See also
    ``random_init``."""
    if isinstance(model, (str, os.PathLike)):
      model, source, revision, weights_sha256 = _load_pretrained(os.fspath(model), revision)
    if source is None:
      raise ValueError(
        "EncodecTeacher(model, source=...): name where the weights came from (saved in "
        "teacher.json)"
      )
    mc = model.config
    if mc.sampling_rate != SAMPLE_RATE or int(np.prod(mc.upsampling_ratios)) != HOP:
      raise ValueError(
        f"EnCodec model {source}: {mc.sampling_rate} Hz / hop "
        f"{int(np.prod(mc.upsampling_ratios))}; "
        f"MERT needs the 24 kHz model (hop {HOP}, 75 Hz)"
      )
    if mc.audio_channels != 1 or mc.chunk_length_s is not None or mc.normalize:
      raise ValueError(
        f"EnCodec model {source}: expected the mono, unchunked, unnormalised 24 kHz model"
      )
    if config.bandwidth not in mc.target_bandwidths:
      raise ValueError(
        f"bandwidth {config.bandwidth} not supported by {source}; choose from "
        f"{mc.target_bandwidths}"
      )
    if config.mode not in ENCODEC_MODES:
      raise ValueError(f"EnCodec mode must be one of {ENCODEC_MODES}, got {config.mode!r}")
    self.device = resolve_device(config.device)
    self.model = model.eval().to(self.device)
    self.cfg = config
    self.source = source
    self.seed = seed
    self.revision = revision
    self.weights_sha256 = weights_sha256
    self.num_codebooks = int(model.quantizer.get_num_quantizers_for_bandwidth(config.bandwidth))
    self.codebook_size = int(mc.codebook_size)
    self.sample_rate = int(mc.sampling_rate)
    self.hop = HOP

  @classmethod
  def from_pretrained(
    cls,
    source: str,
    *,
    revision: str | None = None,
    config: EncodecTeacherConfig = EncodecTeacherConfig(),
  ) -> "EncodecTeacher":
    """From a local folder (model.safetensors + config.json) or a hub id, e.g.
    "facebook/encodec_24khz"."""
    return cls(source, revision=revision, config=config)

  @classmethod
  def random_init(
    cls, seed: int = 0, *, config: EncodecTeacherConfig = EncodecTeacherConfig()
  ) -> "EncodecTeacher":
    """Untrained 24 kHz EnCodec (default EncodecConfig), deterministic in ``seed``; tests only."""
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import EncodecConfig, EncodecModel  # pylint: disable=g-import-not-at-top

    with torch.random.fork_rng(devices=[]), _torch_threads(config.num_threads):
      torch.manual_seed(seed)
      model = EncodecModel(EncodecConfig()).eval()
      _randomize_codebooks(model, config, seed)
    return cls(model, source=f"random_init({seed})", seed=seed, config=config)

  def _encode(self, x: np.ndarray) -> np.ndarray:
    """(n,) float32 -> (K, frames) int64 codes of one window."""
    return self._encode_batch(x[None])[0]

  def _encode_batch(self, x: np.ndarray) -> np.ndarray:
    """(B, n) float32 -> (B, K, frames) int64 codes of B windows of equal length."""
    import torch  # pylint: disable=g-import-not-at-top

    with torch.inference_mode():
      inp = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(self.device)
      codes = self.model.encode(inp, bandwidth=self.cfg.bandwidth, return_dict=True).audio_codes
    return codes[0].cpu().numpy()

  def tokens(self, audio: np.ndarray) -> np.ndarray:
    """ "windowed": windows of ``window_samples`` (hop-aligned), each encoded with
    ``context_samples`` of left context, those of equal length ``batch_windows`` per call;
    "whole": the file in one pass."""
    x = _as_audio(audio)
    n = num_tokens(len(x), self.hop)
    if self.cfg.mode == "whole":
      seconds = len(x) / self.sample_rate
      if seconds > self.cfg.whole_max_seconds:
        raise ValueError(
          f"{seconds:.0f} s of audio is over the EnCodec teacher's whole_max_seconds="
          f"{self.cfg.whole_max_seconds:g} for one pass; raise it (memory grows with the file) or "
          "encode in windows (mode=windowed)"
        )
      with _torch_threads(self.cfg.num_threads):
        codes = _fit_length(self._encode(x), n) if len(x) else np.empty((self.num_codebooks, 0))
      return _check_tokens(codes.astype(np.int16), self.num_codebooks, self.codebook_size, n)
    codes = np.empty((self.num_codebooks, n), np.int16)
    win, ctx = self.cfg.window_samples, self.cfg.context_samples
    by_length: dict[int, list[tuple[int, int, int]]] = {}  # length -> (first, start, stop)
    for start in range(0, len(x), win):
      stop, first = min(start + win, len(x)), max(0, start - ctx)
      by_length.setdefault(stop - first, []).append((first, start, stop))
    with _torch_threads(self.cfg.num_threads):
      for length, windows in sorted(by_length.items()):
        for b in range(0, len(windows), self.cfg.batch_windows):
          batch = windows[b : b + self.cfg.batch_windows]
          encoded = self._encode_batch(np.stack([x[f : f + length] for f, _, _ in batch]))
          for c, (first, start, stop) in zip(encoded, batch):
            t0, t1 = start // self.hop, num_tokens(stop, self.hop)
            codes[:, t0:t1] = _fit_length(c[:, (start - first) // self.hop :], t1 - t0)
    return _check_tokens(codes, self.num_codebooks, self.codebook_size, n)

  def config(self) -> dict[str, Any]:
    import transformers  # pylint: disable=g-import-not-at-top

    return {
      **self._layout(),
      "source": self.source,
      "seed": self.seed,
      "revision": self.revision,
      "weights_sha256": self.weights_sha256,
      "bandwidth": self.cfg.bandwidth,
      "settings": dataclasses.asdict(self.cfg),
      "transformers_version": transformers.__version__,
    }

  def save(self, directory: str | os.PathLike) -> None:
    _write_json(directory, {"format_version": FORMAT_VERSION, **self.config()})

  @classmethod
  def load(cls, directory: str | os.PathLike, *, device: str | None = None) -> "EncodecTeacher":
    """Rebuild from teacher.json (weights are re-read from ``source``; ``device`` overrides the
    saved one)."""
    d = read_teacher_json(directory)
    if d.get("name") != cls.name:
      raise ValueError(f"{directory}: saved teacher is {d.get('name')!r}, not {cls.name!r}")
    cfg = EncodecTeacherConfig(**d["settings"])
    if device is not None:
      cfg = dataclasses.replace(cfg, device=device)
    if d["seed"] is not None and d["source"] == f"random_init({d['seed']})":
      return cls.random_init(d["seed"], config=cfg)
    teacher = cls.from_pretrained(d["source"], revision=d.get("revision"), config=cfg)
    if d.get("weights_sha256") and teacher.weights_sha256 != d["weights_sha256"]:
      raise ValueError(
        f"{d['source']}: model.safetensors changed since the teacher was saved (sha256 mismatch)"
      )
    return teacher


# ----------------------------------------------------------------------------------------------
# Factory: every teacher is built by make_teacher (load_or_make_teacher: built once, then loaded)
# ----------------------------------------------------------------------------------------------

TEACHERS: dict[str, type[Teacher]] = {"kmeans": KMeansTeacher, "encodec": EncodecTeacher}


def make_teacher(name: str, **kwargs: Any) -> Teacher:
  """Build a teacher by name.

  "kmeans": ``audios=`` (iterable of (file id, (samples,) float32) pairs, or bare arrays) or
  ``sample=`` (a ``frame_sample.FrameSample``), ``config=KMeansConfig(...)``, ``seed=`` -> fitted.
  "encodec": ``source=`` folder or hub id (and ``revision=``), or ``seed=`` alone for an untrained
  model; ``config=EncodecTeacherConfig(...)``.
  """
  if name == "kmeans":
    if "sample" in kwargs:
      return KMeansTeacher.fit_sample(kwargs.pop("sample"), **kwargs)
    if "audios" not in kwargs:
      raise ValueError(
        "the kmeans teacher must be fitted: make_teacher('kmeans', audios=..., config=..., "
        "seed=...)"
      )
    return KMeansTeacher.fit(kwargs.pop("audios"), **kwargs)
  if name == "encodec":
    source, seed = kwargs.pop("source", None), kwargs.pop("seed", None)
    if source is not None and seed is not None:
      raise ValueError(
        "make_teacher('encodec'): give source= (pretrained) or seed= (random init), not both"
      )
    if source is not None:
      return EncodecTeacher.from_pretrained(source, **kwargs)
    if seed is None:
      raise ValueError(
        "make_teacher('encodec') needs source= (a folder or hub id with safetensors weights), "
        "or seed= for an untrained test model"
      )
    return EncodecTeacher.random_init(seed, **kwargs)
  raise ValueError(f"unknown teacher {name!r}; choose from {sorted(TEACHERS)}")


def load_teacher(directory: str | os.PathLike) -> Teacher:
  """The teacher saved in ``directory`` (reads teacher.json and dispatches on its name)."""
  name = read_teacher_json(directory).get("name")
  if name not in TEACHERS:
    raise ValueError(f"{os.path.join(directory, TEACHER_JSON)}: unknown teacher {name!r}")
  return TEACHERS[name].load(directory)


def _check_saved_matches(
  teacher: Teacher, directory: str | os.PathLike, name: str, config: Any
) -> None:
  """Refuse a saved teacher that is not the one asked for (another name or k-means settings)."""
  if teacher.name != name:
    raise ValueError(
      f"{directory} holds a saved {teacher.name!r} teacher, not the requested "
      f"{name!r} one; use a new output folder or delete it"
    )
  if (
    isinstance(teacher, KMeansTeacher)
    and isinstance(config, KMeansConfig)
    and (teacher.cfg != config)
  ):
    raise ValueError(
      f"{directory} holds a k-means teacher fitted with other settings "
      f"({teacher.num_codebooks} x {teacher.codebook_size}, asked for "
      f"{config.num_codebooks} x {config.codebook_size}); use a new output folder "
      f"or delete it"
    )


def load_or_make_teacher(directory: str | os.PathLike, name: str, **kwargs: Any) -> Teacher:
  """The teacher saved in ``directory``; when there is none yet, ``make_teacher(name, **kwargs)``,
  saved there atomically first. A resumed run thus tokenises with the teacher of the first one.

  A saved teacher of another name (or, for k-means, other ``config=`` settings) is refused. Give
  k-means ``audios=`` as a lazy iterable: it is only consumed when the teacher is fitted."""
  if storage.exists(os.path.join(directory, TEACHER_JSON)):
    teacher = load_teacher(directory)
    _check_saved_matches(teacher, directory, name, kwargs.get("config"))
    return teacher
  teacher = make_teacher(name, **kwargs)
  with atomic_dir(directory, last=TEACHER_JSON) as tmp:
    teacher.save(tmp)
  return teacher
