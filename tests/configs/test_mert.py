"""configs/mert.py: every variant builds, with the pinned parameter counts (tests/expected.py),
the tiny variant's real shape, and the published recipes' numbers."""

import re

import pytest

from configs import mert as mert_config
from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax import recipe
from mert_jax.model.mert import abstract_model, count_params
from tests.expected import (
  BACKBONE_PARAMS,
  SMALL_RECIPE_TOTAL_PARAMS,
  TINY_RECIPE_TOTAL_PARAMS,
  TOTAL_PARAMS,
)


@pytest.mark.parametrize("variant", ["tiny", "small", "95m", "330m", "1b"])
def test_variant_builds(variant: str) -> None:
  c = mert_config.get_config(variant)
  cfg = recipe.model_config_from(c)
  recipe.objective_config_from(c)
  model = abstract_model(cfg)
  assert count_params(model.backbone) == BACKBONE_PARAMS[variant]
  recipe_totals = {"tiny": TINY_RECIPE_TOTAL_PARAMS, "small": SMALL_RECIPE_TOTAL_PARAMS}
  total = recipe_totals.get(variant, TOTAL_PARAMS[variant])
  assert count_params(model) == total


def test_the_learning_recipe_is_small_with_bestrq_and_needs_its_cqt_statistics() -> None:
  c = mert_config.get_config("small_rq")
  small = mert_config.get_config("small")
  assert c.model.to_dict() == small.model.to_dict() and c.total_steps == small.total_steps
  assert (c.objective.targets, c.objective.cqt_target, c.objective.mixup_prob) == (
    "bestrq",
    "log_standardised",
    0.0,
  )
  with pytest.raises(ValueError, match="needs objective.target_stats=FILE.npz"):
    recipe.objective_config_from(c)
  c.objective.target_stats = "stats.npz"
  assert recipe.objective_config_from(c).targets == "bestrq"
  assert count_params(abstract_model(recipe.model_config_from(c))) == SMALL_RECIPE_TOTAL_PARAMS


def _glance(variant: str) -> str:
  """The line(s) of configs/mert.py's "Recipes at a glance" summary for ``variant``."""
  doc = mert_config.__doc__.split("Recipes at a glance")[1]
  block = re.search(rf"^  {variant}\s*:(.*?)(?=^  \w+\s*:|\Z)", doc, flags=re.M | re.S)
  assert block, f"no {variant} line in the summary"
  return " ".join(block.group(1).split())


def _number(text: str) -> float:
  return float(text.replace(",", "").replace("k", "e3"))


@pytest.mark.parametrize("variant", ["95m", "330m"])
def test_the_published_recipes_are_what_the_summary_says(variant: str) -> None:
  """The docstring's summary of the published recipes (spec §4) and the config agree, read from
  the summary's own words: a recipe changed in one place and not the other fails here."""
  c, said = mert_config.get_config(variant), _glance(variant)
  lr = re.search(r"lr ([\d.e-]+)", said)
  assert lr and c.optimizer.lr == float(lr.group(1))
  clip = re.search(r"clip ([\d.]+)", said)
  assert clip and c.optimizer.clip_norm == float(clip.group(1))
  assert c.model.layer_norm_first == ("pre-LN" in said) != ("post-LN" in said)
  assert (c.model.attention_relax > 0) == ("attention relaxation" in said)
  crop = re.search(r"\(([\d,]+) samples\)", said)
  assert crop and c.crop_samples == _number(crop.group(1))
  if warm := re.search(r"warm-up (\d+k?)", said):
    assert c.optimizer.warmup_steps == _number(warm.group(1))
  if decay := re.search(r"decay to 0 at (\d+k?)", said):
    assert c.total_steps == _number(decay.group(1))
  accum = re.search(r"(\d+)-step gradient accumulation", said)
  assert c.optimizer.grad_accum_steps == (int(accum.group(1)) if accum else 1)
  if mixup := re.search(r"mixup segments up to ([\d.]+) s", said):
    assert c.objective.mixup_max_len == float(mixup.group(1)) * SAMPLE_RATE


@pytest.mark.parametrize("variant", mert_config.VARIANTS)
def test_every_crop_is_long_enough_for_the_cqt_and_whole_frames(variant: str) -> None:
  """The CQT target needs clips of at least half its lowest kernel (1.05 s, cqt.py); a crop is a
  whole number of 320-sample label frames."""
  c = mert_config.get_config(variant)
  assert c.crop_samples >= 25_230 and c.crop_samples % 320 == 0


def test_every_variant_is_a_recipe_and_names_only_existing_fields(monkeypatch) -> None:
  assert set(mert_config.RECIPES) == set(mert_config.VARIANTS)
  assert set(mert_config.EXTENDS) <= set(mert_config.VARIANTS)
  assert set(mert_config.EXTENDS.values()) <= set(mert_config.VARIANTS)
  small_rq = mert_config.get_config("small_rq")  # small's overrides, then its own
  assert small_rq.total_steps == mert_config.RECIPES["small"]["total_steps"]
  assert small_rq.objective.targets == "bestrq"
  with pytest.raises(ValueError, match="unknown variant '7b'"):
    mert_config.get_config("7b")
  monkeypatch.setitem(mert_config.RECIPES, "tiny", {"optimizer.lrr": 1.0})
  with pytest.raises(KeyError, match="RECIPES names 'optimizer.lrr'"):
    mert_config.get_config("tiny")
