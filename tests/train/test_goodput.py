"""The goodput account: phases that add up to the wall time, and a restart's replayed steps."""

from __future__ import annotations

import json
import os

import pytest

from mert_jax.train import goodput
from mert_jax.train.loop import train
from tests.train.helpers import tiny


class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def test_the_account_adds_up_and_subtracts_replayed_steps():
  clock = FakeClock()
  good = goodput.Goodput(clock)
  clock.now += 5  # start-up
  good.until_now("startup")
  with good.phase("compile"):
    clock.now += 20
  clock.now += 60  # training steps (no phase)
  with good.phase("checkpoint"):
    clock.now += 15
  good.replayed([{"step": 12, "step_time_s": 2.0}, {"step": 14, "step_time_s": 4.0}], 10)
  a = good.account()
  assert a["time_total_s"] == 100 and a["time_steps_s"] == 60 and a["time_replayed_s"] == 12
  assert a["time_startup_s"] == 5 and a["time_compile_s"] == 20 and a["time_checkpoint_s"] == 15
  assert a["goodput"] == pytest.approx((60 - 12) / 100)
  line = goodput.summary_line(a)
  assert line.startswith("goodput 48.0% of 100.0 s: steps 60.0 s, startup 5.0 s, compile 20.0 s")
  assert line.endswith("checkpoint 15.0 s, replayed after a restart 12.0 s")


def test_a_run_logs_its_goodput_and_a_resume_counts_the_replayed_steps(data_dir, tmp_path, capsys):
  """Every metric row carries the account so far; the run ends with its summary line; a resume
  from an earlier checkpoint counts the steps it does again."""
  wd = str(tmp_path / "run")
  train(tiny(data_dir, total_steps=4, checkpoint_every=2), wd)
  rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  last = rows[-1]
  phases = sum(last[f"time_{p}_s"] for p in goodput.PHASES)
  assert last["time_total_s"] == pytest.approx(last["time_steps_s"] + phases, rel=1e-6)
  assert 0 < last["goodput"] < 1 and last["time_compile_s"] > 0 and last["time_replayed_s"] == 0
  assert "goodput " in capsys.readouterr().out
  train(tiny(data_dir, total_steps=4, checkpoint_every=2, restore_step=2), wd)
  summary = [l for l in capsys.readouterr().out.splitlines() if l.startswith("goodput ")]
  assert len(summary) == 1 and "replayed after a restart " in summary[0], summary
  again = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))][-1]
  assert again["time_replayed_s"] == pytest.approx(
    2 * (rows[2]["step_time_s"] + rows[3]["step_time_s"]) / 2
  )
