"""mert_jax/config.py: unknown fields are refused by name, validate() names the bad field, and the
model agrees with the data contract (data_pipeline/audio_format.py) at every size."""

import json

import pytest

from data_pipeline.audio_format import HOP, SAMPLE_RATE
from data_pipeline.teachers.base import num_tokens
from mert_jax.config import MODEL_SIZES, ModelConfig, ObjectiveConfig, model_config
from mert_jax.model.conv_extractor import num_frames, receptive_field


def test_from_dict_refuses_unknown_fields() -> None:
  with pytest.raises(ValueError, match=r"unknown model config fields \['bogus', 'hiden_size'\]"):
    ModelConfig.from_dict({"hidden_size": 64, "hiden_size": 64, "bogus": 1})
  with pytest.raises(ValueError, match=r"unknown objective config fields \['mask_prb'\]"):
    ObjectiveConfig.from_dict({"mask_prb": 0.5})
  assert ObjectiveConfig.from_dict({"mask_prob": 0.5}).mask_prob == 0.5


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_json_round_trip(size: str) -> None:
  cfg = MODEL_SIZES[size]
  back = ModelConfig.from_dict(json.loads(cfg.to_json()))  # lists back to tuples of tuples
  assert back == cfg and isinstance(back.conv_layers[0], tuple)


@pytest.mark.parametrize(
  "overrides,msg",
  [
    (dict(hidden_size=30), "model.hidden_size=30 is not divisible by model.num_heads=4"),
    (
      dict(pos_conv_groups=5, num_heads=2),
      "model.hidden_size=32 is not divisible by model.pos_conv_groups=5",
    ),
    (dict(extractor_mode="group_norm"), "model.extractor_mode must be 'default' or 'layer_norm'"),
    (dict(attention_impl="flash"), "model.attention_impl must be auto/xla/cudnn/manual/blockwise"),
    (dict(pos_conv_impl="fft"), "model.pos_conv_impl must be auto/einsum/xla"),
    (dict(remat_policy="offload"), "model.remat_policy must be one of"),
    (dict(dtype="int8"), "model.dtype must be float32/bfloat16/float16"),
  ],
)
def test_validate_names_the_field(overrides: dict, msg: str) -> None:
  with pytest.raises(ValueError, match=msg):
    model_config("tiny", **overrides)
  with pytest.raises(ValueError, match=msg):
    MODEL_SIZES["tiny"].replace(**overrides).validate()


def test_unknown_size() -> None:
  with pytest.raises(ValueError, match=r"unknown model size '7b'; choose one of \['1b', '330m'"):
    model_config("7b")
  assert model_config("95M") == MODEL_SIZES["95m"]


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_model_frames_line_up_with_the_teachers_tokens(size: str) -> None:
  """The network's frames (its conv layers, counted as the layers compute them) fall on the data
  pipeline's label grid: one frame per teacher token, the last token or two aside (the receptive
  field's tail), for clips of any length; so the objective's labels are the frames'."""
  cfg = MODEL_SIZES[size]
  assert cfg.frame_stride == HOP  # the product of the conv strides
  for samples in (400, 401, 719, 720, 24_000, 24_321, 120_000, 123_457):
    frames, tokens = num_frames(samples, cfg.conv_layers), num_tokens(samples)
    assert tokens - 2 <= frames <= tokens, (samples, frames, tokens)
  assert num_frames(receptive_field(cfg.conv_layers) - 1, cfg.conv_layers) == 0
  assert cfg.sample_rate / cfg.frame_stride == SAMPLE_RATE / HOP == 75.0
