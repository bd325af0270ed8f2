"""What ``train --help`` and ``train --list-config`` show of a recipe: every field with its value
and the comment written beside it, in the recipe file (configs/mert.py) or, for ``model.*`` and
``objective.*``, in the dataclasses of mert_jax/config.py. Nothing is written twice: the comments
are the help text.
"""

from __future__ import annotations

import ast
import textwrap

import ml_collections

from mert_jax import recipe
from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.terminal.cli_help import field_comments, span_comments

# Recipe groups whose fields are a config dataclass's fields (documented there).
DATACLASS_GROUPS = {"model": ModelConfig, "objective": ObjectiveConfig}


def _dotted(target: ast.expr) -> str | None:
  """``c.optimizer.lr`` -> ``"optimizer.lr"``; None for anything but an attribute chain."""
  names = []
  while isinstance(target, ast.Attribute):
    names.insert(0, target.attr)
    target = target.value
  return ".".join(names) if names and isinstance(target, ast.Name) else None


def _group_spans(prefix: str, value: ast.expr) -> list[tuple[str, int, int]] | None:
  """The fields of a literal group, ``ConfigDict(dict(a=..., b=...))`` or ``ConfigDict({...})``, as
  (dotted name, first line, last line); None when ``value`` is no such literal."""
  if isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords:
    func = value.func
    if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) == "ConfigDict":
      return _group_spans(prefix, value.args[0])
  if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "dict" and not value.args:
    spans = []
    for kw in value.keywords:
      sub = _group_spans(f"{prefix}.{kw.arg}", kw.value)
      spans += sub if sub is not None else [(f"{prefix}.{kw.arg}", kw.lineno, kw.end_lineno)]
    return spans
  if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
    spans = []
    for k, v in zip(value.keys, value.values):
      sub = _group_spans(f"{prefix}.{k.value}", v)
      spans += sub if sub is not None else [(f"{prefix}.{k.value}", k.lineno, v.end_lineno)]
    return spans
  return None


def recipe_comments(path: str) -> dict[str, str]:
  """dotted field -> its comment in the recipe file's ``get_config``, in the order it sets them
  (its top-level statements: a variant's branch changes values, not meanings)."""
  with open(recipe.resolve_path(path)) as f:
    source = f.read()
  funcs = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
  body = next((fn.body for fn in funcs if fn.name == "get_config"), [])
  spans = []
  for stmt in body:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
      name = _dotted(stmt.targets[0])
      if name:
        sub = _group_spans(name, stmt.value)
        spans += sub if sub is not None else [(name, stmt.lineno, stmt.end_lineno)]
  return span_comments(source, spans)


def field_docs(path: str) -> dict[str, str]:
  """dotted field -> help text for a recipe file: its own comments, with each dataclass group
  (``model``, ``objective``) followed by its fields' comments from mert_jax/config.py."""
  docs = {}
  for name, doc in recipe_comments(path).items():
    docs[name] = doc
    if name in DATACLASS_GROUPS:
      for field, text in field_comments(DATACLASS_GROUPS[name]).items():
        docs.setdefault(f"{name}.{field}", text)
  return docs


def _entry(name: str, value: object, doc: str, width: int, column: int) -> list[str]:
  left = f"{name} = {value!r}"
  if not doc:
    return [left]
  lines = textwrap.wrap(doc, width - column - 2, break_on_hyphens=False) or [""]
  pad = " " * column
  if len(left) + 2 > column:
    return [left] + [f"{pad}# {line}" for line in lines]
  return [f"{left.ljust(column)}# {lines[0]}"] + [f"{pad}# {line}" for line in lines[1:]]


def listing(
  config: ml_collections.ConfigDict, docs: dict[str, str], width: int = 100, column: int = 40
) -> str:
  """Every field of ``config`` as ``name = value  # meaning``, in the order the recipe sets them
  (fields it does not document last), a ``# group: meaning`` line opening each group."""
  leaves = recipe.field_paths(config)
  known = set(leaves)
  order = [p for p in docs if p in known] + [p for p in leaves if p not in docs]
  out, group = [], None
  for path in order:
    head = path.split(".")[0] if "." in path else None
    if head != group:
      if head is not None:
        out += ["", f"# {head}: {docs[head]}" if docs.get(head) else f"# {head}"]
      elif group is not None:
        out.append("")
      group = head
    node, leaf = recipe.lookup(config, path)
    out += _entry(path, node[leaf], docs.get(path, ""), width, column)
  return "\n".join(out) + "\n"


def variants_line(path: str) -> str:
  """``"variants: tiny, 95m, ..."`` of a recipe file that lists its ``VARIANTS``, else ``""``."""
  variants = getattr(recipe.load_module(path), "VARIANTS", None)
  return f"variants: {', '.join(variants)}" if variants else ""
