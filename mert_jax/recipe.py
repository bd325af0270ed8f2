"""Recipes: ml_collections ConfigDicts loaded from config files, typed command-line overrides, and
the frozen dataclasses (``mert_jax.config``) that code receives.

A recipe is named ``FILE.py:VARIANT`` (``configs/mert.py:95m``), exactly as ``--config`` takes it;
tools load recipes as files, never by importing ``configs`` (``configs`` imports ``mert_jax``, so
the dependency runs one way). A relative ``FILE`` is looked up in the working directory, then in
the repository root (so ``configs/mert.py`` works from any directory of a source checkout).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Any

import ml_collections

from mert_jax.config import ModelConfig, ObjectiveConfig

# The repository root: where ``configs/`` lives beside ``mert_jax/``.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RECIPE = "configs/mert.py"


def resolve_path(path: str) -> str:
  """``path`` itself when it exists, else the same relative path under the repository root."""
  if os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.join(REPO_ROOT, path)
  if os.path.exists(candidate):
    return candidate
  raise FileNotFoundError(f"{path}: no such config file (looked in {os.getcwd()} and {REPO_ROOT})")


def load_module(path: str, name: str = "recipe"):
  """Executes a config/sweep file and returns it as a module."""
  spec = importlib.util.spec_from_file_location(name, resolve_path(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """``FILE.py:VARIANT`` (or ``VARIANT`` alone for configs/mert.py) -> the recipe's ConfigDict."""
  path, _, variant = spec.rpartition(":") if ":" in spec else (DEFAULT_RECIPE, ":", spec)
  module = load_module(path)
  return module.get_config(variant) if variant else module.get_config()


def dataclass_to_config_dict(dc: Any) -> ml_collections.ConfigDict:
  """A config dataclass as a ConfigDict (tuples of tuples become lists, as ConfigDict stores
  them)."""

  def listify(v):
    return [listify(x) for x in v] if isinstance(v, (tuple, list)) else v

  return ml_collections.ConfigDict({k: listify(v) for k, v in dataclasses.asdict(dc).items()})


def model_config_from(config: ml_collections.ConfigDict) -> ModelConfig:
  """The validated ModelConfig of a recipe's ``model`` block."""
  cfg = ModelConfig.from_dict(config.model.to_dict())
  cfg.validate()
  return cfg


def objective_config_from(config: ml_collections.ConfigDict) -> ObjectiveConfig:
  """The ObjectiveConfig of a recipe's ``objective`` block."""
  return ObjectiveConfig.from_dict(config.objective.to_dict())


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(text: str, current: Any, key: str = "") -> Any:
  """The command-line text ``text`` as a value of the field's current type.

  bool accepts true/false/1/0/yes/no/on/off (``bool("false")`` would be True); lists and tuples
  take Python literals (``[2,1,1]``); a field that is None (an unset placeholder) takes the text
  as a literal when it parses as one, else as a string."""
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in _TRUE or low in _FALSE:
      return low in _TRUE
    raise ValueError(f"{key}: {text!r} is not a boolean (use true or false)")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    if current is None:
      return text
    raise ValueError(f"{key}: cannot parse {text!r} as {type(current).__name__}") from e
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, (list, tuple)):
    if not isinstance(value, (list, tuple)):
      raise ValueError(f"{key}: {text!r} is not a list (write it as [a,b,...])")
    return list(value) if isinstance(current, list) else tuple(value)
  if current is not None and not isinstance(value, type(current)):
    raise ValueError(f"{key}: {text!r} is not a {type(current).__name__}")
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted fields (``model.num_layers``) in place; string values are parsed by the field's
  type."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    try:
      for p in path:
        node = node[p]
      current = node[leaf]
    except KeyError:
      raise ValueError(
        f"unknown config field {key!r}; see configs/mert.py for the fields"
      ) from None
    if current is None and node.get_type(leaf) is str:
      current = ""  # an unset string placeholder (data.dir): the text is the value, never a literal
    node[leaf] = parse_value(value, current, key) if isinstance(value, str) else value


def parse_assignments(items: list[str]) -> dict[str, str]:
  """``["a.b=1", "c=[2,1,1]"]`` -> ``{"a.b": "1", "c": "[2,1,1]"}``."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"{item!r}: overrides are FIELD=VALUE")
    out[key.strip()] = value
  return out
