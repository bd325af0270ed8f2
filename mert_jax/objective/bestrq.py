"""Random-projection quantizer targets (BEST-RQ), computed inside the jitted step.

BEST-RQ (Chiu et al., ICML 2022, "Self-supervised learning with random-projection quantizer for
speech recognition") labels each frame with the nearest entry of a frozen random codebook after a
frozen random projection of normalised spectral frames; MusicFM (Won et al., ICASSP 2024) showed
that these targets pretrain music models at least as well as MERT's. What this module follows:

* input frames: log-mel (MusicFM: 128 mels, a 2048-sample window at 24 kHz) stacked to the model's
  75 Hz frame rate (``stack`` mel frames of ``frame_stride / stack`` samples per model frame,
  centred on the model frame's receptive field), or the log of the CQT the objective computes
  anyway (one CQT frame per model frame; octave-aware);
* normalisation: each input dimension is standardised with the corpus's mean and std
  (``bestrq_norm="corpus"``, objective.target_stats; BEST-RQ's and MusicFM's choice), or over the
  clip's own frames (``"clip"``: no statistics needed, but the codes lose the clip's average
  spectrum: on the probe's single notes a bag of codes told the pitch on 12.7 % of test notes,
  against 67.1 % with corpus statistics; measured 2026-12-07, see target_stats.py);
* one quantizer per codebook k: a projection P_k (input dim, ``dim``) drawn Xavier-normal and a
  codebook C_k (``codebook_size``, ``dim``) drawn standard normal, both from
  ``numpy.random.default_rng(seed)``; code = argmax_j <l2norm(x P_k), l2norm(C_k[j])> (the nearest
  code in l2 distance between unit vectors, BEST-RQ's rule);
* everything frozen: drawn once from the seed (``quantizers``), the same on every host, saved with
  the run by the trainer (``save``).

Shapes: audio (B, L) float at ``sample_rate``; codes (B, T, K) int32 with T = the model's frames.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.files.atomic import atomic_write_bytes
from mert_jax.model.conv_extractor import num_frames, receptive_field
from mert_jax.objective import target_stats_file as target_stats

STD_FLOOR = 1e-5  # a constant dimension (silence) standardises to zeros, not NaN
NORM_FLOOR = 1e-12  # l2-normalisation floor


@dataclasses.dataclass(frozen=True)
class Quantizers:
  """The frozen random projections and codebooks of K codebooks."""

  projections: np.ndarray  # (K, input_dim, dim) float32
  codebooks: np.ndarray  # (K, codebook_size, dim) float32, rows of unit length


def input_dim(mcfg: ModelConfig, cfg: ObjectiveConfig) -> int:
  """Entries of one stacked input frame."""
  return cfg.bestrq_mels * cfg.bestrq_stack if cfg.bestrq_input == "mel" else mcfg.cqt_bins


@functools.lru_cache(maxsize=8)
def _draw(k: int, d_in: int, dim: int, size: int, seed: int) -> Quantizers:
  rng = np.random.default_rng(seed)
  # Xavier-normal projection (BEST-RQ): std sqrt(2 / (fan_in + fan_out)).
  proj = rng.normal(0.0, np.sqrt(2.0 / (d_in + dim)), (k, d_in, dim)).astype(np.float32)
  books = rng.normal(0.0, 1.0, (k, size, dim))
  books /= np.linalg.norm(books, axis=-1, keepdims=True)
  return Quantizers(proj, books.astype(np.float32))


def quantizers(mcfg: ModelConfig, cfg: ObjectiveConfig) -> Quantizers:
  """The run's K = model.num_codebooks quantizers of model.codebook_size codes, from the seed."""
  return _draw(
    mcfg.num_codebooks, input_dim(mcfg, cfg), cfg.bestrq_dim, mcfg.codebook_size, cfg.bestrq_seed
  )


def save(path: str, q: Quantizers) -> None:
  """The quantizers as an .npz (the trainer writes WORKDIR/bestrq.npz)."""
  buf = io.BytesIO()
  np.savez(buf, projections=q.projections, codebooks=q.codebooks)
  atomic_write_bytes(path, buf.getvalue())


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """(n_fft // 2 + 1, n_mels) Slaney mel filterbank (librosa's, the reference users trust)."""
  import librosa  # pylint: disable=g-import-not-at-top

  return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T.astype(np.float32)


def mel_frame_starts(t: int, mcfg: ModelConfig, cfg: ObjectiveConfig) -> np.ndarray:
  """(T * stack,) first sample of each mel window (may be negative: zero padding).

  Model frame t sees samples [t s, t s + field) (s = frame stride), centred at t s + field / 2;
  its ``stack`` mel windows are centred at that point +- multiples of s / stack, symmetric."""
  s, field, n = mcfg.frame_stride, receptive_field(mcfg.conv_layers), cfg.bestrq_stack
  hop = s // n
  offsets = (np.arange(n) - (n - 1) / 2) * hop  # window centres relative to the frame centre
  centres = (np.arange(t)[:, None] * s + field / 2 + offsets[None]).reshape(-1)
  return np.round(centres - cfg.bestrq_n_fft / 2).astype(np.int64)


def log_mel_frames(audio: jax.Array, mcfg: ModelConfig, cfg: ObjectiveConfig) -> jax.Array:
  """(B, L) -> (B, T, stack * mels) log-mel power, the ``stack`` windows of each model frame."""
  b, length = audio.shape
  t = num_frames(length, mcfg.conv_layers)
  n_fft = cfg.bestrq_n_fft
  starts = mel_frame_starts(t, mcfg, cfg)
  pad_left = int(max(0, -starts.min()))
  pad_right = int(max(0, starts.max() + n_fft - length))
  x = jnp.pad(audio.astype(jnp.float32), ((0, 0), (pad_left, pad_right)))
  idx = (starts + pad_left)[:, None] + np.arange(n_fft)[None]  # (T * stack, n_fft), static
  window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann (librosa's default)
  frames = x[:, idx] * window  # (B, T * stack, n_fft)
  power = jnp.square(jnp.abs(jnp.fft.rfft(frames, axis=-1)))
  mel = jnp.einsum(
    "bfn,nm->bfm",
    power,
    mel_filters(mcfg.sample_rate, n_fft, cfg.bestrq_mels),
    precision=jax.lax.Precision.HIGHEST,
  )
  return target_stats.log_floor(mel).reshape(b, t, cfg.bestrq_stack * cfg.bestrq_mels)


def standardise_over_time(x: jax.Array) -> jax.Array:
  """(B, T, d) -> each clip's dimensions at zero mean and unit variance over its T frames."""
  mean = jnp.mean(x, axis=1, keepdims=True)
  std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=1, keepdims=True))
  return (x - mean) / jnp.maximum(std, STD_FLOOR)


def quantize(x: jax.Array, q: Quantizers) -> jax.Array:
  """(B, T, d_in) normalised frames -> (B, T, K) int32 codes, nearest unit codebook entry."""
  z = jnp.einsum("btd,kde->btke", x, q.projections, precision=jax.lax.Precision.HIGHEST)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), NORM_FLOOR)
  sim = jnp.einsum("btke,kce->btkc", z, q.codebooks, precision=jax.lax.Precision.HIGHEST)
  return jnp.argmax(sim, axis=-1).astype(jnp.int32)


def codes(
  audio: jax.Array, cqt: jax.Array | None, mcfg: ModelConfig, cfg: ObjectiveConfig
) -> jax.Array:
  """BEST-RQ codes (B, T, K) of clean audio (B, L); ``cqt``: its (B, >= T, bins) CQT magnitudes
  (read with ``bestrq_input="cqt"``)."""
  t = num_frames(audio.shape[1], mcfg.conv_layers)
  if cfg.bestrq_input == "mel":
    x, key = log_mel_frames(audio, mcfg, cfg), "mel"
  else:
    x, key = target_stats.log_floor(cqt[:, :t].astype(jnp.float32)), "cqt"
  if cfg.bestrq_norm == "corpus":
    stats = target_stats.load(cfg.target_stats)
    reps = x.shape[-1] // stats[f"{key}_mean"].shape[0]  # the stacked mel windows share them
    x = (x - np.tile(stats[f"{key}_mean"], reps)) / np.tile(stats[f"{key}_std"], reps)
  else:
    x = standardise_over_time(x)
  return jax.lax.stop_gradient(quantize(x, quantizers(mcfg, cfg)))
