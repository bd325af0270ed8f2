"""The record format of a prepared dataset: one ``tf.train.Example`` per audio segment.

Features (all in one Example, no TensorFlow needed; protos from tensorflow-datasets):

  audio         bytes  little-endian int16 PCM, mono, at the manifest's sample rate
  tokens        bytes  little-endian int16, (num_codebooks, num_tokens) row-major teacher codes
  source_id     bytes  UTF-8 path of the source file relative to the input folder
  offset        int64  first sample of the segment in the decoded source file
  num_samples   int64  audio length in samples
  num_tokens    int64  tokens per codebook = ceil(num_samples / hop)
  num_codebooks int64
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2
from tensorflow_datasets.proto import tf_feature_pb2 as tf_feature


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float audio in [-1, 1] -> int16 PCM (values beyond full scale are clipped)."""
  return np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype("<i2")


def from_int16(pcm: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 audio in [-1, 1): the inverse of ``to_int16`` up to its rounding."""
  return np.asarray(pcm).astype(np.float32) * np.float32(1 / 32768)


def encode_example(
  audio_int16: np.ndarray, tokens: np.ndarray, source_id: str, offset: int
) -> bytes:
  audio_int16 = np.asarray(audio_int16)
  tokens = np.asarray(tokens)
  if audio_int16.dtype != np.int16 or audio_int16.ndim != 1:
    raise ValueError(f"audio must be 1-D int16, got {audio_int16.dtype} {audio_int16.shape}")
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be (codebooks, frames), got {tokens.shape}")
  b = lambda v: tf_feature.Feature(bytes_list=tf_feature.BytesList(value=[v]))
  i = lambda v: tf_feature.Feature(int64_list=tf_feature.Int64List(value=[int(v)]))
  feats = {
    "audio": b(audio_int16.astype("<i2").tobytes()),
    "tokens": b(tokens.astype("<i2").tobytes()),
    "source_id": b(source_id.encode("utf-8")),
    "offset": i(offset),
    "num_samples": i(audio_int16.shape[0]),
    "num_tokens": i(tokens.shape[1]),
    "num_codebooks": i(tokens.shape[0]),
  }
  example = tf_example_pb2.Example(features=tf_feature.Features(feature=feats))
  return example.SerializeToString(deterministic=True)  # map keys sorted: byte-identical shards


def parse_example(payload: bytes) -> dict[str, Any]:
  """-> {"audio": int16 (num_samples,), "tokens": int16 (K, num_tokens), "source_id", "offset",
  ...}."""
  f = dict(tf_example_pb2.Example.FromString(payload).features.feature)
  n, k, t, offset = (
    f[name].int64_list.value[0] for name in ("num_samples", "num_codebooks", "num_tokens", "offset")
  )
  source_id = f["source_id"].bytes_list.value[0].decode("utf-8")
  audio = np.frombuffer(f["audio"].bytes_list.value[0], "<i2")
  tokens = np.frombuffer(f["tokens"].bytes_list.value[0], "<i2")
  if audio.shape[0] != n or tokens.shape[0] != k * t:
    raise ValueError(
      f"record of {source_id!r}: audio/tokens sizes ({audio.shape[0]}, {tokens.shape[0]}) "
      f"disagree with its header ({n}, {k}x{t})"
    )
  return {
    "audio": audio,
    "tokens": tokens.reshape(k, t),
    "source_id": source_id,
    "offset": offset,
    "num_samples": n,
    "num_tokens": t,
    "num_codebooks": k,
  }
