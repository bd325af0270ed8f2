"""configs/mert.py: every variant builds, with the pinned parameter counts (tests/expected.py),
the tiny variant's real shape, and the published recipes' numbers."""

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


def test_tiny_shape() -> None:
  c = mert_config.get_config("tiny")
  cfg = recipe.model_config_from(c)
  assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.ffn_size) == (32, 2, 4, 64)
  assert (cfg.codebook_size, cfg.num_codebooks, cfg.final_dim) == (64, 8, 16)
  assert c.crop_samples == 2 * SAMPLE_RATE == 48_000
  assert (c.batch_size, c.total_steps) == (8, 200)


def test_recipes() -> None:
  c95, c330 = mert_config.get_config("95m"), mert_config.get_config("330m")
  assert (
    c95.optimizer.lr,
    c95.optimizer.clip_norm,
    c95.crop_samples,
    c95.model.layer_norm_first,
  ) == (5e-4, 10.0, 120_000, False)
  assert (
    c330.optimizer.lr,
    c330.optimizer.clip_norm,
    c330.optimizer.grad_accum_steps,
    c330.model.layer_norm_first,
    c330.model.attention_relax,
  ) == (1.5e-3, 1.0, 8, True, 32.0)
  with pytest.raises(ValueError, match="unknown variant"):
    mert_config.get_config("7b")


def test_every_variant_is_a_recipe_and_names_only_existing_fields(monkeypatch) -> None:
  assert set(mert_config.RECIPES) == set(mert_config.VARIANTS)
  assert set(mert_config.EXTENDS) <= set(mert_config.VARIANTS)
  assert set(mert_config.EXTENDS.values()) <= set(mert_config.VARIANTS)
  small_rq = mert_config.get_config("small_rq")  # small's overrides, then its own
  assert small_rq.total_steps == mert_config.RECIPES["small"]["total_steps"]
  assert small_rq.objective.targets == "bestrq"
  monkeypatch.setitem(mert_config.RECIPES, "tiny", {"optimizer.lrr": 1.0})
  with pytest.raises(KeyError, match="RECIPES names 'optimizer.lrr'"):
    mert_config.get_config("tiny")
