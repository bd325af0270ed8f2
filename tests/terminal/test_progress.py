"""mert_jax/terminal/progress.py: the line mode's lines under a fake clock (counts, percent, ETA,
the final line, no carriage return), tqdm on a terminal, laziness, and the k-means fit's report
(same centroids with and without it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tqdm import tqdm

from data_pipeline.teachers.base import num_tokens
from data_pipeline.teachers.kmeans import KMeansTeacher
from data_pipeline.teachers.kmeans_features import KMeansConfig
from mert_jax.terminal import progress as progress_lib
from mert_jax.terminal.progress import LineProgress, counted_line, format_duration, progress, stage


class FakeClock:
  """Seconds that move only when a test says so."""

  def __init__(self) -> None:
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


class Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_format_duration():
  assert [format_duration(s) for s in (0, 0.4, 45, 62, 3599, 3725)] == [
    "0s",
    "0s",
    "45s",
    "1m02s",
    "59m59s",
    "1h02m",
  ]


def test_line_mode_counts_percent_eta_and_final_line():
  clock, out = FakeClock(), io.StringIO()
  p = LineProgress(
    480, "decode", "files", out, clock=clock, every_percent=10, min_seconds=5, heartbeat_seconds=60
  )
  clock.t = 2.0
  p.update(60)  # 12.5% more, but only 2 s after the last line: none
  clock.t = 62.0
  p.update(60)  # 25%: due
  clock.t = 63.0
  p.update(10)  # 2% more: none
  clock.t = 130.0
  p.update(1)  # 68 s since the last line: a heartbeat
  clock.t = 248.0
  p.update(349)  # all done: the final line waits for close
  p.close()
  p.close()  # once only
  assert out.getvalue().splitlines() == [
    "decode: 0/480 files (0%)",
    "decode: 120/480 files (25%), 1m02s elapsed, ETA 3m06s",
    "decode: 131/480 files (27%), 2m10s elapsed, ETA 5m46s",
    "decode: 480/480 files (100%), done in 4m08s",
  ]
  assert "\r" not in out.getvalue()


def test_line_mode_stopped_early_and_postfix():
  clock, out = FakeClock(), io.StringIO()
  p = LineProgress(10, "tokens", "files", out, clock=clock)
  clock.t = 30.0
  p.set_postfix_str("2 redone")
  p.update(3)
  p.close()
  assert out.getvalue().splitlines()[1:] == [
    "tokens: 3/10 files (30%), 30s elapsed, ETA 1m10s, 2 redone",
    "tokens: 3/10 files (30%), stopped after 30s, 2 redone",
  ]


def test_progress_wrapper_is_lazy_counts_finished_items_and_knows_len():
  clock, out = FakeClock(), io.StringIO()
  items = ["a", "b", "c"]
  it = progress(items, desc="files", unit="files", stream=out, clock=clock)
  assert out.getvalue() == ""  # nothing before the first item is asked for
  seen = []
  for item in it:
    seen.append(item)
    clock.t += 10.0
  assert seen == items
  assert out.getvalue().splitlines() == [
    "files: 0/3 files (0%)",
    "files: 1/3 files (33%), 10s elapsed, ETA 20s",
    "files: 2/3 files (67%), 20s elapsed, ETA 10s",
    "files: 3/3 files (100%), done in 30s",
  ]


def test_unknown_total_and_disabled():
  out = io.StringIO()
  assert list(progress(iter(range(3)), desc="scan", unit="items", stream=out)) == [0, 1, 2]
  assert out.getvalue().splitlines() == ["scan: 0 items", "scan: 3 items, done in 0s"]
  quiet = io.StringIO()
  assert list(progress([1, 2], desc="x", stream=quiet, enabled=False)) == [1, 2]
  assert quiet.getvalue() == ""


def test_terminal_gets_tqdm_and_other_streams_get_lines():
  term = Terminal()
  bar = progress_lib.bar(5, "decode", "files", term)
  assert isinstance(bar, tqdm)
  bar.update(5)
  bar.close()
  assert "\r" in term.getvalue() and "5/5" in term.getvalue()
  assert isinstance(progress_lib.bar(5, "decode", "files", io.StringIO()), LineProgress)
  assert list(progress([1, 2], desc="t", stream=Terminal())) == [1, 2]


def test_counted_line():
  assert counted_line(12, 300, "wrote x.npy: (3, 374, 32)", 62.0) == (
    "[12/300] wrote x.npy: (3, 374, 32), 1m02s elapsed, ETA 24m48s"
  )
  assert counted_line(3, 3, "wrote y.npy", 5.0) == "[3/3] wrote y.npy, 5s elapsed"


@pytest.mark.parametrize("max_no_improvement", [100, 2])  # 2: the fits stop before the limit
def test_kmeans_fit_reports_steps_and_keeps_its_centroids(music, capsys, max_no_improvement):
  cfg = KMeansConfig(
    num_codebooks=2,
    codebook_size=16,
    batch_size=64,
    max_iter=4,
    max_no_improvement=max_no_improvement,
  )
  quiet = KMeansTeacher.fit([music], config=cfg, seed=0)
  assert capsys.readouterr().err == ""
  shown = KMeansTeacher.fit([music], config=cfg, seed=0, progress=True)
  np.testing.assert_array_equal(shown.centroids, quiet.centroids)
  lines = capsys.readouterr().err.splitlines()
  frames = num_tokens(len(music), cfg.hop)
  limit = cfg.max_iter * frames // cfg.batch_size
  assert lines[0].startswith(f"k-means: 2 residual codebooks x 16 centroids on {frames} frames")
  assert f"up to {limit} mini-batch steps of 64 frames" in lines[0]
  assert lines[1] == f"k-means: 0/{2 * limit} steps (0%)"
  assert lines[-1].startswith("k-means: ") and ", done in " in lines[-1]
  assert lines[-1].endswith(
    f"2 codebooks, 2 converged before the {limit}-step limit"
    if max_no_improvement == 2
    else "2 codebooks"
  )
  assert "\r" not in "".join(lines)


def test_stage_names_a_long_silence_before_and_after() -> None:
  times = iter([10.0, 75.0])
  out = io.StringIO()
  with stage("reading ckpt", out, clock=lambda: next(times)):
    out.write("(work)\n")
  assert out.getvalue() == "reading ckpt...\n(work)\nreading ckpt: done in 1m05s\n"
