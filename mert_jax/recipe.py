"""Recipes: ml_collections ConfigDicts loaded from config files, typed command-line overrides, and
the frozen dataclasses (``mert_jax.config``) that code receives.

A recipe is named as ``--config`` takes it: ``FILE.py:VARIANT`` (``configs/mert.py:95m``),
``NAME:VARIANT`` for a recipe shipped in ``configs/`` (``mert:95m``), or ``VARIANT`` alone for
``configs/mert.py``. Tools load recipes as files, never by importing ``configs`` (``configs``
imports ``mert_jax``, so the dependency runs one way). A relative ``FILE`` is looked up in the
working directory, then beside the installed ``mert_jax`` (the repository root of a source checkout,
site-packages of an installed one, where the ``configs`` package is installed too), so
``configs/mert.py`` works from any directory. Every mistake is a ``RecipeError`` (a ValueError)
whose one-line message names the closest valid file, variant or field.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib.util
import json
import os
from typing import Any

import ml_collections

from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.terminal.cli_help import did_you_mean

# Where ``configs/`` lives beside ``mert_jax/``: the repository root, or site-packages.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES_DIR = "configs"
SWEEPS_DIR = "configs/sweeps"
DEFAULT_RECIPE = "configs/mert.py"


class RecipeError(ValueError):
  """A recipe file, variant, field or value that does not exist or does not parse."""


def resolve_path(path: str) -> str:
  """``path`` itself when it exists, else the same relative path beside the installed package."""
  if os.path.isabs(path) or os.path.exists(path):
    if not os.path.isfile(path):
      raise RecipeError(f"{path}: no such config file")
    return path
  candidate = os.path.join(REPO_ROOT, path)
  if os.path.isfile(candidate):
    return candidate
  known = {
    os.path.relpath(f, root)
    for root in (os.getcwd(), REPO_ROOT)
    for f in glob.glob(os.path.join(root, os.path.dirname(path) or ".", "*.py"))
    if not f.endswith("__init__.py")
  }
  raise RecipeError(
    f"{path}: no such config file (looked in {os.getcwd()} and {REPO_ROOT})"
    + did_you_mean(os.path.normpath(path), sorted(known))
  )


def split_spec(spec: str, folder: str = RECIPES_DIR, default_file: str | None = DEFAULT_RECIPE):
  """``FILE.py:NAME`` -> (file path, name). ``STEM:NAME`` is ``FOLDER/STEM.py``; without a colon,
  ``FILE.py`` has no name (the file's default) and anything else is a name in ``default_file``."""
  path, sep, name = spec.rpartition(":")
  if not sep:
    if spec.endswith(".py") or default_file is None:
      path, name = spec, ""
    else:
      path, name = default_file, spec
  if not path.endswith(".py") and "/" not in path and os.sep not in path:
    path = f"{folder}/{path}.py"
  return path, name


def load_module(path: str, name: str = "recipe"):
  """Executes a config/sweep file and returns it as a module."""
  spec = importlib.util.spec_from_file_location(name, resolve_path(path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """A recipe (``FILE.py:VARIANT``, ``mert:VARIANT``, ``VARIANT``; see the module docstring) ->
  its ConfigDict. A file that lists its ``VARIANTS`` refuses others, naming the closest."""
  path, variant = split_spec(spec)
  module = load_module(path)
  variants = getattr(module, "VARIANTS", None)
  if variant and variants is not None and variant.lower() not in variants:
    raise RecipeError(
      f"unknown variant {variant!r} of {path}{did_you_mean(variant.lower(), variants)} "
      f"(variants: {', '.join(variants)})"
    )
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
  """The validated ObjectiveConfig of a recipe's ``objective`` block (checked against its model)."""
  ocfg = ObjectiveConfig.from_dict(config.objective.to_dict())
  ocfg.validate(model_config_from(config))
  return ocfg


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(text: str, current: Any, key: str = "") -> Any:
  """The command-line text ``text`` as a value of the field's current type.

  bool accepts true/false/1/0/yes/no/on/off (``bool("false")`` would be True); an int field takes
  a whole float (``1e5``); lists and tuples take Python or JSON literals (``[2,1,1]``,
  ``[["mlp", null]]``); a field that is
  None (an unset placeholder) takes the text as a literal when it parses as one, else as a
  string."""
  if isinstance(current, bool):
    low = text.strip().lower()
    if low in _TRUE or low in _FALSE:
      return low in _TRUE
    raise RecipeError(f"{key}: {text!r} is not a boolean (use true or false)")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError) as e:
    try:  # JSON spells None as null, True as true: accepted as well
      value = json.loads(text)
    except ValueError:
      if current is None:
        return text
      raise RecipeError(f"{key}: cannot parse {text!r} as {type(current).__name__}") from e
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if type(current) is int and isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(current, (list, tuple)):
    if not isinstance(value, (list, tuple)):
      raise RecipeError(f"{key}: {text!r} is not a list (write it as [a,b,...])")
    return list(value) if isinstance(current, list) else tuple(value)
  if current is not None and not isinstance(value, type(current)):
    article = "an" if type(current).__name__[0] in "aeiou" else "a"
    raise RecipeError(f"{key}: {text!r} is not {article} {type(current).__name__}")
  return value


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every settable field of ``config`` as a dotted path (``model.num_layers``), sorted."""
  out = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      out += field_paths(v, f"{prefix}{k}.")
    else:
      out.append(prefix + k)
  return sorted(out)


def lookup(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  """(the ConfigDict holding ``key``, its last name); an unknown or group key is a RecipeError
  naming the closest fields."""
  node = config
  *path, leaf = key.split(".")
  try:
    for p in path:
      node = node[p]
    current = node[leaf]
  except (KeyError, TypeError):
    raise RecipeError(
      f"unknown config field {key!r}"
      + (
        did_you_mean(key, field_paths(config))
        or " (python -m mert_jax.cli.train --list-config lists the fields)"
      )
    ) from None
  if isinstance(current, ml_collections.ConfigDict):
    raise RecipeError(f"{key} is a group of fields; set one of them ({key}.FIELD=VALUE)")
  return node, leaf


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted fields (``model.num_layers``) in place; string values are parsed by the field's
  type."""
  for key, value in overrides.items():
    node, leaf = lookup(config, key)
    current = node[leaf]
    if current is None and node.get_type(leaf) is str:
      current = ""  # an unset string placeholder (data.dir): the text is the value, never a literal
    node[leaf] = parse_value(value, current, key) if isinstance(value, str) else value


def parse_assignments(items: list[str]) -> dict[str, str]:
  """``["a.b=1", "c=[2,1,1]"]`` -> ``{"a.b": "1", "c": "[2,1,1]"}``."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep:
      raise RecipeError(f"{item!r}: overrides are FIELD=VALUE")
    out[key.strip()] = value
  return out
