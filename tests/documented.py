"""The command lines the docs show: every ```bash block of README.md, docs/*.md and
benchmarks/README.md, continuation lines joined, ``&&`` chains split, comments dropped."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex

from mert_jax import recipe

DOC_FILES = ("README.md", "docs/*.md", "benchmarks/README.md")  # relative to the repository root


@dataclasses.dataclass(frozen=True)
class Documented:
  """One command line as a doc shows it."""

  doc: str  # the doc's path, relative to the repository root
  line: int  # where the command starts in the doc (1-based)
  argv: tuple[str, ...]  # split as the shell splits it, [OPTIONAL] groups still in

  @property
  def text(self) -> str:
    return shlex.join(self.argv)

  @property
  def where(self) -> str:
    return f"{self.doc}:{self.line}"


def documented_commands(path: str) -> list[Documented]:
  """The commands of one doc's bash blocks (``path`` absolute, or relative to the repository)."""
  full = path if os.path.isabs(path) else os.path.join(recipe.REPO_ROOT, path)
  doc = os.path.relpath(full, recipe.REPO_ROOT)
  text = open(full).read()
  found = []
  for block in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
    first_line = text.count("\n", 0, block.start(1)) + 1
    lines = block.group(1).split("\n")
    i = 0
    while i < len(lines):
      start, command = i, lines[i]
      while command.endswith("\\") and i + 1 < len(lines):
        i += 1
        command = command[:-1] + " " + lines[i]
      i += 1
      argv = shlex.split(command, comments=True)
      while argv:  # `a && b && c`: three commands
        cut = argv.index("&&") if "&&" in argv else len(argv)
        if argv[:cut]:
          found.append(Documented(doc, first_line + start, tuple(argv[:cut])))
        argv = argv[cut + 1 :]
  return found


def all_documented() -> list[Documented]:
  """Every documented command of every doc, in doc order."""
  paths = sorted(
    {p for pattern in DOC_FILES for p in glob.glob(os.path.join(recipe.REPO_ROOT, pattern))}
  )
  return [c for p in paths for c in documented_commands(p)]


def without_optional(argv: list[str] | tuple[str, ...]) -> list[str]:
  """``argv`` without its ``[...]`` groups (nested ones too): the shortest form of the command."""
  out, depth = [], 0
  for a in argv:
    if a.startswith("["):
      depth += len(a) - len(a.lstrip("["))
    if depth == 0:
      out.append(a)
    elif a.endswith("]"):
      depth -= min(depth, len(a) - len(a.rstrip("]")))
  return out


def with_optional(argv: list[str] | tuple[str, ...]) -> list[str]:
  """``argv`` with every ``[...]`` group's options in: the longest form of the command."""
  out, depth = [], 0
  for a in argv:
    opened = len(a) - len(a.lstrip("[")) if a.startswith("[") else 0
    depth += opened
    closed = min(depth, len(a) - len(a.rstrip("]"))) if depth else 0
    depth -= closed
    out.append(a[opened : len(a) - closed])
  return out


def substitute(argv: list[str], stand_ins: dict[str, str]) -> list[str]:
  """Each placeholder (a key of ``stand_ins``, longest first) replaced in every argument, in one
  pass: a stand-in's own text is never replaced again."""
  pattern = re.compile("|".join(re.escape(k) for k in sorted(stand_ins, key=len, reverse=True)))
  return [pattern.sub(lambda m: stand_ins[m.group(0)], a) for a in argv]
