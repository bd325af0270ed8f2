"""What a person sees: the console's formatters and throughput clock (a fake clock), the TensorBoard
runs read back from their event files, and one tiny in-process run whose compile, evaluations and
checkpoint saves each take 'hours' on a fake clock that none of its throughput rows may include."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
from tensorboardX.proto import event_pb2

from data_pipeline.tfrecord import read_records
from mert_jax.model.mert import param_table
from mert_jax.recipe import model_config_from
from mert_jax.train import console
from mert_jax.train.metrics import MetricWriter
from tests.train.helpers import COMPILE_S, EVAL_S, SAVE_S, FakeClock, rows, tiny

# ############################################################ formatters


@pytest.mark.parametrize(
  "seconds,want",
  [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s"), (3725, "1h02m"), (90_000, "25h00m")],
)
def test_format_duration(seconds, want):
  assert console.format_duration(seconds) == want


def test_format_duration_of_an_unknown_eta():
  assert console.format_duration(math.inf) == "?"


@pytest.mark.parametrize(
  "n,want", [(512, "512"), (63_200, "63.2K"), (94_371_712, "94.4M"), (1_234_000_000, "1.23B")]
)
def test_format_count(n, want):
  assert console.format_count(n) == want


@pytest.mark.parametrize("x,want", [(0.4091, "0.409"), (52.13, "52.1"), (3071.6, "3,072")])
def test_format_rate(x, want):
  assert console.format_rate(x) == want


def summary(**over) -> console.RunSummary:
  values = dict(
    variant="95m",
    params=94_371_712,
    backbone_params=94_000_000,
    platform="gpu",
    device_kind="NVIDIA H200",
    num_devices=16,
    num_processes=2,
    mesh={"data": 4, "fsdp": 2, "tensor": 2},
    batch_shards=8,
    batch_size=1024,
    clip_seconds=5.0,
    grad_accum_steps=4,
    splits={"train": (160_000.0, 4096), "valid": (0.5, 1)},
    data_dir="gs://b/data",
    workdir="gs://b/run",
    start=console.start_point(None),
    total_steps=400_000,
  )
  return console.RunSummary(**{**values, **over})


def test_summary_lines_show_the_run_in_an_aligned_column():
  lines = console.summary_lines(summary())
  assert [line[: console.LABEL_WIDTH].strip() for line in lines] == [
    "model",
    "devices",
    "batch",
    "data",
    "workdir",
    "start",
  ]
  assert all(line[console.LABEL_WIDTH - 1] == " " != line[console.LABEL_WIDTH] for line in lines)
  text = "\n".join(lines)
  assert "MERT 95m: 94.4M parameters (backbone 94M, heads 372K)" in text
  assert "16 x NVIDIA H200 (gpu), 2 processes; mesh data 4 x fsdp 2 x tensor 2" in text
  # 1024 clips = 32 per device x (data 4 x fsdp 2) x 4 micro-batches (tensor shards share clips)
  assert "1024 clips of 5 s per step = 32 per device x 8 batch shards x 4 micro-batches" in text
  assert "train 160,000 h in 4096 shards, valid 0.50 h in 1 shard (gs://b/data)" in text
  assert lines[-1].endswith("from scratch; training to step 400000")


def test_start_point():
  assert console.start_point(None) == "from scratch"
  assert console.start_point(20) == "resuming from checkpoint 20"
  assert console.start_point(None, "m-a-p/MERT-v1-95M (hf)") == "init_from m-a-p/MERT-v1-95M (hf)"
  assert console.start_point(20, "m-a-p/MERT-v1-95M (hf)") == "resuming from checkpoint 20"


def test_step_line():
  metrics = {"loss": 5.0, "loss_codes": 4.5, "loss_cqt": 0.25, "accuracy": [0.1, 0.3], "lr": 1e-3}
  pace = {"steps_per_s": 2.5, "clips_per_s": 20.0, "eta_s": 3725.0}
  line = console.step_line(7, 400, {**metrics, **pace, "mfu": 0.123})
  assert line == (
    "step   7/400  loss 5.0000  codes 4.5000  cqt 0.2500  acc 0.200  lr 0.001  |  "
    "2.5 steps/s  20 clips/s  MFU 12.3%  ETA 1h02m"
  )
  skipped = console.step_line(7, 400, {**metrics, **pace, "nonfinite_total": 3, "eta_s": 1.0})
  assert "nonfinite 3  |" in skipped and "MFU" not in skipped


# ############################################################ throughput


def test_pace_excludes_compilation_and_pauses():
  clock = FakeClock()
  clock.advance(COMPILE_S)  # compiling: before the pace exists
  pace = console.Pace(step=0, total_steps=40, clock=clock, recent_rows=2)
  clock.advance(10.0)  # 10 steps of 1 s
  first = pace.row(10)
  assert first.steps_per_s == pytest.approx(1.0, rel=1e-3)
  assert first.step_time_s == pytest.approx(1.0, rel=1e-3)
  assert first.eta_s == pytest.approx(30.0, rel=1e-3)
  with pace.paused():  # an evaluation
    clock.advance(EVAL_S)
  clock.advance(5.0)  # 10 steps of 0.5 s, with a checkpoint save in their midst
  with pace.paused():
    clock.advance(SAVE_S)
  second = pace.row(20)
  assert second.steps_per_s == pytest.approx(2.0, rel=1e-3)
  assert second.eta_s == pytest.approx(20 / (20 / 15), rel=1e-3)  # pooled: 20 steps in 15 s
  clock.advance(1.0)  # 10 steps in 1 s; the first window leaves the pool of 2
  third = pace.row(30)
  assert third.steps_per_s == pytest.approx(10.0, rel=1e-2)
  assert third.eta_s == pytest.approx(10 / (20 / 6), rel=1e-2)
  clock.advance(1.0)
  with pytest.raises(ValueError, match="previous row was at step 30"):
    pace.row(30)


def test_pace_of_a_resumed_run_counts_from_its_start_step():
  clock = FakeClock()
  pace = console.Pace(step=100, total_steps=200, clock=clock)
  clock.advance(4.0)
  rate = pace.row(110)
  assert rate.steps_per_s == pytest.approx(2.5, rel=1e-3)
  assert rate.eta_s == pytest.approx(36.0, rel=1e-3)


# ############################################################ TensorBoard runs


def events(run_dir) -> list[list[event_pb2.Event]]:
  """The events of each event file of a TensorBoard run folder, oldest file first."""
  files = sorted(os.listdir(run_dir), key=lambda f: os.path.getmtime(os.path.join(run_dir, f)))
  out = []
  for name in files:
    assert ".tfevents." in name
    out.append([event_pb2.Event.FromString(r) for r in read_records(os.path.join(run_dir, name))])
  return out


def tags(run_dir) -> set[str]:
  return {v.tag for file in events(run_dir) for e in file for v in e.summary.value}


def test_train_and_eval_runs_share_tags_and_a_resume_purges_both(tmp_path):
  wd = str(tmp_path)
  w = MetricWriter(wd)
  for step in (1, 2, 3):
    w.write(step, {"loss": 1.0 / step, "accuracy": [0.1, 0.2], "clips_per_s": 9.0})
  w.write(2, {"loss": 2.0, "accuracy": [0.3, 0.4]}, run="eval")
  w.close()
  assert tags(tmp_path / "tb" / "train") == {"loss", "accuracy/0", "accuracy/1", "clips_per_s"}
  assert tags(tmp_path / "tb" / "eval") == {"loss", "accuracy/0", "accuracy/1"}
  assert [r for r in rows(wd) if r["step"] == 2][1] == {
    "step": 2,
    "eval_loss": 2.0,
    "eval_accuracy": [0.3, 0.4],
  }

  resumed = MetricWriter(wd)
  resumed.resume(1)  # steps 2 and 3 are replayed; this session writes nothing to the eval run
  resumed.close()
  for run in ("train", "eval"):
    old, new = events(tmp_path / "tb" / run)  # the old file kept, a new one beginning with...
    assert any(v.tag == "loss" for e in old for v in e.summary.value)
    purge = [e for e in new if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in purge] == [(2, event_pb2.SessionLog.START)]
  assert [r["step"] for r in rows(wd)] == [1]


def test_tensorboard_run_opens_lazily_and_closes_with_the_writer(tmp_path):
  w = MetricWriter(str(tmp_path))
  w.resume(4)
  assert not (tmp_path / "tb").exists()  # nothing opened before it is used
  tb = w.tensorboard("eval")
  assert w.tensorboard("eval") is tb
  tb.add_histogram("codes/0", [1.0, 2.0, 2.0], 5)
  w.close()  # flushes
  (file,) = events(tmp_path / "tb" / "eval")
  assert [e.step for e in file if e.HasField("session_log")] == [5]  # the resume's purge step
  assert any(v.tag == "codes/0" and v.HasField("histo") for e in file for v in e.summary.value)
  with pytest.raises(ValueError, match="TensorBoard run 'test'"):
    w.tensorboard("test")


def test_a_process_that_writes_nothing_gets_a_silent_tensorboard(tmp_path):
  w = MetricWriter(str(tmp_path), enabled=False)
  assert w.tensorboard("eval").add_image("x", object(), 1) is None
  w.write(1, {"loss": 1.0}, run="eval")
  w.close()
  assert os.listdir(tmp_path) == []


# ############################################################ a tiny run, on a fake clock


def test_tiny_run_prints_a_summary_and_the_compile(tiny_run, data_dir):
  wd, text, result = tiny_run
  lines = text.splitlines()
  labels = [line.split()[0] for line in lines[:6]]
  assert labels == ["model", "devices", "batch", "data", "workdir", "start"], text
  table = dict(param_table(model_config_from(tiny(data_dir))))
  total, heads = console.format_count(table["total"]), console.format_count(table["heads"])
  assert lines[0].split(None, 1)[1].startswith(f"MERT tiny: {total} parameters (backbone ")
  assert lines[0].endswith(f", heads {heads})")
  assert re.match(r"devices +8 x cpu, 1 process; mesh data 8 x fsdp 1 x tensor 1$", lines[1])
  assert "8 clips of 2 s per step = 1 per device x 8 batch shards x 1 micro-batch" in lines[2]
  manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
  data = [
    f"{name} {split['hours']:.2f} h in {console.plural(len(split['shards']), 'shard')}"
    for name, split in manifest["splits"].items()
  ]
  assert lines[3].endswith(f"{', '.join(data)} ({data_dir})"), lines[3]
  assert lines[4].endswith(wd) and lines[5].endswith("from scratch; training to step 4")
  assert lines[6:8] == [console.COMPILING, f"compiled in {COMPILE_S:.1f} s"]
  assert result["train_step_compiles"] == 1


def test_tiny_run_rows_exclude_compile_evaluation_and_saves(tiny_run):
  wd, text, _ = tiny_run
  steps = [line for line in text.splitlines() if line.startswith("step ")]
  assert len(steps) == 2, text
  pattern = (
    r"step {}/4  loss \S+  codes \S+  cqt \S+  acc \S+  lr \S+  \|  \S+ steps/s  \S+ clips/s  "
    r"ETA \d+s$"
  )
  assert re.match(pattern.format(2), steps[0]) and re.match(pattern.format(4), steps[1])
  evals = [line for line in text.splitlines() if line.startswith("eval ")]
  assert [line.endswith(f"|  {EVAL_S:.1f} s") for line in evals] == [True, True], text
  train_rows = [r for r in rows(wd) if "loss" in r]
  assert [r["step"] for r in train_rows] == [2, 4]
  for r in train_rows:  # a window of fake-clock ticks, never the charged compile/eval/save
    assert 0 < r["step_time_s"] < 1.0, r
    assert r["clips_per_s"] == pytest.approx(8 * r["steps_per_s"])
    assert r["step_time_s"] == pytest.approx(1 / r["steps_per_s"])
  assert train_rows[-1]["eta_s"] == 0.0


def test_tiny_run_tensorboard_runs_overlay(tiny_run):
  wd, _, _ = tiny_run
  train_tags, eval_tags = (
    tags(os.path.join(wd, "tb", "train")),
    tags(os.path.join(wd, "tb", "eval")),
  )
  shared = {"loss", "loss_codes", "loss_cqt", "features_pen", "accuracy/0", "accuracy/7"}
  assert shared <= train_tags and shared <= eval_tags
  assert {"clips_per_s", "steps_per_s", "step_time_s", "eta_s", "lr"} <= train_tags
  assert not any(t.startswith("eval") for t in eval_tags | train_tags)
  # The pictures of the fixed validation clip (eval_pictures.py), at each evaluation.
  assert {"cqt/clip0", "codes/usage", "codes/predicted/k0", "codes/teacher/k7"} <= eval_tags
  evals = [r for r in rows(wd) if "eval_loss" in r]
  assert [r["step"] for r in evals] == [2, 4]
  assert all(k == "step" or k.startswith("eval_") for r in evals for k in r)
  assert json.loads(json.dumps(evals)) == evals  # plain JSON values
