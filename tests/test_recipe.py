"""mert_jax/recipe.py: typed command-line overrides, recipe files found from any directory, and
config dataclasses round-tripping through ConfigDicts."""

import ml_collections
import pytest

from mert_jax import recipe
from mert_jax.config import MODEL_SIZES, ObjectiveConfig


@pytest.mark.parametrize(
  "text,want",
  [
    ("false", False),
    ("False", False),
    ("0", False),
    ("no", False),
    ("off", False),
    ("true", True),
    ("TRUE", True),
    ("1", True),
    ("yes", True),
    (" on ", True),
  ],
)
def test_bool_text(text: str, want: bool) -> None:
  assert recipe.parse_value(text, True, "model.remat") is want
  assert recipe.parse_value(text, False, "model.remat") is want


def test_remat_false_is_false() -> None:
  """``bool("false")`` is True: the override must parse the text, not cast it."""
  c = recipe.load_config("configs/mert.py:1b")
  assert c.model.remat is True
  recipe.apply_overrides(c, {"model.remat": "false"})
  assert c.model.remat is False
  assert recipe.model_config_from(c).remat is False


def test_list_of_ints_int_to_float_strings_and_placeholders() -> None:
  c = recipe.load_config("configs/mert.py:tiny")
  recipe.apply_overrides(
    c,
    {
      "mesh": "[2,1,1]",
      "optimizer.lr": "1",
      "model.dtype": "float32",
      "data.dir": "/data/prepared",
      "model.num_layers": "3",
      "model.feature_grad_mult": "1e-1",
    },
  )
  assert c.mesh == [2, 1, 1] and all(type(v) is int for v in c.mesh)
  assert type(c.optimizer.lr) is float and c.optimizer.lr == 1.0
  assert c.model.dtype == "float32" and c.data.dir == "/data/prepared"
  assert c.model.num_layers == 3 and c.model.feature_grad_mult == 0.1
  recipe.apply_overrides(c, {"total_steps": "1e5"})  # a whole float for an int field
  assert c.total_steps == 100_000 and type(c.total_steps) is int
  recipe.apply_overrides(c, {"model.num_layers": 4, "mesh": [1, 2, 1]})  # values, not text
  assert c.model.num_layers == 4 and c.mesh == [1, 2, 1]
  fresh = recipe.load_config("configs/mert.py:tiny")  # data.dir: an unset str placeholder
  recipe.apply_overrides(fresh, {"data.dir": "123"})
  assert fresh.data.dir == "123"  # a path that reads as a literal stays text


@pytest.mark.parametrize(
  "key,text,msg",
  [
    ("model.nope", "1", "unknown config field 'model.nope'"),
    (
      "nope.num_layers",
      "1",
      "unknown config field 'nope.num_layers'; did you mean model.num_layers",
    ),
    ("optimizer.learning_rate", "1", "'optimizer.learning_rate'; did you mean optimizer.lr\\?$"),
    ("learning_rate", "1", "'learning_rate' \\(python -m mert_jax.cli.train --list-config lists"),
    ("seed.x", "1", "unknown config field 'seed.x'"),
    ("model", "1", "model is a group of fields; set one of them \\(model.FIELD=VALUE\\)"),
    ("model.remat", "maybe", "model.remat: 'maybe' is not a boolean"),
    ("model.num_layers", "2.5", "model.num_layers: '2.5' is not an int"),
    ("model.num_layers", "two", "model.num_layers: cannot parse 'two' as int"),
    ("mesh", "3", "mesh: '3' is not a list"),
  ],
)
def test_bad_override_names_the_field(key: str, text: str, msg: str) -> None:
  c = recipe.load_config("configs/mert.py:tiny")
  with pytest.raises(recipe.RecipeError, match=msg):
    recipe.apply_overrides(c, {key: text})


def test_parse_assignments() -> None:
  got = recipe.parse_assignments(["a.b=1", "c=[2,1,1]", "data.dir=gs://b/x=y", "s="])
  assert got == {"a.b": "1", "c": "[2,1,1]", "data.dir": "gs://b/x=y", "s": ""}
  with pytest.raises(recipe.RecipeError, match="'model.remat': overrides are FIELD=VALUE"):
    recipe.parse_assignments(["model.remat"])


def test_load_config_from_another_directory(tmp_path, monkeypatch) -> None:
  monkeypatch.chdir(tmp_path)
  c = recipe.load_config("configs/mert.py:tiny")
  assert c.variant == "tiny" and c.model.hidden_size == 32
  assert recipe.load_config("330m").variant == "330m"  # configs/mert.py by default
  assert recipe.load_config("mert:1b").variant == "1b"  # a recipe of configs/ by name
  assert recipe.load_module("configs/sweeps/model_size.py").get_sweep("full")[0][0] == "95m"
  with pytest.raises(recipe.RecipeError, match="configs/nope.py: no such config file"):
    recipe.load_config("configs/nope.py:tiny")
  with pytest.raises(recipe.RecipeError, match=r"configs/mrt.py: .*; did you mean configs/mert.py"):
    recipe.load_config("mrt:tiny")
  (tmp_path / "dir.py").mkdir()  # a folder is no config file
  with pytest.raises(recipe.RecipeError, match="^dir.py: no such config file$"):
    recipe.load_config("dir.py:tiny")


@pytest.mark.parametrize(
  "spec,want",
  [
    ("configs/mert.py:95m", ("configs/mert.py", "95m")),
    ("mert:95m", ("configs/mert.py", "95m")),
    ("95m", ("configs/mert.py", "95m")),
    ("configs/mert.py", ("configs/mert.py", "")),
    ("/abs/my.py:x", ("/abs/my.py", "x")),
  ],
)
def test_split_spec(spec: str, want: tuple[str, str]) -> None:
  assert recipe.split_spec(spec) == want


def test_sweep_specs() -> None:
  split = lambda s: recipe.split_spec(s, recipe.SWEEPS_DIR, default_file=None)
  assert split("model_size:tiny") == ("configs/sweeps/model_size.py", "tiny")
  assert split("configs/sweeps/model_size.py") == ("configs/sweeps/model_size.py", "")


def test_unknown_variant_names_the_closest() -> None:
  with pytest.raises(
    recipe.RecipeError,
    match=r"^unknown variant '95n' of configs/mert.py; did you mean 95m\? \(variants: tiny, small, "
    r"95m, 330m, 1b, small_rq, 95m_long, tiny_long\)$",
  ):
    recipe.load_config("configs/mert.py:95n")
  assert recipe.load_config("95M").variant == "95m"


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_dataclasses_round_trip_through_config_dicts(size: str) -> None:
  cfg = MODEL_SIZES[size]
  c = ml_collections.ConfigDict(
    {
      "model": recipe.dataclass_to_config_dict(cfg),
      "objective": recipe.dataclass_to_config_dict(ObjectiveConfig()),
    }
  )
  assert isinstance(c.model.conv_layers, list)  # ConfigDicts store lists
  assert recipe.model_config_from(c) == cfg
  assert recipe.objective_config_from(c) == ObjectiveConfig()


@pytest.mark.parametrize(
  "text",
  [
    "[['batch', ['data', 'fsdp']], ['mlp', None]]",  # Python
    '[["batch", ["data", "fsdp"]], ["mlp", null]]',  # JSON
  ],
)
def test_rules_take_python_or_json_literals(text: str) -> None:
  c = recipe.load_config("configs/mert.py:tiny")
  recipe.apply_overrides(c, {"rules": text})
  assert [list(r) for r in c.rules] == [["batch", ["data", "fsdp"]], ["mlp", None]]
  with pytest.raises(recipe.RecipeError, match="rules: cannot parse"):
    recipe.apply_overrides(c, {"rules": "[[mlp, nope"})
