"""The trainer's command line, in process: --config and --config.FIELD are parsed by the CLI
(lists, booleans, both ``=`` and space forms, recipes by name from any directory) and handed to
train() with the absl flags; every mistake is one ``error:`` line naming the closest valid name,
before devices are initialised or anything is written; --list-config and --help show the fields.
"""

import os

import pytest
from absl.testing import flagsaver

from mert_jax.cli import train as cli
from mert_jax.train import distributed, fail_fast

TINY = "--config=configs/mert.py:tiny"


@pytest.fixture
def started(monkeypatch):
  """Replaces the device start-up and the trainer: records (config, workdir, distributed args)."""
  calls = []

  def fail(*args, **kwargs):
    raise AssertionError("the command line should have been refused first")

  monkeypatch.setattr(distributed, "initialize_distributed", lambda *a: calls.append(("dist", a)))
  monkeypatch.setattr(cli, "train", lambda config, wd: calls.append(("train", config, wd)))
  with flagsaver.flagsaver():
    yield calls, fail


def _run(argv: list[str]) -> None:
  with pytest.raises(SystemExit) as e:  # absl's app.run ends the process
    cli.run(argv)
  assert e.value.code in (None, 0)


def test_overrides_in_every_form_reach_train(started, tmp_path, monkeypatch) -> None:
  calls, _ = started
  monkeypatch.chdir(tmp_path)  # not the repository root: the recipe is found beside the package
  wd = str(tmp_path / "run")
  argv = [TINY, f"--workdir={wd}", "--config.mesh=[2,1,1]", "--config.optimizer.lr", "1e-4"]
  argv += ["--config.model.remat", "--noconfig.model.conv_bias", "--config.total_steps=1e3"]
  argv += ["--config.data.dir", "/data/x", "--coordinator_address=127.0.0.1:1234"]
  argv += ["--num_processes", "2", "--process_id=1", "--config.optimizer.warmup_steps", "-3"]
  argv += ["--config.distributed.peer_timeout_s=5"]
  _run(argv)
  (_, dist), (_, config, workdir) = calls
  assert dist[:3] == ("127.0.0.1:1234", 2, 1) and workdir == wd
  assert dist[3] == distributed.Timeouts(peer_timeout_s=5.0)  # the job's bounds, from the config
  assert config.mesh == (2, 1, 1) and config.optimizer.lr == 1e-4  # a RunConfig: typed once
  assert config.optimizer.warmup_steps == -3  # a negative number is a value, not an option
  assert config.model.remat is True and config.model.conv_bias is False
  assert config.total_steps == 1000 and type(config.total_steps) is int
  assert config.data.dir == "/data/x" and config.variant == "tiny"
  assert not os.path.exists(wd)  # train() (replaced) is what creates it


@pytest.mark.parametrize("spec", ["mert:tiny", "tiny", "configs/mert.py:TINY"])
def test_recipes_by_name_from_any_directory(spec: str, started, tmp_path, monkeypatch) -> None:
  calls, _ = started
  monkeypatch.chdir(tmp_path)
  _run([f"--config={spec}", f"--workdir={tmp_path}/w"])
  assert calls[-1][1].variant == "tiny" and calls[-1][1].model.hidden_size == 32


@pytest.mark.parametrize(
  "args,line",
  [
    (
      [TINY, "--config.optimizer.learning_rate=1e-4"],
      "error: unknown config field 'optimizer.learning_rate'; did you mean optimizer.lr?",
    ),
    (
      ["--config=configs/mert.py:95n"],
      "error: unknown variant '95n' of configs/mert.py; did you mean 95m? (variants: tiny, small, "
      "95m, 330m, 1b, small_rq, 95m_long, tiny_long)",
    ),
    (["--config=configs/mrt.py:95m"], "did you mean configs/mert.py?"),
    ([TINY, "--config.model.num_layers=two"], "error: model.num_layers: cannot parse 'two' as int"),
    ([TINY, "--config.model.remat=maybe"], "error: model.remat: 'maybe' is not a boolean"),
    ([TINY, "--config.mesh=3"], "error: mesh: '3' is not a list (write it as [a,b,...])"),
    ([TINY, "--config.seed"], "error: --config.seed needs a value"),
    ([TINY, "--noconfig.seed"], "error: --noconfig.seed needs a value"),
    ([TINY, "--config.optimizer=1"], "error: optimizer is a group of fields"),
    ([TINY, "--config.total_steps=-1"], "error: total_steps=-1: must be an integer >= 0"),
    ([TINY, "--config.model.num_heads=5"], "is not divisible by model.num_heads=5"),
    (["--config.seed=1"], "error: --config is required"),
    ([TINY, "--wrkdir=x"], "error: Unknown command line flag 'wrkdir'. Did you mean: workdir ?"),
    # the learning issue's fields (mert_jax/objective/targets.py)
    ([TINY, "--config.objective.targets=bestrk"], "objective.targets='bestrk': choose one of"),
    (
      [TINY, "--config.objective.codebook_weights=[1,0]"],
      "objective.codebook_weights=[1.0, 0.0]: give 8 non-negative weights",
    ),
    (
      [TINY, "--config.objective.cqt_target=log_standardised"],
      "objective.cqt_target=log_standardised needs objective.target_stats=FILE.npz",
    ),
    (
      [TINY, "--config.objective.targets=bestrq"],
      "objective.targets=bestrq with bestrq_norm=corpus needs objective.target_stats=FILE.npz",
    ),
    (
      [TINY, "--config.objective.cqt_target=log_standardised", "--config.objective.target_stats=x"],
      "objective.target_stats=x: not a target statistics file",
    ),
    ([TINY, "--config.objective.cqt_target=log"], "objective.cqt_target='log': choose one of"),
    ([TINY, "--config.objective.mixup_crop_fraction=2"], "objective.mixup_crop_fraction=2.0"),
    ([TINY, "--config.objective.cqt_unmasked_weight=-1"], "objective.cqt_unmasked_weight=-1.0"),
  ],
)
def test_mistakes_are_one_line_before_anything_starts(
  args: list[str], line: str, started, tmp_path, monkeypatch, capsys
) -> None:
  calls, fail = started
  monkeypatch.setattr(distributed, "initialize_distributed", fail)
  monkeypatch.setattr(cli, "train", fail)
  wd = tmp_path / "run"
  try:
    status = cli.run([*args, f"--workdir={wd}"])
  except SystemExit as e:  # absl's own flags are parsed by absl (still one line)
    status = e.code
  err = capsys.readouterr().err
  assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
  assert err.startswith("error: ") and line in err, err
  assert not wd.exists() and not calls


def test_a_bucket_that_cannot_hold_the_run_is_one_line_before_anything_starts(
  started, gcs, monkeypatch, capsys
) -> None:
  calls, fail = started
  monkeypatch.setattr(distributed, "initialize_distributed", fail)
  read_only = f"gs://{gcs.emulator.bucket(read_only=True)}/run"
  missing = "bucket 'no-such-bucket' does not exist (create it with: gcloud storage buckets create"
  cases = [
    ([f"--workdir={gcs.path('run')}", "--config.data.dir=gs://no-such-bucket/data"], missing),
    (["--workdir=gs://no-such-bucket/run"], f"error: --workdir=gs://no-such-bucket/run: {missing}"),
    ([f"--workdir={read_only}"], f"error: --workdir={read_only}: bucket"),
  ]
  for args, line in cases:
    assert cli.run([TINY, *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and line in err, err
  assert "refuses writes with these credentials (Forbidden: " in err
  assert not calls


def test_workdir_is_required(started, capsys) -> None:
  assert cli.run([TINY]) == 1
  assert capsys.readouterr().err.startswith("error: --workdir is required")


def test_list_config_shows_the_resolved_fields_with_their_comments(capsys) -> None:
  assert cli.run(["--config=tiny", "--config.optimizer.lr=3e-4", "--list-config"]) == 0
  out = capsys.readouterr().out
  lines = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
  assert lines["optimizer.lr"].startswith("optimizer.lr = 0.0003 ") and "peak learning rate" in out
  assert lines["model.hidden_size"].split("#")[0].strip() == "model.hidden_size = 32"
  assert "# D" in lines["model.hidden_size"]  # the comment in mert_jax/config.py
  assert "\n# objective: masked prediction (ObjectiveConfig" in out  # its line in configs/mert.py
  assert "the embedded default corpus is prepared under" in out  # a comment above its field


def test_help_lists_the_chosen_recipe_and_the_variants(capsys) -> None:
  with pytest.raises(SystemExit) as e:
    cli.run(["--help", "--config=mert:tiny"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert (
    "variants: tiny, small, 95m, 330m, 1b, small_rq, 95m_long, tiny_long" in out
    and "model.hidden_size = 32" in out
  )
  for option in ("--workdir", "--coordinator_address", "--list-config", "--config.FIELD"):
    assert option in out


@pytest.mark.parametrize(
  "override,line",
  [
    (
      "--config.model.codebook_size=32",
      "the teacher has 8 codebooks of 64 codes but the model expects 8 x 32; set",
    ),
    ("--config.data.train_shards=99", "data.train_shards=99 but the train split has"),
  ],
)
def test_data_that_does_not_fit_the_run_is_one_line_from_the_trainer(
  default_data, override, line, tmp_path, monkeypatch, capsys
) -> None:
  """The real trainer, up to its input stage: the teacher's shape or a train subset the folder
  cannot give is one ``error:`` line naming the folder, exit status 1, no checkpoint."""

  def exit_(code):
    raise SystemExit(code)

  monkeypatch.setattr(distributed, "initialize_distributed", lambda *a: None)
  monkeypatch.setattr(fail_fast.os, "_exit", exit_)
  wd = tmp_path / "run"
  with flagsaver.flagsaver(), pytest.raises(SystemExit) as e:
    cli.run([TINY, f"--workdir={wd}", f"--config.data.dir={default_data}", override])
  err = capsys.readouterr().err
  assert e.value.code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
  assert err.startswith(f"error: {default_data}: ") and line in err, err
  assert not (wd / "checkpoints").exists()
