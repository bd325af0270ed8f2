"""The long-context recipe (configs/mert.py:95m_long, CPU stand-in tiny_long): 30 s crops continued
from a 5 s-crop workdir with init_from, attention blockwise in the training step; a few steps run on
this CPU with finite losses and the continued weights as their start."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from configs import mert as mert_configs
from data_pipeline import prepare_local
from data_pipeline.example_audio import music_clip
from mert_jax import recipe
from mert_jax.model.attention import choose_impl
from mert_jax.model.conv_extractor import num_frames
from mert_jax.train.loop import train
from tests.data_pipeline.fixtures import prepare_config

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


def test_the_95m_long_recipe_is_the_95m_on_30_s_crops_with_blockwise_attention():
  long, base = mert_configs.get_config("95m_long"), mert_configs.get_config("95m")
  cfg = recipe.model_config_from(long)
  assert long.crop_samples == 30 * 24000
  assert {k: v for k, v in long.model.items() if k != "attention_blockwise_from"} == {
    k: v for k, v in base.model.items() if k != "attention_blockwise_from"
  }
  frames = num_frames(long.crop_samples, cfg.conv_layers)
  assert frames == 2249
  # the step's attention on this CPU (and on TPU): blockwise at the crop's length, not at 5 s
  assert choose_impl(cfg.attention_impl, frames, cfg.attention_blockwise_from, cfg.dtype, True) == (
    "blockwise"
  )
  assert choose_impl(cfg.attention_impl, 374, cfg.attention_blockwise_from, cfg.dtype, True) == (
    "manual"
  )


def test_tiny_long_continues_a_5_s_workdir_on_30_s_crops(trained_workdir, tmp_path):
  """Two 36 s files of real music, prepared in 31 s records (a record must hold a crop; the 5 s
  rests are too short and dropped), one for validation; the first steps of tiny_long from the
  tiny workdir."""
  music = tmp_path / "music"
  music.mkdir()
  for i in range(2):
    sf.write(music / f"song{i}.wav", music_clip(seconds=36.0, offset_seconds=0.0, index=i), 24000)
  data = tmp_path / "data"
  prepare_local.prepare(
    prepare_config(
      music,
      data,
      segment_seconds=31.0,
      valid_fraction=0.5,
      kmeans_codebooks=8,
      kmeans_codebook_size=64,
      kmeans_max_fit_frames=2000,
      workers=1,
    ),
    progress=False,
  )
  source, _ = trained_workdir
  c = mert_configs.get_config("tiny_long")
  c.data.dir, c.init_from, c.data.shuffle_window = str(data), source, 4
  c.num_devices = 2  # one 30 s clip per (fake CPU) device
  c.total_steps = 2
  wd = tmp_path / "run"
  result = train(c, str(wd))
  assert result["state"]["step"] == 2
  logged = [json.loads(line) for line in open(wd / "metrics.jsonl") if '"loss"' in line]
  assert [r["step"] for r in logged] == [1, 2]
  assert all(np.isfinite(r["loss"]) for r in logged)
  assert os.path.exists(wd / "checkpoints" / "2")
