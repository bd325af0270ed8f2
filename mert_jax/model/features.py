"""Frame-level features of every layer (the quantities downstream probes read); the command line
is ``python -m mert_jax.cli.extract``.

``hidden_states`` runs the backbone in float32 on one input and returns (num_layers + 1, frames,
hidden): entry for entry ``transformers.HubertModel(..., output_hidden_states=True).hidden_states``
(spec §5.5). ``windowed_hidden_states`` runs equal windows placed so that together they produce
exactly the whole file's frames (window_starts), several per jitted call. Each window is
normalised and attended on its own (the extractor's GroupNorm, the positional conv and attention
see only the window), so features near window edges differ from a whole-file pass; memory stays
bounded.
``batched_layers`` is the jitted, batched extractor behind both the windows and the probe
(mert_jax/probe): chosen layers, time-averaged or per frame, float32 or float16.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax.model.conv_extractor import num_frames, receptive_field, samples_for
from mert_jax.model.mert import Backbone, check_audio, check_finite


def hidden_states(backbone: Backbone, audio: np.ndarray) -> np.ndarray:
  """(samples,) float audio -> (N + 1, T, D) float32 hidden states (deterministic, no masking)."""
  audio = np.asarray(audio)
  batch = audio[None] if audio.ndim == 1 else audio
  check_audio(batch, backbone.cfg)
  check_finite(batch)
  out = backbone(jnp.asarray(batch, jnp.float32), output_hidden_states=True)
  return np.stack([np.asarray(h[0], np.float32) for h in out.hidden_states])


def window_starts(num_samples: int, cfg, window_seconds: float) -> tuple[list[int], int]:
  """Where the windows of a ``num_samples`` file start (in frames), and the frames each holds.

  Every window has the same length, ``n`` frames of ``frame_stride`` samples plus the
  receptive-field tail, and starts on a frame boundary: window k starts at frame k n, except the
  last, which ends at the file's last frame (it overlaps the one before; only its new frames are
  kept). So every window of every file has one shape: batched, and compiled once. A file shorter
  than one window is one window of its own length."""
  stride, field = cfg.frame_stride, receptive_field(cfg.conv_layers)
  n = max(1, int(window_seconds * cfg.sample_rate - (field - stride)) // stride)
  total = num_frames(num_samples, cfg.conv_layers)
  if total <= n:
    return [0], total
  starts = list(range(0, total - n, n)) + [total - n]
  return starts, n


def windowed_hidden_states(
  backbone: Backbone,
  audio: np.ndarray,
  window_seconds: float,
  extract: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
  """hidden_states over frame-aligned windows of equal length (window_starts), several windows
  per jitted call: the same frame count as one pass, (layers, T, D). ``extract``: a
  ``batched_layers(backbone, pool="none", ...)`` made once for many files (its compiled program
  is reused); default: every layer, float32."""
  cfg = backbone.cfg
  audio = np.asarray(audio, np.float32)
  check_audio(audio[None], cfg)
  check_finite(audio[None])
  starts, n = window_starts(len(audio), cfg, window_seconds)
  stride = cfg.frame_stride
  if len(starts) == 1:
    windows = audio[None]
  else:
    length = samples_for(n, cfg.conv_layers)
    windows = np.stack([audio[s * stride : s * stride + length] for s in starts])
  extract = extract or batched_layers(backbone, pool="none")
  feats = extract(windows)  # (W, layers, n, D)
  parts = [feats[0]]
  for k in range(1, len(starts)):
    new = starts[k] - starts[k - 1]  # frames not in the previous window
    parts.append(feats[k][:, n - new :])
  return np.concatenate(parts, axis=1)


POOLS = ("mean", "none")  # time-average each clip's frames, or keep them


def chosen_layers(cfg, layers: tuple[int, ...] | None) -> tuple[int, ...]:
  """``layers`` (indices into 0..num_layers, HF's order; None: all), checked against the depth."""
  depth = cfg.num_layers + 1
  chosen = tuple(range(depth)) if layers is None else tuple(layers)
  if not chosen or any(not 0 <= i < depth for i in chosen):
    raise ValueError(f"layers={list(chosen)}: choose among 0..{depth - 1} (0: the CNN projection)")
  return chosen


def batch_plan(n: int, batch_size: int) -> list[tuple[int, int]]:
  """(start, size) of the batches ``n`` clips run in: full batches, then the rest in descending
  powers of two (each size is one compiled program)."""
  plan = [(start, batch_size) for start in range(0, n - n % batch_size, batch_size)]
  start, rest = n - n % batch_size, n % batch_size
  while rest:
    size = 1 << (rest.bit_length() - 1)
    plan.append((start, size))
    start, rest = start + size, rest - size
  return plan


def batched_layers(
  backbone: Backbone,
  *,
  layers: tuple[int, ...] | None = None,
  pool: str = "mean",
  dtype: str = "float32",
  batch_size: int = 8,
) -> Callable[[np.ndarray], np.ndarray]:
  """A function (N, samples) equal-length clips -> the hidden states of ``layers`` (indices into
  0..num_layers, HF's order; None: all), time-averaged (``pool="mean"``: (N, len(layers), D)) or
  per frame (``pool="none"``: (N, len(layers), T, D)), as ``dtype``. One jitted call per
  ``batch_size`` clips (float32 compute; the cast and the pooling happen on the device).

  Clips are never padded: a batch holds clips of one length. The clips left after the full
  batches run in batches of descending powers of two (7 -> 4 + 2 + 1), each size compiled once,
  rather than as a full batch topped up with silence (7 windows of a minute of music in batches of
  6 then cost 12 windows' time). So a clip's features do not depend on its batch: the
  extractor's GroupNorm normalises each clip over its own frames and attention sees only its own
  frames (tests/model/test_features.py checks a batch against one clip at a time). Padding a short
  clip with zeros would change both."""
  if pool not in POOLS:
    raise ValueError(f"pool={pool!r}: choose one of {', '.join(POOLS)}")
  chosen = chosen_layers(backbone.cfg, layers)
  out_dtype = jnp.dtype(dtype)
  graphdef = nnx.graphdef(backbone)

  @jax.jit
  def run(state: nnx.State, audio: jax.Array) -> jax.Array:
    out = nnx.merge(graphdef, state)(audio, output_hidden_states=True)
    hs = jnp.stack([out.hidden_states[i].astype(jnp.float32) for i in chosen], axis=1)
    return (hs.mean(axis=2) if pool == "mean" else hs).astype(out_dtype)

  def extract(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips, np.float32)
    check_audio(clips, backbone.cfg)
    state = nnx.state(backbone)  # the module's weights now (the in-training probe updates them)
    parts = []
    with jax.default_matmul_precision("highest"):
      for start, size in batch_plan(len(clips), batch_size):
        parts.append(np.asarray(run(state, jnp.asarray(clips[start : start + size]))))
    return np.concatenate(parts)

  return extract
