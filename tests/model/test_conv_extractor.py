"""The waveform extractor's frame count: the closed formula, and the model's output length."""

import jax.numpy as jnp
import numpy as np

from mert_jax.config import MODEL_SIZES, model_config
from mert_jax.model import mert as model_lib
from mert_jax.model.conv_extractor import num_frames, receptive_field


def test_num_frames_formula() -> None:
  layers = MODEL_SIZES["95m"].conv_layers
  assert receptive_field(layers) == 400
  for length in list(range(0, 3000, 7)) + [72000, 120000, 122880]:
    want = (length - 400) // 320 + 1 if length >= 400 else 0
    assert num_frames(length, layers) == want
  assert num_frames(120000, layers) == 374 and num_frames(122880, layers) == 383


def test_model_output_length_matches_formula(music: np.ndarray) -> None:
  cfg = model_config("tiny", dtype="float32")
  m = model_lib.create_model(cfg)
  for length in (400, 719, 720, 5000):
    out = m(jnp.asarray(music[:length][None]))
    assert out.last_hidden_state.shape == (1, num_frames(length, cfg.conv_layers), cfg.hidden_size)
