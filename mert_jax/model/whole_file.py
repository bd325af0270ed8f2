"""Hidden states of a whole file in memory that grows linearly with its length, compiled per length
bucket: the quantities of ``transformers.HubertModel(whole clip, output_hidden_states=True)``.

A 10-minute song is 14.4M samples and 45,000 frames. Run as one clip, the first convolution's
output alone is 2.9M x 512 float32 values (5.9 GB) and full attention's scores 8 GB per head. Here:

1. **Front end in chunks.** The extractor's first layer ends in a GroupNorm over the *whole* clip's
   time (``extractor_mode="default"``). A first pass convolves ``chunk_frames`` frames' worth of
   audio at a time and merges each chunk's per-channel mean and squared deviations (Chan et al.'s
   pairwise update, exact in float32 where sums of squares would cancel); a second pass runs every
   chunk through all layers with those statistics. The convolutions are "valid" and every frame's
   receptive field lies inside its chunk's slice of audio (chunks start on frame boundaries and
   carry the 80-sample tail), so the frames equal a pass over the whole clip.
2. **Padding to a bucket.** The audio is zero-padded to the bucket's length; statistics count only
   the real samples' outputs, padded frames are zeroed before the positional convolution (what
   HF's own zero padding of the convolution does past the end) and masked as attention keys, and
   are dropped from the result. Frames of the file therefore do not depend on the bucket.
3. **Encoder with blockwise attention** from ``model.attention_blockwise_from`` frames
   (``attention.py``); the other layers are per frame.

``BUCKET_STEPS`` keep the padding under one chunk or under 25 % of the file, whichever is more,
while a collection of songs compiles a handful of programs (one per bucket), not one per length.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax.model.conv_extractor import num_frames, receptive_field, samples_for
from mert_jax.model.features import chosen_layers
from mert_jax.model.mert import Backbone, check_audio, check_finite

# Bucket sizes in chunks: m * 2^k for m in these (so consecutive buckets differ by <= 25 %); below
# one chunk, a clip's bucket is the chunk divided by a power of two (at least MIN_FRAMES).
BUCKET_STEPS = (4, 5, 6, 7)
MIN_FRAMES = 64  # frames of the smallest bucket (0.85 s at 75 Hz)


def bucket_frames(frames: int, chunk_frames: int) -> int:
  """The padded frame count a ``frames``-long clip runs at: a power-of-two fraction of a chunk
  (>= MIN_FRAMES) below one chunk, else whole chunks rounded up to m * 2^k, m in BUCKET_STEPS."""
  if frames <= chunk_frames:
    size = chunk_frames
    while size // 2 >= max(frames, MIN_FRAMES):
      size //= 2
    return size
  chunks = math.ceil(frames / chunk_frames)
  if chunks <= BUCKET_STEPS[-1]:
    return chunks * chunk_frames
  power = 2 ** (chunks.bit_length() - 3)  # chunks / power lies in [4, 8)
  return min(m * power for m in (*BUCKET_STEPS, 8) if m * power >= chunks) * chunk_frames


def _merge(stats, chunk):
  """Chan et al.'s pairwise merge of (count, mean, M2) per channel."""
  n_a, mean_a, m2_a = stats
  n_b, mean_b, m2_b = chunk
  n = n_a + n_b
  delta = mean_b - mean_a
  safe = jnp.maximum(n, 1.0)
  return n, mean_a + delta * n_b / safe, m2_a + m2_b + jnp.square(delta) * n_a * n_b / safe


def buffer_samples(frames: int, conv_layers) -> int:
  """The padded buffer of a ``frames`` bucket: its frames' samples plus one stride (those of one
  more frame), so a file whose last samples make no whole frame still fits (its first-layer
  outputs count in the GroupNorm)."""
  return samples_for(frames + 1, conv_layers)


def conv_features(
  backbone: Backbone, audio: jax.Array, valid: jax.Array, t: int, chunk: int
) -> jax.Array:
  """(1, buffer_samples(t)) padded audio, ``valid`` real samples (traced) -> (1, t, C) extractor
  features, ``chunk`` frames at a time (t a multiple of ``chunk``); equal to the extractor on the
  real samples alone for every frame they make."""
  cfg = backbone.cfg
  layers_ = backbone.feature_extractor.conv_layers
  stride = cfg.frame_stride
  n_chunks = t // chunk
  span = samples_for(chunk, cfg.conv_layers)  # samples of one chunk's frames
  first_out, first_kernel, first_stride = cfg.conv_layers[0]
  per_frame = stride // first_stride  # first-layer outputs per frame (64 for MERT)
  x = audio[:, :, None]

  def chunk_audio(c):
    return jax.lax.dynamic_slice_in_dim(x, c * chunk * stride, span, axis=1)

  first = layers_[0]
  stats = None
  if first.norm == "group":
    # the first layer's outputs of the real samples: (valid - kernel) // stride + 1
    n_real = jnp.maximum((valid - first_kernel) // first_stride + 1, 0)

    def masked_stats(h, start):
      """(count, mean, M2) of the first layer's outputs of audio ``h`` whose indices (from
      ``start``) are real."""
      y = first.convolve(h).astype(jnp.float32)
      real = ((start + jnp.arange(y.shape[1])) < n_real)[None, :, None]
      n = jnp.sum(real).astype(jnp.float32)
      mean = jnp.sum(jnp.where(real, y, 0.0), axis=1, keepdims=True) / jnp.maximum(n, 1.0)
      m2 = jnp.sum(jnp.where(real, jnp.square(y - mean), 0.0), axis=1, keepdims=True)
      return n, mean, m2

    def chunk_stats(c):
      # the chunk's own outputs; the overlap with the next chunk is counted there
      span_c = (chunk * per_frame - 1) * first_stride + first_kernel
      h = jax.lax.dynamic_slice_in_dim(x, c * chunk * stride, span_c, axis=1)
      return masked_stats(h, c * chunk * per_frame)

    init = (
      jnp.zeros((), jnp.float32),
      jnp.zeros((1, 1, first_out), jnp.float32),
      jnp.zeros((1, 1, first_out), jnp.float32),
    )
    acc = jax.lax.fori_loop(0, n_chunks, lambda c, acc: _merge(acc, chunk_stats(c)), init)
    # the outputs after the last whole frame (up to one stride of samples, real or padding)
    n, mean, m2 = _merge(acc, masked_stats(x[:, t * stride :], t * per_frame))
    stats = (mean, m2 / jnp.maximum(n, 1.0))

  def chunk_features(c):
    h = chunk_audio(c)
    for i, layer in enumerate(layers_):
      h = layer.normalise_with(layer.convolve(h), *stats) if i == 0 and stats else layer(h)
    return h[0]  # (chunk, C)

  feats = jax.lax.map(chunk_features, jnp.arange(n_chunks))  # (n_chunks, chunk, C)
  return feats.reshape(1, n_chunks * chunk, -1)


def encode(
  backbone: Backbone, feats: jax.Array, frames: jax.Array, layers: tuple[int, ...]
) -> jax.Array:
  """(1, T, C) features of which ``frames`` are real -> (len(layers), T, D) float32 hidden states
  (padded frames masked as keys, zeroed before the positional convolution)."""
  padding = (jnp.arange(feats.shape[1]) >= frames)[None]
  x = backbone.feature_projection(feats)
  _, hidden = backbone.encoder(x, padding, deterministic=True, key=None, output_hidden_states=True)
  return jnp.stack([hidden[i][0].astype(jnp.float32) for i in layers])


def whole_file_extractor(
  backbone: Backbone, *, layers: tuple[int, ...] | None = None, chunk_frames: int = 750
) -> Callable[[np.ndarray], np.ndarray]:
  """A function (samples,) audio -> (len(layers), frames, D) float32 hidden states of the whole
  file (HF's order; None: every layer). One compiled program per bucket (``bucket_frames``),
  reused by every file of that bucket; ``chunk_frames`` frames of the front end at a time (750:
  10 s)."""
  cfg = backbone.cfg
  chosen = chosen_layers(cfg, layers)
  graphdef = nnx.graphdef(backbone)

  @jax.jit
  def run(state: nnx.State, audio: jax.Array, valid: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    t = num_frames(audio.shape[1] - cfg.frame_stride, cfg.conv_layers)  # the bucket's frames
    feats = conv_features(model, audio, valid, t, min(chunk_frames, t))
    frames = jnp.maximum((valid - receptive_field(cfg.conv_layers)) // cfg.frame_stride + 1, 0)
    return encode(model, feats, frames, chosen)

  def extract(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    check_audio(audio[None], cfg)
    check_finite(audio[None])
    frames = num_frames(len(audio), cfg.conv_layers)
    padded = bucket_frames(frames, chunk_frames)
    buf = np.zeros((1, buffer_samples(padded, cfg.conv_layers)), np.float32)
    buf[0, : len(audio)] = audio
    with jax.default_matmul_precision("highest"):
      out = run(nnx.state(backbone), jnp.asarray(buf), jnp.asarray(len(audio), jnp.int32))
    return np.asarray(out)[:, :frames]

  extract.compiled_programs = lambda: run._cache_size()  # programs compiled so far (tests)
  return extract
