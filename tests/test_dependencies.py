"""pyproject.toml declares what the code imports, and nothing it does not: every third-party module
imported by the packages (and the tests) belongs to a declared distribution, and every declared
distribution is imported somewhere (or is a stated exception)."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN = {"mert_jax", "data_pipeline", "configs", "tests", "benchmarks"}
# Declared without an import of their own: pulled in for what they provide to another package.
NOT_IMPORTED = {
  "importlib-resources": "tfds builders defined outside tfds need it (code_path)",
  "libtpu": "the TPU compiler jax loads for mert-compile-check (mert_jax/tpu_topology.py)",
  "mert-jax": "this project: the tpu extra includes the gcs extra (mert-jax[gcs])",
  "pytest-xdist": "a pytest plugin (-n 2)",
  "ruff": "the formatter and linter, a command",
  "tensorboard": "the viewer, a command (the tensorboard extra)",
}


def _name(requirement: str) -> str:
  """``"etils[epath]>=1.15"`` -> ``"etils"`` (normalised as PyPI does)."""
  return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)).lower()


def declared() -> set[str]:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  names = {_name(r) for r in project["dependencies"]}
  for extra in project["optional-dependencies"].values():
    names |= {_name(r) for r in extra if not r.startswith("jax[")}
  return names


def imported_modules(folders: tuple[str, ...]) -> set[str]:
  """Top-level names of every absolute import in the folders' Python files."""
  out = set()
  for folder in folders:
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if not name.endswith(".py"):
          continue
        tree = ast.parse(open(os.path.join(dirpath, name)).read())
        for node in ast.walk(tree):
          if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
          elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
  return out - OWN - set(sys.stdlib_module_names) - {"__future__"}


def distributions(modules: set[str]) -> dict[str, set[str]]:
  """module -> the (normalised) distributions that provide it."""
  provided = importlib.metadata.packages_distributions()
  return {m: {_name(d) for d in provided.get(m, [])} for m in modules}


def test_every_imported_module_is_declared() -> None:
  names = declared()
  folders = ("mert_jax", "data_pipeline", "configs", "benchmarks", "tests")
  undeclared = {m: d for m, d in distributions(imported_modules(folders)).items() if not d & names}
  assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_distribution_is_imported() -> None:
  folders = ("mert_jax", "data_pipeline", "configs", "benchmarks", "tests")
  used = set().union(*distributions(imported_modules(folders)).values())
  unused = declared() - used - set(NOT_IMPORTED)
  assert not unused, f"declared in pyproject.toml but imported nowhere: {sorted(unused)}"
