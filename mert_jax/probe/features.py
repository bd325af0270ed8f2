"""Clip-level features for probing: every layer's hidden states time-averaged over the clip, from
one jitted call per batch of clips; and the handcrafted baseline (time-averaged MFCCs).

Clips of one call have one length (a probe set's clips do), so no clip is padded: the extractor's
GroupNorm normalises each clip over its own frames, and attention sees only its own frames, so a
clip's features do not depend on the batch (the tests check a batch against one clip at a time).
The last batch is filled with silent clips whose outputs are dropped, which keeps one compiled
shape.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax.model.mert import Backbone, check_audio

FeatureFn = Callable[[np.ndarray], np.ndarray]  # (N, samples) float32 -> (N, layers, D) float32


def pooled_layers(backbone: Backbone, batch_size: int = 8) -> FeatureFn:
  """A function (N, samples) -> (N, num_layers + 1, hidden): each layer's hidden states (HF
  semantics: 0 is the feature projection) averaged over the clip's frames, float32."""
  graphdef, state = nnx.split(backbone)

  @jax.jit
  def run(state: nnx.State, audio: jax.Array) -> jax.Array:
    out = nnx.merge(graphdef, state)(audio, output_hidden_states=True)
    return jnp.stack([h.astype(jnp.float32).mean(axis=1) for h in out.hidden_states], axis=1)

  def features(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips, np.float32)
    check_audio(clips, backbone.cfg)
    parts = []
    for start in range(0, len(clips), batch_size):
      batch = clips[start : start + batch_size]
      filled = np.concatenate(
        [batch, np.zeros((batch_size - len(batch), clips.shape[1]), np.float32)]
      )
      parts.append(np.asarray(run(state, jnp.asarray(filled)))[: len(batch)])
    return np.concatenate(parts)

  return features


def mfcc_baseline(clips: np.ndarray, n_mfcc: int = 20) -> np.ndarray:
  """The handcrafted baseline: (N, samples) -> (N, 1, 2 n_mfcc), the mean and standard deviation
  over time of librosa's MFCCs (one "layer")."""
  import librosa  # pylint: disable=g-import-not-at-top

  rows = []
  for x in np.asarray(clips, np.float32):
    m = librosa.feature.mfcc(y=x, sr=SAMPLE_RATE, n_mfcc=n_mfcc)
    rows.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
  return np.stack(rows).astype(np.float32)[:, None]
