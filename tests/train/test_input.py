"""The trainer's input: a dataset whose teacher, sample rate or label hop differs from the
model's is refused, by check_manifest and by train() before any step."""

import json
import os
import re

import pytest

from mert_jax import recipe
from mert_jax.train.input import check_manifest
from mert_jax.train.loop import train
from tests.train.helpers import tiny

DATA = "/data/other_corpus"


@pytest.fixture(scope="module")
def mcfg():
  return recipe.model_config_from(tiny(DATA))


def manifest_for(mcfg, **over) -> dict:
  return {
    "num_codebooks": mcfg.num_codebooks,
    "codebook_size": mcfg.codebook_size,
    "sample_rate": mcfg.sample_rate,
    "hop": mcfg.frame_stride,
    **over,
  }


def test_check_manifest_accepts_the_models_dataset(mcfg):
  check_manifest(manifest_for(mcfg), mcfg, DATA)


@pytest.mark.parametrize(
  "over,pattern",
  [
    ({"num_codebooks": 4}, r"the teacher has 4 codebooks of 64 codes but the model expects 8 x 64"),
    (
      {"codebook_size": 1024},
      r"the teacher has 8 codebooks of 1024 codes but the model expects 8 x 64",
    ),
    (
      {"sample_rate": 16000},
      r"the data is at 16000 Hz but the model \(model.sample_rate\) expects 24000 Hz",
    ),
    ({"hop": 160}, r"the teacher labels every 160 samples but the model's frame stride .* is 320"),
  ],
)
def test_check_manifest_refuses_another_teacher_rate_or_hop(mcfg, over, pattern):
  with pytest.raises(ValueError, match=re.escape(DATA) + ": " + pattern):
    check_manifest(manifest_for(mcfg, **over), mcfg, DATA)


@pytest.mark.parametrize(
  "field,value,model_value", [("sample_rate", 16000, 24000), ("hop", 160, 320)]
)
def test_trainer_refuses_the_dataset_before_training(data_dir, tmp_path, field, value, model_value):
  """The default corpus with its manifest edited (shards linked, not copied)."""
  bad = tmp_path / "data"
  bad.mkdir()
  for name in os.listdir(data_dir):
    if name != "manifest.json":
      os.symlink(os.path.join(data_dir, name), bad / name)
  manifest = json.loads(open(os.path.join(data_dir, "manifest.json")).read())
  manifest[field] = value
  (bad / "manifest.json").write_text(json.dumps(manifest))
  wd = tmp_path / "run"
  with pytest.raises(ValueError) as err:
    train(tiny(str(bad)), str(wd))
  msg = str(err.value)
  assert str(bad) in msg and str(value) in msg and str(model_value) in msg, msg
  assert not (wd / "metrics.jsonl").exists() and not (wd / "checkpoints").exists()
