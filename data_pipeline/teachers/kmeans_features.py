"""The k-means teacher's settings and frame features: MFCC + chroma (or one feature group per
codebook: mfcc, chroma, logmel, pitch) on 1024-sample Hann windows centred on sample
``320 t + 160`` (the middle of token t's hop), and the seeded frame sample the fit reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterable, Iterator

import numpy as np

from data_pipeline import frame_sample
from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.teachers.base import as_audio, num_tokens


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


THREADPOOLS: list[Any] = []  # threadpoolctl's controller, made once


def thread_limit(
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
  if fresh or not THREADPOOLS:
    THREADPOOLS[:] = [ThreadpoolController()]
  return THREADPOOLS[0].limit(limits=num_threads)


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
  x = as_audio(audio)
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
  with thread_limit(cfg.num_threads):
    feats = frame_features(audio, cfg)
  return frame_sample.FrameSample.of_file(cfg.max_fit_frames, feats, seed, file_id)
