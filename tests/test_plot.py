"""python -m mert_jax.plot, in process: the curves of a real tiny training run (a PNG of the
expected size that is not blank), a torn last line skipped with a note, one ``error:`` line for
each bad input, and the throughput figure from benchmarks/train_step.py's --json rows."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from matplotlib import image

from mert_jax import plot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 800, 600  # plot.FIG_SIZE_IN at plot.DPI


@pytest.fixture(scope="module")
def workdir(tiny_run) -> str:
  """A real 4-step tiny run (tests/conftest.py): train and eval rows at steps 2 and 4."""
  return tiny_run[0]


def check_png(path) -> None:
  """A PNG of the figure's size with more than a blank page on it."""
  pixels = image.imread(path)
  assert pixels.shape[:2] == (HEIGHT, WIDTH)
  rgb = pixels[..., :3]
  assert (rgb < 0.9).any(axis=-1).mean() > 0.01  # lines, text and axes: over 1% not near-white
  assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # several colours, not one fill


def run(argv: list[str], capsys) -> tuple[int, str, str]:
  code = plot.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def test_curves_of_a_real_run(workdir: str, capsys) -> None:
  rows = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4]
  code, out, err = run([workdir], capsys)
  assert (code, out, err) == (0, f"{workdir}/curves.png\n", "")
  check_png(f"{workdir}/curves.png")


def test_output_path_and_a_torn_last_line(workdir: str, tmp_path, capsys) -> None:
  torn = tmp_path / "torn"
  torn.mkdir()
  shutil.copy(f"{workdir}/metrics.jsonl", torn / "metrics.jsonl")
  torn_line = len(open(f"{workdir}/metrics.jsonl").readlines()) + 1
  with open(torn / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "accuracy": [0.1, 0.')  # killed mid-write
  output = tmp_path / "figs" / "c.png"
  code, out, err = run([str(torn), f"--output={output}"], capsys)
  assert (code, out) == (0, f"{output}\n")
  assert (
    err.startswith(f"note: skipped the torn last line {torn_line} of ") and err.count("\n") == 1
  )
  check_png(output)


@pytest.mark.parametrize(
  "content, message",
  [
    (None, "holds no metrics.jsonl: not a training workdir, or no step logged yet"),
    ("", "is empty: no step has been logged yet"),
    ("\n", "is empty: no step has been logged yet"),
    ('{"step": 1, "lo', "holds no complete row"),
    ('{"step": 1, "loss": 2.0}\nnot json\n{"step": 2, "loss": 1.0}\n', "line 2 is not a JSON"),
    ('{"step": 1, "grad_norm": 2.0}\n', "no training row holds any of loss, loss_codes"),
  ],
)
def test_bad_metrics_are_one_error_line(tmp_path, capsys, content, message) -> None:
  if content is not None:
    (tmp_path / "metrics.jsonl").write_text(content)
  code, out, err = run([str(tmp_path)], capsys)
  assert (code, out) == (1, "")
  assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
  assert not (tmp_path / "curves.png").exists()


def test_missing_workdir_is_one_error_line(tmp_path, capsys) -> None:
  code, _, err = run([str(tmp_path / "nope")], capsys)
  assert code == 1 and err == f"error: {tmp_path / 'nope'}: no such folder\n"


def benchmark_row(size: str, batch: int, clips_per_s: float, mfu: float | None) -> dict:
  """A row as benchmarks/train_step.py's run_one returns it (the keys plot reads, and others)."""
  return {
    "size": size,
    "batch": batch,
    "seconds": 5.0,
    "mode": "full",
    "sets": [],
    "device": "cpu (cpu)",
    "jax": "0.7.0",
    "step_s": batch / clips_per_s,
    "clips_per_s": clips_per_s,
    "mfu": mfu,
    "loss": 40.0,
  }


def test_benchmark_lines_take_the_median_per_batch() -> None:
  rows = [
    benchmark_row("95m", 8, 10.0, 0.2),
    benchmark_row("95m", 8, 14.0, 0.3),
    benchmark_row("95m", 8, 11.0, 0.25),
    benchmark_row("95m", 2, 4.0, None),
    benchmark_row("330m", 2, 1.5, None),
  ]
  assert plot.benchmark_lines(rows) == {
    "95m full cpu (cpu)": [(2, 4.0, None), (8, 11.0, 0.25)],
    "330m full cpu (cpu)": [(2, 1.5, None)],
  }


def test_benchmark_figure(tmp_path, capsys) -> None:
  rows = tmp_path / "bench.jsonl"
  rows.write_text(
    "".join(
      json.dumps(benchmark_row(size, b, scale * b / (b + 4), 0.1 * b / (b + 4))) + "\n"
      for size, scale in (("95m", 30.0), ("330m", 10.0))
      for b in (2, 4, 8, 16)
    )
  )
  code, out, err = run([f"--benchmark={rows}"], capsys)
  assert (code, out, err) == (0, f"{tmp_path / 'bench.png'}\n", "")
  check_png(tmp_path / "bench.png")
  rows.write_text(json.dumps({"size": "95m"}) + "\n")
  code, _, err = run([f"--benchmark={rows}"], capsys)
  assert code == 1 and err.startswith("error: no row holds batch and clips_per_s")


def test_command_line() -> None:
  parser = plot.build_parser()
  assert all(a.help for a in parser._actions)
  for argv in ([], ["wd", "--benchmark=b.jsonl"]):
    with pytest.raises(SystemExit) as e:
      plot.main(argv)
    assert e.value.code == 2


def test_the_committed_benchmark_rows_draw_the_committed_figure(tmp_path, capsys) -> None:
  """benchmarks/README.md's plot command on its committed rows (a real 95M run on the project
  CPU), written to a temporary path instead of docs/images."""
  rows = os.path.join(ROOT, "benchmarks", "results", "train_step_95m_cpu_2026-12-02.jsonl")
  readme = open(os.path.join(ROOT, "benchmarks", "README.md")).read()
  assert f"python -m mert_jax.plot --benchmark={os.path.relpath(rows, ROOT)}" in readme
  out = tmp_path / "throughput.png"
  code, printed, _ = run([f"--benchmark={rows}", f"--output={out}"], capsys)
  assert (code, printed) == (0, f"{out}\n")
  check_png(out)
  (line,) = plot.benchmark_lines(plot.read_rows(rows)[0]).values()
  assert [batch for batch, _, _ in line] == [1, 2, 4]
