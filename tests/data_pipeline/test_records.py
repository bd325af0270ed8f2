"""data_pipeline/records.py: the record format and the int16 conversions."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.records import encode_example, from_int16, parse_example, to_int16


def test_example_round_trip():
  audio = np.arange(-500, 500, dtype=np.int16)
  tokens = np.arange(12, dtype=np.int16).reshape(3, 4)
  payload = encode_example(audio, tokens, "album/track é.flac", 960)
  assert payload == encode_example(audio, tokens, "album/track é.flac", 960)  # deterministic bytes
  r = parse_example(payload)
  np.testing.assert_array_equal(r["audio"], audio)
  np.testing.assert_array_equal(r["tokens"], tokens)
  assert (r["source_id"], r["offset"], r["num_samples"], r["num_tokens"], r["num_codebooks"]) == (
    "album/track é.flac",
    960,
    1000,
    4,
    3,
  )


def test_encode_rejects_wrong_dtypes_and_shapes():
  with pytest.raises(ValueError, match="audio must be 1-D int16"):
    encode_example(np.zeros(10, np.float32), np.zeros((1, 1), np.int16), "a", 0)
  with pytest.raises(ValueError, match=r"tokens must be \(codebooks, frames\)"):
    encode_example(np.zeros(10, np.int16), np.zeros(3, np.int16), "a", 0)


def test_int16_conversions():
  x = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], np.float32)
  pcm = to_int16(x)
  assert pcm.dtype == np.int16
  np.testing.assert_array_equal(pcm, [-32768, -32768, -16384, 0, 16384, 32767, 32767])  # clipped
  back = from_int16(pcm)
  assert back.dtype == np.float32
  np.testing.assert_array_equal(back, pcm.astype(np.float32) / 32768)
  np.testing.assert_array_equal(to_int16(from_int16(pcm)), pcm)
