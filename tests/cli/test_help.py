"""What a person sees, in process: every console script of pyproject.toml exists, answers --help
(exit 0) and documents every option (its meaning, its default, its choices); help text comes from
the comments of the fields it describes; bad options of prepare, extract, convert and sweep are one
``error:`` line naming the closest valid name, before any long work starts."""

import dataclasses
import importlib
import os
import sys
import tomllib

import pytest

from data_pipeline import prepare as prepare_lib
from data_pipeline import prepare_local, prepare_run
from data_pipeline.prepare_jobs import PrepareConfig
from mert_jax.checkpointing import model_checkpoint
from mert_jax.cli import convert as convert_cli
from mert_jax.cli import extract as extract_cli
from mert_jax.cli import extract_files
from mert_jax.cli import sweep as sweep_cli
from mert_jax.recipe import REPO_ROOT
from mert_jax.terminal import cli_help
from mert_jax.train import loop

with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
  SCRIPTS = tomllib.load(f)["project"]["scripts"]


def _target(script: str):
  module, func = SCRIPTS[script].split(":")
  return importlib.import_module(module), func


def _flat(text: str) -> str:
  return " ".join(text.split())


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_answers_help(script: str, monkeypatch, capsys) -> None:
  """What ``sys.exit(func())`` of the installed script does with ``SCRIPT --help``."""
  module, func = _target(script)
  monkeypatch.setattr(sys, "argv", [script, "--help"])
  with pytest.raises(SystemExit) as e:
    getattr(module, func)()
  out = capsys.readouterr().out
  assert e.value.code == 0 and out.startswith("usage: ") and len(out.splitlines()) > 3, out


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_has_help_and_shows_its_default(script: str, capsys) -> None:
  module, _ = _target(script)
  parser = module.build_parser()
  for prog, action in cli_help.options_of(parser):
    name = action.option_strings or action.dest
    assert action.help and action.help.strip(), (script, prog, name)
  helps = {}  # the --help text of each (sub)command
  for prog, action in cli_help.options_of(parser):
    if prog not in helps:
      command = prog.split()[len(parser.prog.split()) :]
      with pytest.raises(SystemExit) as e:
        parser.parse_args([*command, "--help"])
      assert e.value.code == 0
      helps[prog] = _flat(capsys.readouterr().out)
    text = helps[prog]
    for option in action.option_strings:
      assert option in text, (prog, option)
    has_default = action.default not in (None, "", []) and action.default is not False
    if action.option_strings and has_default:
      assert f"(default: {action.default})" in text, (prog, action.option_strings)
    for choice in action.choices or ():
      assert str(choice) in text, (prog, action.option_strings, choice)


# ------------------------------------------------------------------------ help from comments


@dataclasses.dataclass
class _Commented:
  """A docstring is no comment."""

  # --- a section rule belongs to no field ---
  plain: int = 1  # beside the field
  wrapped: str = "x"  # inside the parentheses
  continued: int = 2  # a comment that goes on
  # below, in lower case
  # A block above the next field, which has no comment of its own
  # (two lines).
  above: int = 3
  lonely: int = 4
  # Header of a group whose fields have their own comments.
  grouped: int = 5  # its own


def test_field_comments_are_read_from_the_source() -> None:
  assert cli_help.field_comments(_Commented) == {
    "plain": "beside the field",
    "wrapped": "inside the parentheses",
    "continued": "a comment that goes on below, in lower case",
    "above": "A block above the next field, which has no comment of its own (two lines).",
    "lonely": "",
    "grouped": "its own",
  }


def test_prepare_help_is_its_fields_comments(capsys) -> None:
  with pytest.raises(SystemExit):
    prepare_lib.main(["--help"])
  out = capsys.readouterr().out
  text = "".join(out.split())  # argparse wraps lines at spaces and hyphens
  for name, comment in cli_help.field_comments(PrepareConfig).items():
    assert comment and "".join(comment.split()) in text, name  # every field documented
  assert "--teacher {kmeans,encodec}" in out and "(default: 30.0)" in _flat(out)
  # The docstring's shell line continuation survives into the epilog.
  assert "--teacher=kmeans|encodec \\\n      [--encodec=PATH_OR_HUB_ID]" in out
  assert f"--{'-'.join(['kmeans', 'codebook', 'size'])} N" in out
  assert {f.name for f in dataclasses.fields(PrepareConfig)} == set(
    vars(prepare_lib.parse_args(["--input=i", "--output=o"])[0])
  )


# ------------------------------------------------------------------------ one line, before work


@pytest.fixture
def no_long_work(monkeypatch) -> None:
  """prepare's scan and decode, the models' loaders and the trainer all fail if reached."""

  def fail(*args, **kwargs):
    raise AssertionError("the options should have been refused first")

  for module, name in [
    (prepare_local, "scan"),
    (prepare_local, "_decode_job"),
    (model_checkpoint, "load_model"),
    (extract_files, "import_hf"),
    (convert_cli, "import_fairseq"),
    (convert_cli, "import_hf"),
    (loop, "train"),
  ]:
    monkeypatch.setattr(module, name, fail)


def _one_line(capsys, status: int, expected: int, *parts: str) -> str:
  err = capsys.readouterr().err
  assert status == expected and err.startswith("error: ") and err.count("\n") == 1, err
  assert all(p in err for p in parts), err
  return err.strip()


def _exit_code(func, argv: list[str]) -> int:
  try:
    return func(argv)
  except SystemExit as e:  # argparse's own errors
    return e.code


def test_prepare_refuses_bad_options_before_scanning(no_long_work, tmp_path, capsys) -> None:
  music, out = tmp_path / "music", tmp_path / "out"
  music.mkdir()
  (tmp_path / "a_file").write_text("x")
  base = [f"--input={music}", f"--output={out}"]
  cases = [
    (["--teacher=encodc"], 2, "invalid choice: 'encodc'; did you mean encodec?"),
    (["--wrkers=2"], 2, "unrecognized arguments: --wrkers=2; did you mean --workers?"),
    (["--teacher=encodec"], 1, "--teacher=encodec needs --encodec=PATH_OR_HUB_ID"),
    (["--teacher=encodec", f"--encodec={tmp_path}/enc"], 1, "enc: no such folder, and not a"),
    (["--encodec=facebook/encodec_24khz"], 1, "--encodec applies only with --teacher=encodec"),
  ]
  for args, status, part in cases:
    _one_line(capsys, _exit_code(prepare_lib.main, [*base, *args]), status, part)
  for output, part in [
    (tmp_path / "a_file", "is a file, not a folder"),
    (tmp_path / "a_file" / "out", f"{tmp_path / 'a_file'} is a file, not a folder"),
  ]:
    argv = [f"--input={music}", f"--output={output}"]
    _one_line(capsys, prepare_lib.main(argv), 1, part)
  assert sorted(os.listdir(tmp_path)) == ["a_file", "music"]  # nothing written


def test_prepare_refuses_an_unwritable_output(no_long_work, tmp_path, monkeypatch, capsys) -> None:
  (tmp_path / "music").mkdir()
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda p, mode: p != str(tmp_path) and real_access(p, mode))
  argv = [f"--input={tmp_path / 'music'}", f"--output={tmp_path}/new/out"]
  _one_line(capsys, prepare_lib.main(argv), 1, f"{tmp_path} is not writable")


def test_prepare_accepts_a_hub_id_and_random_init(tmp_path) -> None:
  for encodec in ("facebook/encodec_24khz", "random-init"):
    cfg = PrepareConfig(str(tmp_path), str(tmp_path / "o"), teacher="encodec", encodec=encodec)
    prepare_run.check_options(cfg)


def test_extract_and_convert_refuse_missing_inputs_before_loading(
  no_long_work, tmp_path, capsys
) -> None:
  argv = [f"--checkpoint={tmp_path}", f"--audio={tmp_path}/song.flac", f"--output={tmp_path}/o"]
  _one_line(capsys, extract_cli.main(argv), 1, "song.flac: no such audio file or folder")
  argv = ["hf-to-jax", f"--fairseq={tmp_path}/MERT.pt", f"--output={tmp_path}/o"]
  _one_line(capsys, convert_cli.main(argv), 1, "--fairseq=", "MERT.pt: no such file")
  _one_line(capsys, _exit_code(convert_cli.main, ["hf2jax"]), 2, "did you mean hf-to-jax?")
  assert sorted(os.listdir(tmp_path)) == []


def test_sweep_finds_its_file_by_name_and_names_the_closest_field(
  no_long_work, tmp_path, monkeypatch, capsys
) -> None:
  monkeypatch.chdir(tmp_path)
  argv = ["--sweep=model_size:tiny", f"--workdir={tmp_path}/w"]
  status = sweep_cli.main([*argv, "--set=optimizer.learning_rate=1e-4"])
  _one_line(capsys, status, 1, "unknown config field 'optimizer.learning_rate'; did you mean op")
  status = sweep_cli.main(["--sweep=configs/sweeps/model_sise.py:tiny", f"--workdir={tmp_path}"])
  _one_line(capsys, status, 1, "did you mean configs/sweeps/model_size.py?")
  assert sweep_cli.load_sweep("model_size:tiny")[0][0] == "tiny-2x32"
  assert [r[0] for r in sweep_cli.load_sweep("configs/sweeps/model_size.py")] == [
    "95m",
    "330m",
    "1b",
  ]
  assert not os.path.exists(tmp_path / "w")


def test_one_line_parser_errors(capsys) -> None:
  parser = cli_help.ArgumentParser(prog="x")
  parser.add_argument("--size", choices=["tiny", "95m"], help="size")
  parser.add_argument("--out", required=True, help="out")
  for argv, part in [
    (["--out=o", "--size=95n"], "error: argument --size: invalid choice: '95n'; did you mean 95m?"),
    ([], "error: the following arguments are required: --out"),
    (["--out=o", "--siz=95m"], "error: unrecognized arguments: --siz=95m; did you mean --size?"),
    (["--ou=o"], "error: the following arguments are required: --out"),  # no abbreviations
  ]:
    with pytest.raises(SystemExit) as e:
      parser.parse_args(argv)
    _one_line(capsys, e.value.code, 2, part)
