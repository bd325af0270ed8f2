"""Every config variant builds and gives the documented parameter counts."""

import pytest

from configs import mert as mert_config
from mert_jax import recipe
from mert_jax.model.mert import abstract_model, count_params


@pytest.mark.parametrize("variant,backbone", [("tiny", None), ("95m", 94_371_712), ("330m", 315_428_992),
                                              ("1b", 962_487_680)])
def test_variant_builds(variant, backbone):
  c = mert_config.get_config(variant)
  cfg = recipe.model_config_from(c)
  recipe.objective_config_from(c)
  if backbone is not None:
    assert count_params(abstract_model(cfg).backbone) == backbone


def test_recipes():
  c95, c330 = mert_config.get_config("95m"), mert_config.get_config("330m")
  assert (c95.optimizer.lr, c95.optimizer.clip_norm, c95.crop_samples, c95.model.layer_norm_first) == (5e-4, 10.0, 120_000, False)
  assert (c330.optimizer.lr, c330.optimizer.clip_norm, c330.optimizer.grad_accum_steps, c330.model.layer_norm_first,
          c330.model.attention_relax) == (1.5e-3, 1.0, 8, True, 32.0)
  with pytest.raises(ValueError, match="unknown variant"):
    mert_config.get_config("7b")
