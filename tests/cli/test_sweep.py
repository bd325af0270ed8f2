"""python -m mert_jax.cli.sweep, in process: the tiny sweep trains and summarises; --set values
reach every run typed (``model.remat=false`` is False) and win over the sweep's own overrides; a
bad --set is one error line before any run starts; --tpu --dry-run prints one launch per run."""

import json
import os
from typing import Any

import numpy as np
import pytest
from etils import epath

from mert_jax.cli import sweep as sweep_cli
from mert_jax.train import loop
from tests.cli.helpers import python_m_error_line

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


def test_tiny_sweep_writes_its_summary_ranked_by_probe(default_data: str, tmp_path, capsys) -> None:
  sweep = "--sweep=configs/sweeps/model_size.py:tiny"
  sets = [f"--set=data.dir={default_data}", "--set=model.remat=false"]
  probe = ["probe_every=6", "probe_tasks=pitch", "probe_max_epochs=2"]
  probe += [f"probe_cache_dir={tmp_path / 'probe_cache'}"]
  sets += [f"--set={s}" for s in probe]
  assert sweep_cli.main([sweep, f"--workdir={tmp_path}", *sets]) == 0
  rows = json.load(open(tmp_path / "summary.json"))
  assert sorted(r["run"] for r in rows) == ["tiny-2x32", "tiny-2x64", "tiny-4x32"]
  # ranked by what each model learned: the in-training probe's mean score, best first
  assert all(0.0 <= r["probe_pitch"] <= 1.0 and r["probe_mean"] == r["probe_pitch"] for r in rows)
  assert [r["probe_mean"] for r in rows] == sorted((r["probe_mean"] for r in rows), reverse=True)
  assert "| probe_pitch | probe_mean |" in open(tmp_path / "summary.md").read()
  rows = sorted(rows, key=lambda r: ["tiny-2x32", "tiny-4x32", "tiny-2x64"].index(r["run"]))
  assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]
  assert all(r["step"] == 6 and np.isfinite(r["loss"]) and r["clips_per_s"] > 0 for r in rows)
  assert "| tiny-4x32 |" in open(tmp_path / "summary.md").read()
  assert "| tiny-4x32 |" in capsys.readouterr().out
  configs = {r["run"]: json.load(open(tmp_path / r["run"] / "config.json")) for r in rows}
  assert all(
    c["model"]["remat"] is False and c["data"]["dir"] == default_data for c in configs.values()
  )
  assert configs["tiny-4x32"]["model"]["num_layers"] == 4
  assert configs["tiny-2x64"]["model"]["hidden_size"] == 64


SWEEP = """
def get_sweep(name):
  return [("a", "tiny", {"model.remat": True, "total_steps": 6}),
          ("b", "tiny", {"model.num_layers": 3})]
"""


@pytest.fixture
def fake_train(monkeypatch) -> list[tuple[Any, str]]:
  """Replaces the trainer: records (config, workdir) and returns fixed metrics."""
  calls = []

  def train(config, workdir):
    calls.append((config, workdir))
    return {"metrics": {"step": config.total_steps, "loss": 1.5, "clips_per_s": 2.0}}

  monkeypatch.setattr(loop, "train", train)
  return calls


def test_set_is_typed_and_wins_over_the_sweep(fake_train, tmp_path, capsys) -> None:
  (tmp_path / "sweep.py").write_text(SWEEP)
  sets = ["model.remat=false", "mesh=[2,1,1]", "optimizer.lr=1", "data.dir=/data/x"]
  argv = [f"--sweep={tmp_path / 'sweep.py'}:x", f"--workdir={tmp_path / 'w'}"]
  assert sweep_cli.main(argv + [f"--set={s}" for s in sets]) == 0
  (a, wd_a), (b, wd_b) = fake_train
  assert (wd_a, wd_b) == (str(tmp_path / "w" / "a"), str(tmp_path / "w" / "b"))
  assert a.model.remat is False and b.model.remat is False
  assert a.mesh == b.mesh == [2, 1, 1]
  assert isinstance(a.optimizer.lr, float) and a.optimizer.lr == 1.0
  assert a.data.dir == "/data/x"
  assert (a.total_steps, b.total_steps, b.model.num_layers) == (6, 200, 3)
  assert [r["run"] for r in json.load(open(tmp_path / "w" / "summary.json"))] == ["a", "b"]
  capsys.readouterr()


def test_a_sweep_in_a_bucket(fake_train, gcs, tmp_path, capsys) -> None:
  (tmp_path / "sweep.py").write_text(SWEEP)
  sweep = f"--sweep={tmp_path / 'sweep.py'}:x"
  assert sweep_cli.main([sweep, f"--workdir={gcs.path('sweep')}"]) == 0
  assert [wd for _, wd in fake_train] == [gcs.path("sweep", "a"), gcs.path("sweep", "b")]
  rows = json.loads(epath.Path(gcs.path("sweep", "summary.json")).read_text())
  assert [r["run"] for r in rows] == ["a", "b"]
  assert "| a |" in epath.Path(gcs.path("sweep", "summary.md")).read_text()
  capsys.readouterr()
  assert sweep_cli.main([sweep, "--workdir=gs://no-such-bucket/sweep"]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith(
    "error: --workdir=gs://no-such-bucket/sweep: bucket 'no-such-bucket' does not exist"
  )
  assert len(fake_train) == 2  # no run started


@pytest.mark.parametrize(
  "assignment,msg",
  [
    ("model.nope=1", "unknown config field 'model.nope'"),
    ("model.remat=maybe", "model.remat: 'maybe' is not a boolean"),
    ("model.num_heads=5", "model.hidden_size=32 is not divisible by model.num_heads=5"),
    ("model.remat", "'model.remat': overrides are FIELD=VALUE"),
  ],
)
def test_bad_set_is_one_error_line_before_any_run(
  fake_train, assignment: str, msg: str, tmp_path, capsys
) -> None:
  argv = ["--sweep=configs/sweeps/model_size.py:tiny", f"--workdir={tmp_path}"]
  assert sweep_cli.main(argv + [f"--set={assignment}"]) == 1
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1 and msg in err, err
  assert not fake_train and not os.listdir(tmp_path)


@pytest.mark.multiprocess
def test_tpu_dry_run_launches_one_slice_per_run(capfd) -> None:
  tpu = ["--tpu", "--project=p", "--zone=z", "--accelerator-type=v4-64", "--dry-run"]
  argv = ["--sweep=configs/sweeps/model_size.py:full", "--workdir=gs://b/sweep/", *tpu]
  assert sweep_cli.main(argv + ["--set=model.remat=false"]) == 0
  out = capfd.readouterr().out
  for run in ("95m", "330m", "1b"):
    assert (
      f"+ gcloud compute tpus tpu-vm create mert-{run} --project=p --zone=z "
      f"--accelerator-type=v4-64"
    ) in out
    assert (
      f"--config=configs/mert.py:{run}\\ --workdir=gs://b/sweep/{run}\\ --config.model.remat=false"
    ) in out


@pytest.mark.multiprocess
def test_python_m_prints_one_line_and_no_traceback(tmp_path) -> None:
  line = python_m_error_line(
    "mert_jax.cli.sweep",
    "--sweep=configs/sweeps/model_size.py:tiny",
    f"--workdir={tmp_path}",
    "--set=model.nope=1",
  )
  assert "unknown config field 'model.nope'" in line
