"""Every command line the docs show (README.md, docs/*.md, benchmarks/README.md) runs: through its
flag parsing with the documented values, then its first steps on a CPU stand-in (tiny model,
tiny data, the same flags).

Placeholders (CKPT_DIR, MUSIC_DIR, gs://BUCKET, ...) become folders of the test; the recipe's
variant becomes ``tiny`` after the documented one has been resolved with every override; a
training command stops after its start-up summary (config, mesh, data, state: everything before
the first compile); a documented command this file has no runner for fails, naming it."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import soundfile as sf

from data_pipeline import default_corpus, example_audio, prepare_jobs, tfds_builder
from data_pipeline import prepare as prepare_cli
from data_pipeline.example_audio import music_clip
from mert_jax import plot, recipe
from mert_jax.checkpointing import workdir_steps
from mert_jax.cli import compile_check as compile_check_cli
from mert_jax.cli import convert as convert_cli
from mert_jax.cli import demo as demo_cli
from mert_jax.cli import extract as extract_cli
from mert_jax.cli import params as params_cli
from mert_jax.cli import probe as probe_cli
from mert_jax.cli import sweep as sweep_cli
from mert_jax.cli import train as train_cli
from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.model.mert import create_model
from mert_jax.objective import target_stats, target_stats_file
from mert_jax.terminal.cli_help import option_value
from mert_jax.train import aot, console, fail_fast
from mert_jax.train import input as input_lib
from tests.documented import (
  Documented,
  all_documented,
  documented_commands,
  substitute,
  with_optional,
  without_optional,
)
from tests.hf.fairseq_format import write_fairseq_checkpoint

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)

REPO = recipe.REPO_ROOT
# Commands run elsewhere, whole, by a test that reads the same doc: tests/train/test_init_from.py
# runs docs/continue_pretraining.md's recipe, so its commands are not run here again.
CONTINUE_DOC = "docs/continue_pretraining.md"
COMMANDS = [c for c in all_documented() if c.doc != CONTINUE_DOC]


class FirstStepsDone(Exception):
  """Raised once a long command has taken its first steps."""


def program(argv: tuple[str, ...] | list[str]) -> str:
  """What a command runs: ``python -m MOD`` -> MOD, ``python SCRIPT`` -> SCRIPT, else argv[0]."""
  if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m":
    return argv[2]
  if argv[0] in ("python", "python3"):
    return argv[1]
  return argv[0]


def args_of(argv: list[str]) -> list[str]:
  """The arguments after the program."""
  return list(
    argv[3:] if argv[1:2] == ["-m"] else argv[2:] if argv[0].startswith("python") else argv[1:]
  )


class Stage:
  """A command's surroundings: a scratch folder as the working directory, stand-ins for the
  placeholders, and the session's tiny run, corpus and music."""

  def __init__(
    self, tmp_path, trained_workdir, default_data, music_dir, data_dir, monkeypatch, capsys
  ):
    self.tmp, self.tiny_workdir, self.data = tmp_path, trained_workdir[0], default_data
    self.monkeypatch, self.capsys = monkeypatch, capsys
    song = str(tmp_path / "song.flac")
    sf.write(song, music_clip(6.0), 24000)
    # The rendered probe sets, shared by this module's commands (deterministic, written atomically)
    self.probe_cache = os.path.join(os.path.dirname(data_dir), "probe_cache")
    self.stand_ins = {
      "gs://BUCKET/data": default_data,  # a prepared corpus where the docs read training data
      "gs://BUCKET": str(tmp_path / "bucket"),
      "gs://B": str(tmp_path / "bucket"),
      "CKPT_DIR": str(tmp_path / "ckpt"),
      "HF_DIR": str(tmp_path / "hf"),
      "MUSIC_DIR": music_dir,
      "DATA_DIR2": str(tmp_path / "data2"),
      "DATA_DIR": data_dir,  # one per module: tfds_builder reads what the prepare line wrote
      # docs/probing.md's corpus (its own teacher size), beside DATA_DIR
      "SMALL_DATA": os.path.join(os.path.dirname(data_dir), "small_data"),
      "MULTI_DATA": os.path.join(os.path.dirname(data_dir), "multi_data"),
      "RQ_DATA": os.path.join(os.path.dirname(data_dir), "rq_data"),
      "LONG_DATA": os.path.join(os.path.dirname(data_dir), "long_data"),  # docs/whole_songs.md
      "TFDS_DIR": str(tmp_path / "tfds"),
      "FEATS_DIR": str(tmp_path / "feats"),
      "PROBE_DIR": str(tmp_path / "probe"),
      "LEARN_DIR": str(tmp_path / "learn"),
      # docs/probing.md's corpus statistics (written by its target_stats line, or here)
      "STATS.npz": os.path.join(os.path.dirname(data_dir), "stats.npz"),
      "ENCODEC_24KHZ_DIR": "random-init",  # an EnCodec of the real architecture, random weights
      "facebook/encodec_24khz": "random-init",  # the Hub's weights are not downloaded here
      "song.flac": song,
      "--config.data.dir=DATA_DIR": f"--config.data.dir={data_dir}",  # the doc's prepare output
      "--config.data.dir=DATA": f"--config.data.dir={default_data}",
      "benchmarks/results/": os.path.join(REPO, "benchmarks", "results", ""),  # committed rows
      "/tmp/": f"{tmp_path}/",
      "docs/images/": f"{tmp_path}/",  # the committed pictures stay as they are
      "MERT-v1-95M_fairseq.pt": str(tmp_path / "fairseq.pt"),
      "--step=N": f"--step={max(workdir_steps.complete_steps(self.tiny_workdir))}",
    }
    monkeypatch.chdir(tmp_path)  # runs/... lands here

  def argv(self, command: Documented, *, optional: bool = False) -> list[str]:
    """The command with its placeholders replaced; its ``[...]`` options in when ``optional``."""
    argv = with_optional(command.argv) if optional else without_optional(command.argv)
    return substitute(argv, self.stand_ins)

  def prepared(self, command: Documented, data: str) -> str:
    """``data`` (a stand-in folder), prepared by the doc's prepare line for it when no other
    command has yet."""
    if not os.path.exists(os.path.join(data, "manifest.json")):
      run_prepare(prepare_line_for(command, data), self)
    return data

  def stats(self, path: str) -> str:
    """``path`` holding corpus statistics (of the session's corpus) unless it exists."""
    if not os.path.exists(path):
      stats = target_stats.compute(
        self.data, model_config("tiny"), ObjectiveConfig(), crops=16, crop_samples=48_000
      )
      target_stats_file.save(path, stats)
    return path

  def trained(self, path: str) -> str:
    """``path`` holding a trained tiny workdir (a copy of the session's run) unless it exists."""
    if not os.path.exists(path):
      shutil.copytree(self.tiny_workdir, path)
    return path

  @contextlib.contextmanager
  def first_steps_of_training(self):
    """Training stops once its start-up summary is printed (before the first compile), and the
    embedded default corpus is the session's (the same corpus, prepared once). An error fails the
    test instead of ending the worker (the trainer's ``fail_fast.fail``)."""
    real_summary = console.summary_lines

    def summary_then_stop(summary):
      print("\n".join(real_summary(summary)), flush=True)
      raise FirstStepsDone

    def session_corpus(root, num_codebooks, codebook_size, **_):
      target = default_corpus.corpus_dir(root, num_codebooks, codebook_size)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if not os.path.exists(target):
        os.symlink(self.data, target)
      return target

    def raise_instead(error, one_line=()):  # the trainer ends the process on any error: here the
      del one_line  # error reaches the test (the worker lives on)
      raise error

    with pytest.MonkeyPatch.context() as m:
      m.setattr(console, "summary_lines", summary_then_stop)
      m.setattr(fail_fast, "fail", raise_instead)
      m.setattr(input_lib.default_corpus, "ensure_default_corpus", session_corpus)
      with pytest.raises(FirstStepsDone):
        yield
    assert "model" in self.capsys.readouterr().out  # the summary's first lines were printed


def _in_continue_recipe(command: Documented) -> bool:
  """The command is one of docs/continue_pretraining.md's (placeholder names aside), which
  tests/train/test_init_from.py runs whole."""
  same = {"MY_MUSIC": "MUSIC_DIR", "MY_DATA": "DATA_DIR"}
  recipe_commands = [
    tuple(substitute(list(c.argv), same)) for c in documented_commands(CONTINUE_DOC)
  ]
  return tuple(substitute(list(command.argv), same)) in recipe_commands


def prepare_line_for(command: Documented, data: str) -> Documented:
  """The doc's prepare line that writes ``data`` (a stand-in path): the nearest one above
  ``command`` whose --output placeholder stands for it, else the doc's only one."""
  lines = [c for c in COMMANDS if c.doc == command.doc and "data_pipeline.prepare" in c.text]
  name = os.path.basename(data).upper()  # small_data -> SMALL_DATA, rq_data -> RQ_DATA
  same = [c for c in lines if option_value(list(c.argv), "--output") == name]
  if same:
    above = [c for c in same if c.line < command.line]
    return (above or same)[-1]
  (only,) = lines
  return only


def run_setup(command: Documented, stage: Stage) -> None:
  """Installing and the test command: what CI's own script (.ci/run) runs."""
  ci = open(os.path.join(REPO, ".ci", "run")).read()
  argv = list(command.argv)
  if argv[:2] == ["pip", "install"]:
    assert re.search(r"pip install .*-e " + re.escape(f"'{argv[-1]}'"), ci), command.text
  else:
    assert command.text in ci, f"{command.where}: .ci/run does not run `{command.text}`"


def run_train(command: Documented, stage: Stage) -> None:
  argv = stage.argv(command)
  args = args_of(argv)
  if any(a.startswith("--config.init_from") for a in args):
    assert _in_continue_recipe(command), f"{command.where}: not in {CONTINUE_DOC}'s tested recipe"
    return
  if (stats := option_value(args, "--config.objective.target_stats")) is not None:
    stage.stats(stats)
  # The documented recipe and every documented override, resolved and checked.
  assert train_cli.run([*args, "--list-config"]) == 0
  listing = stage.capsys.readouterr().out
  for field, value in (
    a[len("--config.") :].split("=", 1) for a in args if "=" in a and a.startswith("--config.")
  ):
    assert field.rsplit(".", 1)[-1] in listing, field
  data = option_value(args, "--config.data.dir")
  if data and not os.path.exists(os.path.join(data, "manifest.json")):
    # Written by the doc's prepare line above it (which may run in another test worker).
    run_prepare(prepare_line_for(command, data), stage)
  # The stand-in: the tiny variant, the same flags but the CPU-sized ones.
  cpu_sized = ("--config.batch_size=", "--config.total_steps=")
  tiny = [
    re.sub(r"(--config=\S*?):\w+$", r"\1:tiny", a) for a in args if not a.startswith(cpu_sized)
  ]
  with stage.first_steps_of_training():
    train_cli.run(tiny)


def run_demo(command: Documented, stage: Stage) -> None:
  with stage.first_steps_of_training():
    demo_cli.main(args_of(stage.argv(command)))


def run_sweep(command: Documented, stage: Stage) -> None:
  args = args_of(stage.argv(command))
  if "--tpu" in args:  # one launch_tpu.sh per run, printed
    assert sweep_cli.main([*args, "--dry-run"]) == 0
    return
  with stage.first_steps_of_training():  # the first run of the sweep starts
    sweep_cli.main(args)


def run_params(command: Documented, stage: Stage) -> None:
  params_cli.main(args_of(stage.argv(command)))
  assert "total" in stage.capsys.readouterr().out.lower()


def _export_hf(args: list[str], stage: Stage) -> None:
  """--hf=DIR, when it does not exist yet: the tiny trained model exported there."""
  if (hf := option_value(args, "--hf")) is not None and not os.path.exists(hf):
    assert (
      convert_cli.main(["jax-to-hf", f"--checkpoint={stage.trained('tiny')}", f"--output={hf}"])
      == 0
    )


def run_convert(command: Documented, stage: Stage) -> None:
  convert_cli.build_parser().parse_args(args_of(stage.argv(command, optional=True)))
  args = args_of(stage.argv(command))
  if (ckpt := option_value(args, "--checkpoint")) is not None:
    stage.trained(ckpt)
  _export_hf(args, stage)
  if (fairseq := option_value(args, "--fairseq")) is not None:
    config = recipe.load_config(f"{recipe.DEFAULT_RECIPE}:tiny")
    config.model.hidden_size = 48  # wider than the conv front end, as fairseq MERT is
    write_fairseq_checkpoint(fairseq, create_model(recipe.model_config_from(config), seed=0))
  assert convert_cli.main(args) == 0
  assert os.path.exists(option_value(args, "--output"))


def run_extract(command: Documented, stage: Stage) -> None:
  """Whole, on the tiny model; a Dataflow line on Beam's DirectRunner (its Dataflow options parsed
  and left unused), its bucket's music folder filled from MUSIC_DIR."""
  args = [
    "--runner=DirectRunner" if a == "--runner=DataflowRunner" else a
    for a in args_of(stage.argv(command))
  ]
  if (ckpt := option_value(args, "--checkpoint")) is not None:
    stage.trained(ckpt)
  _export_hf(args, stage)
  audio = option_value(args, "--audio")
  if not os.path.exists(audio) and audio.startswith(stage.stand_ins["gs://B"]):
    shutil.copytree(stage.stand_ins["MUSIC_DIR"], audio)
  assert extract_cli.main(args) == 0
  assert os.path.exists(option_value(args, "--output"))


def run_probe(command: Documented, stage: Stage) -> None:
  """The documented flags on the tiny note set, a few epochs and one learning rate."""
  args = args_of(stage.argv(command))
  if option_value(args, "--checkpoint"):
    stage.trained(option_value(args, "--checkpoint"))
  _export_hf(args, stage)
  quick = ["--set=tiny", "--max-epochs=2", "--learning-rates=0.01"]
  assert probe_cli.main([*args, *quick, f"--cache-dir={stage.probe_cache}"]) == 0
  assert os.path.exists(os.path.join(option_value(args, "--output"), "results.json"))


def run_target_stats(command: Documented, stage: Stage) -> None:
  """On the doc's corpus, 16 crops."""
  args = args_of(stage.argv(command))
  stage.prepared(command, option_value(args, "--data"))
  args = [a for a in args if not a.startswith("--crops=")] + ["--crops=16"]
  assert target_stats.main(args) == 0
  assert os.path.exists(option_value(args, "--output"))


def run_plot(command: Documented, stage: Stage) -> None:
  args = args_of(stage.argv(command))
  for a in args:
    if not a.startswith("-"):
      stage.trained(a)
  assert plot.main(args) == 0


def run_prepare(command: Documented, stage: Stage) -> None:
  """Whole, on the stand-in music; a Dataflow line runs on Beam's DirectRunner, its Dataflow
  options parsed and left unused, with its bucket's music folder filled from MUSIC_DIR."""
  if _in_continue_recipe(command):  # the same command, run whole by that test
    return
  args = [
    "--runner=DirectRunner" if a == "--runner=DataflowRunner" else a
    for a in args_of(stage.argv(command))
  ]
  inp = option_value(args, "--input")
  if not os.path.exists(inp) and inp.startswith(stage.stand_ins["gs://B"]):
    shutil.copytree(stage.stand_ins["MUSIC_DIR"], inp)
  if "--engine=beam" in args and "--teacher=kmeans" in args:  # a small k-means: the fit is minutes
    args += ["--kmeans-codebooks=2", "--kmeans-codebook-size=16"]
  assert prepare_cli.main(args) in (0, prepare_jobs.EXIT_SKIPPED)
  assert os.path.exists(os.path.join(option_value(args, "--output"), "manifest.json"))


def run_tfds_builder(command: Documented, stage: Stage) -> None:
  """After the README's k-means prepare line above it (its DATA_DIR/teacher)."""
  args = args_of(stage.argv(command))
  data_dir = os.path.dirname(option_value(args, "--teacher-dir"))
  (kmeans,) = [
    c
    for c in COMMANDS
    if c.doc == command.doc and "--teacher=kmeans" in c.argv and c.line < command.line
  ]
  if not os.path.exists(os.path.join(data_dir, "manifest.json")):
    run_prepare(kmeans, stage)
  assert os.path.isdir(os.path.join(data_dir, "teacher"))
  assert tfds_builder.main(args) == 0


def run_benchmark_script(command: Documented, stage: Stage) -> None:
  """A benchmark script's documented flags, then a tiny stand-in run. train_step.py runs each
  configuration in a child process (to survive running out of memory); here in this one."""
  argv = stage.argv(command)
  script = os.path.join(REPO, argv[1])
  args = args_of(argv)
  spec = importlib.util.spec_from_file_location("benchmark_under_test", script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if argv[1] in ("benchmarks/prepare_engines.py", "benchmarks/encodec_modes.py"):
    # Half a minute of the stand-in music (not whichever Debian packages are installed); one
    # worker count per engine.
    args = [a for a in args if not a.startswith(("--minutes=", "--workers="))]
    args += ["--minutes=0.5", "--workers=1"] if "prepare" in argv[1] else ["--minutes=0.5"]
    files = sorted(glob.glob(os.path.join(stage.stand_ins["MUSIC_DIR"], "*.wav")))
    stage.monkeypatch.setattr(example_audio, "real_music_files", lambda: files)
  if argv[1] == "benchmarks/extract_throughput.py":  # the tiny model on 20 s of music
    args = [a for a in args if not a.startswith(("--size=", "--minutes=", "--json="))]
    args += ["--size=tiny", "--minutes=0.33"]
  if argv[1] == "benchmarks/cpu_kernels.py":  # short sequences, one timed call each
    args = [a for a in args if not a.startswith(("--lengths=", "--repeats=", "--json="))]
    args += ["--lengths=64", "--repeats=1"]
  if argv[1] == "benchmarks/whole_songs.py":  # the tiny model on 3 s of the stand-in music
    drop = ("--size=", "--lengths=", "--json=", "--music=")
    args = [a for a in args if not a.startswith(drop)]
    args += ["--size=tiny", "--lengths=3", f"--music={stage.stand_ins['MUSIC_DIR']}"]
  if argv[1] == "benchmarks/feature_collapse.py":  # the stand-in run, the tiny note set
    stage.trained(option_value(args, "--checkpoint"))
    args = [a for a in args if not a.startswith("--set=")] + ["--set=tiny"]
  if argv[1] == "benchmarks/probe_curve.py":  # one real probe of the stand-in run's last step
    wd = stage.trained(option_value(args, "--workdir"))
    step = max(workdir_steps.complete_steps(wd))
    folder = option_value(args, "--probes").replace("*", str(step))
    quick = ["--set=tiny", "--max-epochs=2", "--learning-rates=0.01", "--task=pitch"]
    probe_argv = [f"--checkpoint={wd}", f"--step={step}", f"--output={folder}", *quick]
    assert probe_cli.main([*probe_argv, f"--cache-dir={stage.probe_cache}"]) == 0
  if argv[1] == "benchmarks/teacher_ceiling.py":  # a few crops, a narrow MLP
    stage.prepared(command, option_value(args, "--data"))
    if (stats := option_value(args, "--config.objective.target_stats")) is not None:
      stage.stats(stats)
    args = [a for a in args if not a.startswith(("--crops=", "--hidden="))]
    args += ["--crops=32", "--hidden=16"]
  if argv[1] == "benchmarks/learning.py":  # the tiny recipe for 6 steps, one quick probe
    drop = ("--minutes=", "--recipe=", "--set=", "--tasks=", "--curve-tasks=", "--steps-per-s=")
    args = [a for a in args if not a.startswith(drop)]
    args += ["--recipe=configs/mert.py:tiny", "--minutes=0.1", "--steps-per-s=1"]
    args += ["--checkpoint-every=3", "--set=tiny", "--tasks=pitch", "--max-epochs=2"]
    args += ["--curve-tasks=pitch"]
    for a in args:  # a statistics file the command passes: the session corpus's
      if a.startswith("--config=objective.target_stats="):
        stage.stats(a.split("=", 2)[2])
    args += [f"--cache-dir={stage.probe_cache}", "--kmeans-max-fit-frames=5000"]
  if argv[1] == "benchmarks/train_step.py":  # 95M and 330M steps: minutes each on a CPU
    out = str(stage.tmp / "rows.jsonl")
    steps = "--steps=0" if "--steps=0" in args else "--steps=1"  # compile only, or one step
    lengths = (
      "--seconds=2,3"
      if any(a.startswith("--seconds=") and "," in a for a in args)
      else ("--seconds=2")
    )
    drop = ("--sizes=", "--batches=", "--steps=", "--json=", "--seconds=")
    args = [a for a in args if not a.startswith(drop)]
    args += ["--sizes=tiny", "--batches=1", steps, lengths, f"--json={out}"]
    child = lambda a, size, batch, seconds: module.run_one(
      size, batch, seconds, a.steps, a.mode, a.set, ""
    )
    stage.monkeypatch.setattr(module, "_child", child)
  stage.monkeypatch.setattr(sys, "argv", [script, *args])
  first_learning = next(c for c in COMMANDS if program(c.argv) == "benchmarks/learning.py")
  if argv[1] == "benchmarks/learning.py" and command != first_learning:
    # The docs' first learning.py line runs whole (below); a later one (other flags, the same
    # stages) runs through its flags, the corpus and the statistics up to the training call.
    def first_train_call(config, workdir):
      assert config.total_steps >= 1 and workdir == option_value(args, "--workdir")
      raise FirstStepsDone

    stage.monkeypatch.setattr(module, "train", first_train_call)
    with pytest.raises(FirstStepsDone):
      module.main()
    return
  module.main()
  assert stage.capsys.readouterr().out.strip()
  if argv[1] == "benchmarks/learning.py":  # the curve: step 3 probed, step 6 is the final probe
    out = option_value(args, "--output")
    with open(os.path.join(out, "learning.md")) as f:
      curve_rows = [line for line in f if re.match(r"\| [36] \|", line)]
    assert len(curve_rows) == 2 and os.path.exists(os.path.join(out, "curve.png"))


def run_compile_check(command: Documented, stage: Stage) -> None:
  """The slice, the recipe with its overrides, the batch, the mesh and libtpu's deviceless devices
  for the slice; the compiles (minutes to an hour each: tests/cli/test_compile_check.py compiles a
  tiny step) are where it stops."""

  def first_compile(config, devices, hbm_bytes):
    assert devices and hbm_bytes > 0
    raise FirstStepsDone

  stage.monkeypatch.setattr(aot, "compile_step", first_compile)
  with pytest.raises(FirstStepsDone):
    compile_check_cli.run(args_of(stage.argv(command)))


def run_launcher(command: Documented, stage: Stage) -> None:
  """launch_tpu.sh prints every command it would run (--dry-run), in its shortest and longest
  documented forms."""
  for optional in (False, True):
    args = args_of(stage.argv(command, optional=optional))
    cmd = ["bash", os.path.join(REPO, "launch_tpu.sh"), *args]
    if "--dry-run" not in args:
      cmd.append("--dry-run")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"{command.where}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("+"), proc.stdout[:500]


RUNNERS: dict[str, Callable[[Documented, Stage], Any]] = {
  "venv": run_setup,
  ".": run_setup,
  "pip": run_setup,
  "pytest": run_setup,
  "mert_jax.cli.train": run_train,
  "mert_jax.cli.demo": run_demo,
  "mert_jax.cli.sweep": run_sweep,
  "mert_jax.cli.params": run_params,
  "mert_jax.cli.convert": run_convert,
  "mert_jax.cli.extract": run_extract,
  "mert_jax.plot": run_plot,
  "mert_jax.probe": run_probe,
  "data_pipeline.prepare": run_prepare,
  "mert_jax.objective.target_stats": run_target_stats,
  "benchmarks/learning.py": run_benchmark_script,
  "benchmarks/whole_songs.py": run_benchmark_script,
  "benchmarks/teacher_ceiling.py": run_benchmark_script,
  "data_pipeline.tfds_builder": run_tfds_builder,
  "benchmarks/train_step.py": run_benchmark_script,
  "benchmarks/scaling.py": run_benchmark_script,
  "benchmarks/prepare_engines.py": run_benchmark_script,
  "benchmarks/encodec_modes.py": run_benchmark_script,
  "benchmarks/extract_throughput.py": run_benchmark_script,
  "benchmarks/cpu_kernels.py": run_benchmark_script,
  "benchmarks/probe_curve.py": run_benchmark_script,
  "benchmarks/feature_collapse.py": run_benchmark_script,
  "./launch_tpu.sh": run_launcher,
  "mert_jax.compile_check": run_compile_check,
}


# ----------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory) -> str:
  """Two 16-s files of real music: MUSIC_DIR (one trains the default 1024-centroid k-means)."""
  d = tmp_path_factory.mktemp("music")
  for i in range(2):
    sf.write(d / f"{i}.wav", music_clip(16.0, offset_seconds=16.0 * i), 24000)
  return str(d)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  """DATA_DIR, shared by the commands of this module (in one process, one after another)."""
  return str(tmp_path_factory.mktemp("prepared") / "data")


def test_the_docs_show_commands_and_each_has_a_runner():
  assert len(COMMANDS) > 20
  # docs/continue_pretraining.md's commands are run whole by the recipe test, which reads them
  # from that file (so a command added there is run there).
  from tests.train import test_init_from as recipe_test  # pylint: disable=g-import-not-at-top

  assert os.path.samefile(recipe_test.DOC, os.path.join(REPO, CONTINUE_DOC))
  assert len(documented_commands(CONTINUE_DOC)) >= 4
  assert callable(recipe_test.test_documented_recipe_runs_on_a_tiny_stand_in)
  missing = [f"{c.where}: {c.text}" for c in COMMANDS if program(c.argv) not in RUNNERS]
  assert not missing, "documented commands without a runner here:\n" + "\n".join(missing)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_runs(
  command, tmp_path, trained_workdir, default_data, music_dir, data_dir, monkeypatch, capsys
):
  stage = Stage(tmp_path, trained_workdir, default_data, music_dir, data_dir, monkeypatch, capsys)
  RUNNERS[program(command.argv)](command, stage)
