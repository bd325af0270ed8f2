"""The import graph of ``mert_jax`` and ``data_pipeline`` runs one way: no file-level circle, and no
module imports one in a higher layer. Read from the source (every ``import`` statement, including
those inside functions), not from what happens to be imported at run time.

The layers, lowest first (a module may import its own layer and those below):

  0  mert_jax.files, mert_jax.terminal      where files live, how a write is made whole; what a
                                            command prints (help, one-line errors, progress)
  1  data_pipeline                          audio -> teacher tokens -> shards -> the reader
  2  mert_jax.config, sharding, tpu_topology, workdir_files, recipe
                                            the numbers, the mesh rules, the workdir's file names
  3  mert_jax.model                         the network
  4  mert_jax.objective, mert_jax.probe, mert_jax.checkpointing
                                            the loss and targets; probing; model checkpoints
  5  mert_jax.hf                            Hugging Face and fairseq conversion, the model card
  6  mert_jax.train                         the trainer
  7  mert_jax.cli, mert_jax.plot, mert_jax.compile_check, every ``__main__``
                                            the commands

A package's ``__main__.py`` is a command (``python -m mert_jax.probe``), so it sits in the top layer
whatever package it is in.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("mert_jax", "data_pipeline")
LAYERS: tuple[tuple[str, ...], ...] = (
  ("mert_jax.files", "mert_jax.terminal"),
  ("data_pipeline",),
  (
    "mert_jax.config",
    "mert_jax.sharding",
    "mert_jax.tpu_topology",
    "mert_jax.workdir_files",
    "mert_jax.recipe",
  ),
  ("mert_jax.model",),
  ("mert_jax.objective", "mert_jax.probe", "mert_jax.checkpointing"),
  ("mert_jax.hf",),
  ("mert_jax.train",),
  ("mert_jax.cli", "mert_jax.plot", "mert_jax.compile_check"),
)
TOP = len(LAYERS) - 1


def modules() -> dict[str, pathlib.Path]:
  """Dotted name -> file, for every module of the two packages (a package is its __init__)."""
  out = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


def imports(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
  """The project modules ``name`` imports (``from P import m`` counts as importing P.m when m is
  a module, else P)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
      continue
    out |= {t for t in targets if t in known and t != name}
  return out


def layer(name: str) -> int:
  """The layer of a module: its longest matching prefix in LAYERS; a ``__main__`` is a command."""
  if name.endswith(".__main__"):
    return TOP
  best = None
  for i, group in enumerate(LAYERS):
    for prefix in group:
      if (name == prefix or name.startswith(prefix + ".")) and (
        best is None or len(prefix) > len(best[1])
      ):
        best = (i, prefix)
  if best is None:
    raise AssertionError(f"{name} is in no layer: add it to LAYERS and the docstring")
  return best[0]


def graph() -> dict[str, set[str]]:
  known = modules()
  return {name: imports(name, path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan's algorithm)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  out: list[list[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def test_the_graph_is_read():
  """The reader sees the imports it must see (a broken reader would pass every check below)."""
  edges = graph()
  assert "mert_jax.train.loop" in edges and "data_pipeline.reader" in edges
  assert "mert_jax.model.mert" in edges["mert_jax.train.loop"] or any(
    e.startswith("mert_jax.model") for e in edges["mert_jax.train.loop"]
  )
  assert "data_pipeline.tfrecord" in edges["data_pipeline.reader"]
  assert "mert_jax.files.storage" in edges["mert_jax.files.atomic"]
  assert sum(len(v) for v in edges.values()) > 300


def test_every_module_has_a_layer():
  for name in graph():
    if name != "mert_jax":  # the root package's face: a docstring
      layer(name)


def test_package_faces_import_nothing_of_the_project():
  """Importing one module of a package must not import its siblings."""
  known = modules()
  faces = {n: imports(n, p, known) for n, p in known.items() if p.name == "__init__.py"}
  assert len(faces) > 10
  assert not {n: e for n, e in faces.items() if e}


def test_no_module_imports_a_circle():
  found = circles(graph())
  assert not found, "import circles (each must be broken):\n" + "\n".join(map(str, found))


def test_every_import_runs_down_the_layers():
  up = [
    f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
    for a, targets in sorted(graph().items())
    for b in sorted(targets)
    if layer(b) > layer(a)
  ]
  assert not up, "imports that run back up:\n" + "\n".join(up)


@pytest.mark.parametrize(
  "edges, want",
  [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set(), "c": {"c"}}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
  ],
)
def test_circles_finds_them(edges, want):
  assert sorted(circles(edges)) == want


def test_layers_place_each_module():
  assert layer("mert_jax.files.atomic") == 0
  assert layer("data_pipeline.prepare") == 1
  assert layer("mert_jax.train.loop") == 6
  assert layer("mert_jax.probe.__main__") == TOP
  with pytest.raises(AssertionError, match="in no layer"):
    layer("mert_jax.somewhere_new")
