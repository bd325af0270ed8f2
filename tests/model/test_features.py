"""hidden_states and windowed_hidden_states (the library behind mert_jax.cli.extract): layout,
float32 output from a bf16 model, input checks, and the window placement."""

import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.config import model_config
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.features import (
  batched_layers,
  hidden_states,
  window_starts,
  windowed_hidden_states,
)
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
  # jitted windows against an eager pass: equal up to float rounding
  np.testing.assert_allclose(feats[:, per_window : 2 * per_window], second, atol=1e-5)


def test_a_window_longer_than_the_clip_is_the_whole_file_computation(
  backbone, music: np.ndarray
) -> None:
  np.testing.assert_allclose(
    windowed_hidden_states(backbone, music[:30000], 10.0),
    hidden_states(backbone, music[:30000]),
    atol=1e-5,
  )


def test_the_last_window_ends_at_the_file_end_and_keeps_only_new_frames(backbone, music):
  """Every window has one length; the last overlaps the one before and contributes its own last
  frames: those equal hidden_states of its samples."""
  cfg = backbone.cfg
  audio = music[: 2 * 24000 + 777]
  starts, n = window_starts(len(audio), cfg, 1.5)
  total = num_frames(len(audio), cfg.conv_layers)
  assert starts == [0, total - n] and n == 112
  feats = windowed_hidden_states(backbone, audio, 1.5)
  last = hidden_states(backbone, audio[starts[-1] * 320 : starts[-1] * 320 + (n - 1) * 320 + 400])
  new = total - n  # frames after the first window
  np.testing.assert_allclose(feats[:, n:], last[:, n - new :], rtol=1e-5, atol=1e-5)


def test_a_batch_equals_one_clip_at_a_time_and_padding_would_not(backbone, music):
  """batched_layers: a clip's features do not depend on its batch (no padding: one length per
  batch; the rest after full batches in powers of two), pooled or per frame. A clip padded with
  zeros to a longer length, which this project never does, changes its features (GroupNorm and
  attention see the zeros)."""
  clips = np.stack([music[i * 9000 : i * 9000 + 9000] for i in range(3)])
  per_frame = batched_layers(backbone, pool="none", batch_size=2)(clips)  # batches of 2 and 1
  assert per_frame.shape == (3, 3, num_frames(9000, backbone.cfg.conv_layers), 32)
  for i in range(3):
    np.testing.assert_allclose(per_frame[i], hidden_states(backbone, clips[i]), atol=2e-5)
  pooled = batched_layers(backbone, layers=(0, 2), dtype="float16", batch_size=4)(clips)  # 2 + 1
  assert pooled.shape == (3, 2, 32) and pooled.dtype == np.float16
  np.testing.assert_allclose(pooled, per_frame[:, (0, 2)].mean(axis=2), atol=2e-3)
  padded = np.pad(clips[0], (0, 4500))
  frames = per_frame.shape[2]
  moved = hidden_states(backbone, padded)[:, :frames]
  assert np.max(np.abs(moved - per_frame[0])) > 1e-2


def test_the_batches_cover_every_clip_once_without_filler() -> None:
  from mert_jax.model.features import batch_plan

  assert batch_plan(7, 6) == [(0, 6), (6, 1)]
  assert batch_plan(23, 8) == [(0, 8), (8, 8), (16, 4), (20, 2), (22, 1)]
  assert batch_plan(16, 8) == [(0, 8), (8, 8)] and batch_plan(0, 8) == []
  for n in range(40):
    plan = batch_plan(n, 6)
    assert [s for s, _ in plan] == list(np.cumsum([0] + [z for _, z in plan])[:-1])
    assert sum(z for _, z in plan) == n and all(z <= 6 for _, z in plan)


def test_batched_layers_refuses_bad_options(backbone):
  with pytest.raises(ValueError, match=r"layers=\[5\]: choose among 0..2"):
    batched_layers(backbone, layers=(5,))
  with pytest.raises(ValueError, match="pool='max': choose one of mean, none"):
    batched_layers(backbone, pool="max")


def test_extraction_reads_the_module_weights_at_each_call(backbone, music):
  """The in-training probe updates a model in place and calls the same extractor."""
  from flax import nnx

  model = create_model(model_config("tiny", dtype="float32"), seed=3).backbone
  extract = batched_layers(model, batch_size=1)
  before = extract(music[None, :9000])
  nnx.update(model, nnx.state(backbone))
  np.testing.assert_allclose(
    extract(music[None, :9000]), batched_layers(backbone, batch_size=1)(music[None, :9000])
  )
  assert not np.allclose(before, extract(music[None, :9000]))
