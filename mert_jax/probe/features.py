"""Features for probing, per extractor: ``(clips, pool) -> features``, with ``pool="mean"`` for
clip-level tasks, (N, layers, D), and ``pool="none"`` for frame-level ones (beat),
(N, layers, T, D) on the model's 75 Hz frame grid.

The model's layers come from mert_jax.model.features.batched_layers (jitted, several clips per
call, no padding: the same extractor as ``python -m mert_jax.cli.extract``). The handcrafted
baseline is librosa's MFCCs: mean and standard deviation over the clip, or per frame with their
deltas.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from mert_jax.config import MERT_CONV_LAYERS
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.features import batched_layers
from mert_jax.model.mert import Backbone

# (N, samples) float32 clips, pool ("mean" | "none") -> (N, layers, [T,] D)
Extractor = Callable[[np.ndarray, str], np.ndarray]
N_MFCC = 20  # MFCC coefficients of the baseline
MFCC_FFT = 1024  # its analysis window (samples at 24 kHz, 43 ms)


# Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm adds this to the variance.
NORMALIZE_EPS = 1e-7


def normalize_clips(clips: np.ndarray) -> np.ndarray:
  """Each clip to zero mean and unit variance, as a Hugging Face processor with
  ``do_normalize: true`` does ((x - mean) / sqrt(var + 1e-7))."""
  clips = np.asarray(clips, np.float32)
  mean = clips.mean(axis=-1, keepdims=True)
  var = clips.var(axis=-1, keepdims=True)
  return (clips - mean) / np.sqrt(var + NORMALIZE_EPS)


def model_layers(
  backbone: Backbone, batch_size: int = 8, dtype: str = "float32", normalize: bool = False
) -> Extractor:
  """Every layer of ``backbone`` (HF order: 0 is the feature projection), pooled or per frame;
  ``normalize``: each clip normalised first (MARBLE's ``processor_normalize``)."""
  fns = {
    pool: batched_layers(backbone, pool=pool, dtype=dtype, batch_size=batch_size)
    for pool in ("mean", "none")
  }
  return lambda clips, pool: fns[pool](normalize_clips(clips) if normalize else clips)


def mfcc_baseline(clips: np.ndarray, pool: str = "mean") -> np.ndarray:
  """The handcrafted baseline, one "layer": for ``pool="mean"`` (N, 1, 2 N_MFCC), the mean and
  standard deviation over time of librosa's MFCCs; for ``pool="none"`` (N, 1, T, 2 N_MFCC), each
  model frame's MFCCs and their deltas (librosa frames every 320 samples, centred 8 ms before the
  model's frames)."""
  import librosa  # pylint: disable=g-import-not-at-top

  rows = []
  for x in np.asarray(clips, np.float32):
    m = librosa.feature.mfcc(y=x, sr=SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=MFCC_FFT, hop_length=HOP)
    if pool == "mean":
      rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    else:
      frames = num_frames(len(x), MERT_CONV_LAYERS)
      both = np.concatenate([m, librosa.feature.delta(m)])[:, :frames]
      rows.append(both.T)
  return np.stack(rows).astype(np.float32)[:, None]
