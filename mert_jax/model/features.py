"""Frame-level features of every layer (the quantities downstream probes read); the command line
is ``python -m mert_jax.cli.extract``.

``hidden_states`` runs the backbone in float32 on one input and returns (num_layers + 1, frames,
hidden): entry for entry ``transformers.HubertModel(..., output_hidden_states=True).hidden_states``
(spec §5.5). ``windowed_hidden_states`` runs windows placed so that together they produce exactly
the whole file's frames (window k starts on a frame boundary and holds n frames of 320 samples plus
the 80-sample receptive-field tail). Each window is normalised and attended on its own (the
extractor's GroupNorm, the positional conv and attention see only the window), so features near
window edges differ from a whole-file pass; memory stays bounded.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mert_jax.model.conv_extractor import num_frames, receptive_field
from mert_jax.model.mert import Backbone, check_audio, check_finite


def hidden_states(backbone: Backbone, audio: np.ndarray) -> np.ndarray:
  """(samples,) float audio -> (N + 1, T, D) float32 hidden states (deterministic, no masking)."""
  audio = np.asarray(audio)
  batch = audio[None] if audio.ndim == 1 else audio
  check_audio(batch, backbone.cfg)
  check_finite(batch)
  out = backbone(jnp.asarray(batch, jnp.float32), output_hidden_states=True)
  return np.stack([np.asarray(h[0], np.float32) for h in out.hidden_states])


def windowed_hidden_states(
  backbone: Backbone, audio: np.ndarray, window_seconds: float
) -> np.ndarray:
  """hidden_states over frame-aligned windows, concatenated: the same frame count as one pass."""
  cfg = backbone.cfg
  stride, field = cfg.frame_stride, receptive_field(cfg.conv_layers)
  frames_per_window = max(1, int(window_seconds * cfg.sample_rate - (field - stride)) // stride)
  total = num_frames(len(audio), cfg.conv_layers)
  parts = []
  for first in range(0, total, frames_per_window):
    n = min(frames_per_window, total - first)
    start = first * stride
    end = (
      len(audio) if first + n == total else start + (n - 1) * stride + field
    )  # last window: to the end
    parts.append(hidden_states(backbone, audio[start:end]))
  return np.concatenate(parts, axis=1)
