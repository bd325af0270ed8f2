"""What every command line shows a person: option help written once, as the comments of the fields
it comes from, and one-line errors that name the closest valid name.

Here, in the bottom layer, because both ``data_pipeline.prepare`` and ``mert_jax.cli`` use it
(``mert_jax`` imports ``data_pipeline``, never the reverse). Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import io
import os
import shutil
import sys
import textwrap
import tokenize
from typing import Any, Iterable, NoReturn, Sequence


def did_you_mean(word: str, names: Iterable[str]) -> str:
  """``"; did you mean X?"`` naming the closest of ``names`` (difflib), or ``""``."""
  close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
  return f"; did you mean {close[0]}?" if close else ""


# ----------------------------------------------------------------------------- field comments


def _comments(source: str) -> dict[int, tuple[str, bool]]:
  """line number -> (comment text, whether the comment is the whole line)."""
  lines = source.splitlines()
  out = {}
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      row, col = tok.start
      out[row] = (tok.string.lstrip("#").strip(), not lines[row - 1][:col].strip())
  return out


def span_comments(source: str, spans: Sequence[tuple[str, int, int]]) -> dict[str, str]:
  """The comment of each ``(name, first line, last line)`` span of ``source`` (1-based lines):

  * the comments on the span's own lines, continued by the whole-line comments right below, up to
    the first that starts in upper case (``# unset: ...`` continues; ``# Resume ...`` does not);
  * without those, the block of whole-line comments right above it (a lower-case block right
    below a commented field and right above an uncommented one is the latter's).

  Section rules (``# --- data ---``) belong to no field. The first span of a name wins."""
  comments = _comments(source)
  spans = sorted(spans, key=lambda s: s[1])

  def whole(row: int) -> bool:
    return row in comments and comments[row][1] and not comments[row][0].startswith("---")

  own = [[comments[r][0] for r in range(a, b + 1) if r in comments] for _, a, b in spans]
  claimed: set[int] = set()  # whole-line comments that continue the comment of the field above
  docs: dict[str, str] = {}
  for i, (name, start, end) in enumerate(spans):
    parts = list(own[i])
    if parts:  # continued below until a line starts in upper case (the next field's block)
      rows = []
      while whole(end + 1 + len(rows)):
        rows.append(end + 1 + len(rows))
      upper = [j for j, r in enumerate(rows) if comments[r][0][:1].isupper()]
      k = upper[0] if upper else len(rows)
      nxt = spans[i + 1] if i + 1 < len(spans) else None
      if rows and k == len(rows) and nxt and rows[-1] == nxt[1] - 1 and not own[i + 1]:
        k = 0  # a lower-case block right above a field without a comment of its own is its own
      parts += [comments[r][0] for r in rows[:k]]
      claimed.update(rows[:k])
    else:
      row = start - 1
      while whole(row) and row not in claimed:
        parts.insert(0, comments[row][0])
        row -= 1
    docs.setdefault(name, " ".join(p for p in parts if p))
  return docs


def field_comments(cls: type) -> dict[str, str]:
  """field name -> the comment written beside (or above) it in the class body, for each annotated
  field of ``cls`` (a dataclass); ``""`` for a field without one."""
  source = textwrap.dedent(inspect.getsource(cls))
  (node,) = ast.parse(source).body
  spans = [
    (s.target.id, s.lineno, s.end_lineno)
    for s in node.body
    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
  ]
  return span_comments(source, spans)


# ----------------------------------------------------------------------------- argparse


class HelpFormatter(argparse.HelpFormatter):
  """Appends an option's default to its help when it has one (not None, False or empty); lines of
  up to 100 columns, as the docstrings (fewer on a narrower terminal)."""

  def __init__(self, prog: str, **kwargs: Any) -> None:
    kwargs.setdefault("width", min(shutil.get_terminal_size((102, 24)).columns, 102) - 2)
    super().__init__(prog, **kwargs)

  def _get_help_string(self, action: argparse.Action) -> str:
    text = action.help or ""
    no_default = action.default in (None, argparse.SUPPRESS, "", []) or action.default is False
    if no_default or action.required or "%(default)" in text:
      return text
    return text + " (default: %(default)s)"


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
  """... and keeps the description's and epilog's own line breaks (a module docstring)."""


def option_value(argv: Sequence[str], name: str) -> str | None:
  """The value of the last ``NAME=VALUE`` or ``NAME VALUE`` in ``argv`` (None when absent), read
  before a parser runs: which recipe's fields a help lists, a slice name checked before importing
  jax."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"{name}="):
      value = arg.split("=", 1)[1]
    elif arg == name and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def prog(module: str) -> str:
  """The command's name as it was typed: the console script (``mert-train``), else
  ``python -m MODULE``."""
  name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
  return name if name.startswith("mert-") else f"python -m {module}"


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line, ``error: ...`` on stderr (exit status 2, as argparse),
  naming the closest option or choice; abbreviated options are not accepted."""

  def __init__(self, *args: Any, **kwargs: Any) -> None:
    kwargs.setdefault("formatter_class", RawHelpFormatter)
    kwargs.setdefault("allow_abbrev", False)
    super().__init__(*args, **kwargs)

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"error: {message}\n")

  def _check_value(self, action: argparse.Action, value: Any) -> None:
    if action.choices is not None and value not in action.choices:
      names = [str(c) for c in action.choices]
      raise argparse.ArgumentError(
        action,
        f"invalid choice: {value!r}{did_you_mean(str(value), names)} "
        f"(choose from {', '.join(names)})",
      )

  def parse_args(self, args=None, namespace=None):  # type: ignore[override]
    ns, extras = self.parse_known_args(args, namespace)
    if extras:
      self.refuse(extras)
    return ns

  def refuse(
    self, extras: list[str], known: Iterable[str] = (), note: str = "", hint: bool = True
  ) -> NoReturn:
    """The one-line error for arguments nobody takes, naming (with ``hint``) the closest of this
    parser's options and ``known`` (other options the command passes on), then ``note``."""
    options = [s for a in self._actions for s in a.option_strings] + list(known)
    first = extras[:1] if hint else []
    hint = "".join(did_you_mean(e.split("=", 1)[0], options) for e in first if e[:1] == "-")
    self.error(f"unrecognized arguments: {' '.join(extras)}{hint}{note}")


def options_of(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
  """(command path, action) of every option and positional of ``parser`` and its subcommands, the
  help action excluded; what a ``--help`` test walks."""
  out = []
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
      continue
    out.append((parser.prog, action))
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for sub in action.choices.values():
        out += options_of(sub)
  return out
