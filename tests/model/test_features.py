"""hidden_states and windowed_hidden_states (the library behind mert_jax.cli.extract): layout,
float32 output from a bf16 model, input checks, and the window placement."""

import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.config import model_config
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.features import hidden_states, windowed_hidden_states
from mert_jax.model.mert import create_model


@pytest.fixture(scope="module")
def backbone():
  return create_model(model_config("tiny", dtype="float32"), seed=2).backbone


def test_hidden_states_are_every_layer_in_float32(backbone, music: np.ndarray) -> None:
  cfg = backbone.cfg
  hs = hidden_states(backbone, music[:9000])
  assert hs.dtype == np.float32
  assert hs.shape == (cfg.num_layers + 1, num_frames(9000, cfg.conv_layers), cfg.hidden_size)
  out = backbone(jnp.asarray(music[None, :9000]), output_hidden_states=True)
  np.testing.assert_array_equal(hs[-1], np.asarray(out.last_hidden_state[0]))  # post-LN model
  bf16 = create_model(model_config("tiny", dtype="bfloat16")).backbone
  assert hidden_states(bf16, music[:9000]).dtype == np.float32


def test_hidden_states_name_bad_audio(backbone) -> None:
  with pytest.raises(ValueError, match="has 200 samples; the model needs at least 400"):
    hidden_states(backbone, np.zeros(200, np.float32))
  x = np.zeros(1000, np.float32)
  x[5] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    hidden_states(backbone, x)


@pytest.mark.parametrize("length", [400, 5 * 24000, 2 * 24000 + 777, 36000 + 319, 36000 + 320])
def test_windows_give_the_whole_file_frame_count(backbone, music: np.ndarray, length: int) -> None:
  audio = music[:length]
  feats = windowed_hidden_states(backbone, audio, 1.5)
  cfg = backbone.cfg
  assert feats.shape == (cfg.num_layers + 1, num_frames(length, cfg.conv_layers), cfg.hidden_size)


def test_window_is_hidden_states_of_its_samples(backbone, music: np.ndarray) -> None:
  """Window k starts on a frame boundary: its frames are hidden_states of its own samples."""
  audio = music[: 5 * 24000]
  feats = windowed_hidden_states(backbone, audio, 1.5)
  per_window = (int(1.5 * 24000) - 80) // 320  # 112 frames of 320 samples + 80
  second = hidden_states(backbone, audio[per_window * 320 : 2 * per_window * 320 + 80])
  np.testing.assert_array_equal(feats[:, per_window : 2 * per_window], second)


def test_a_window_longer_than_the_clip_is_the_whole_file_computation(
  backbone, music: np.ndarray
) -> None:
  np.testing.assert_array_equal(
    windowed_hidden_states(backbone, music[:30000], 10.0), hidden_states(backbone, music[:30000])
  )
