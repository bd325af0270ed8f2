"""mert-compile-check: one-line refusals (no compile), the fit verdict and the max-batch search
on fake compiles, and one real compile of the tiny step for a TPU v4 chip (needs libtpu)."""

import json
import subprocess
import sys

import pytest

from mert_jax import tpu_topology
from mert_jax.cli import compile_check
from mert_jax.train import aot
from tests.cli.helpers import python_m_error_line

GIB = 2**30


def error_line(capsys, *args: str) -> str:
  """Runs the command in this process; asserts exit status 1 and one ``error:`` line."""
  try:
    status = compile_check.run(list(args))
  except SystemExit as e:  # argparse's refusals exit from the parser, as mert-train's
    status = e.code
  assert status == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: "), err
  return err[0]


def test_unknown_topology_names_the_closest_before_importing_jax() -> None:
  line = python_m_error_line("mert_jax.compile_check", "--config=95m", "--topology=v4-30")
  assert "unknown topology 'v4-30'; did you mean v4-32?" in line


@pytest.mark.parametrize(
  "args, expected",
  [
    (["--config=95m"], "--topology is required"),
    (["--topology=v4-8"], "--config is required"),
    (
      ["--config=95m", "--topology=v4-32", "--config.mesh=[3,1,1]"],
      "--config.mesh=[3, 1, 1] on v4-32 (16 chips)",
    ),
    (["--config=tiny", "--topology=v4-32"], "0.5 clips per chip per micro-batch"),
    (["--config=95m", "--topology=v4-8", "--per-chip-batch=0"], "--per-chip-batch=0"),
    (["--config=95m", "--topology=v4:2x2"], "a v4 topology has 3 positive dimensions"),
    (["--config=95m", "--topology=v4-8", "--config.model.remt=true"], "did you mean model.remat?"),
    (["--config=95m", "--topology=v4-8", "--bogus"], "unrecognized arguments: --bogus"),
  ],
)
def test_bad_input_is_one_line(capsys, args: list[str], expected: str) -> None:
  assert expected in error_line(capsys, *args)


def test_without_libtpu_it_says_how_to_install(capsys, monkeypatch) -> None:
  monkeypatch.setattr(tpu_topology, "libtpu_installed", lambda: False)
  assert "pip install 'libtpu" in error_line(capsys, "--config=95m", "--topology=v4-8")


def fake_compiles(monkeypatch, gib_at) -> list[int]:
  """Replaces the slice's devices and the compile: ``gib_at(per_chip_batch)`` GiB per chip."""
  batches = []
  monkeypatch.setattr(tpu_topology, "devices", lambda s: [object()] * s.chips)

  def compile_step(config, devices, hbm_bytes, clock=None):
    b = int(aot.per_chip_batch_of(config, len(devices)))
    batches.append(b)
    total = int(gib_at(b) * GIB)
    memory = aot.Memory(total, 0, 0, 0, 0, None, total)
    mesh = {"data": len(devices), "fsdp": 1, "tensor": 1}
    return aot.Compiled(b, mesh, memory, aot.Cost(None, None), 1.0, hbm_bytes)

  monkeypatch.setattr(aot, "compile_step", compile_step)
  return batches


def test_a_step_that_does_not_fit_exits_1_naming_the_need(capsys, monkeypatch) -> None:
  fake_compiles(monkeypatch, lambda b: 0.5 + 1.0 * b)
  line = error_line(capsys, "--config=95m", "--topology=v4-8", "--per-chip-batch=32")
  assert line == (
    "error: 95m at 32 clips/chip needs 32.5 GiB per chip, v4 has 32 GiB; find the largest that "
    "fits with --find-max-batch"
  )


def test_find_max_batch_prints_each_compile_and_the_answer(capsys, monkeypatch) -> None:
  batches = fake_compiles(monkeypatch, lambda b: 1.5 + 0.6 * b)  # 50 clips fit in 32 GiB
  argv = ["--config=95m", "--topology=v4-32", "--per-chip-batch=32", "--find-max-batch"]
  assert compile_check.run(argv) == 0
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["per_chip_batch"] for r in rows[:-1]] == batches == [16, 32, 50, 51]
  assert [r["fits"] for r in rows[:-1]] == [True, True, True, False]
  last = rows[-1]
  assert last["kind"] == "max_batch" and last["max_per_chip_batch"] == 50 and last["exact"]
  assert rows[0]["topology_string"] == "v4:2x2x4" and rows[0]["chips"] == 16
  assert rows[0]["global_batch"] == 16 * 16


@pytest.mark.skipif(
  not tpu_topology.libtpu_installed(), reason="needs libtpu: pip install -e '.[test]'"
)
def test_tiny_step_compiles_for_a_v4_chip(tmp_path) -> None:
  # The fastest real compile measured (docs/scaling.md): one v4 chip, 1 clip of the shortest crop
  # the CQT target takes, a one-octave CQT head (the 7-octave CQT target is most of the compile:
  # 40 s of CPU instead of 125 s).
  cmd = [
    sys.executable,
    "-m",
    "mert_jax.compile_check",
    "--config=configs/mert.py:tiny",
    "--topology=v4:1x1x1",
    "--per-chip-batch=1",
    "--config.crop_samples=26400",
    "--config.model.cqt_bins=48",
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = json.loads(proc.stdout.strip().splitlines()[-1])
  assert row["fits"] and row["device_kind"] == "TPU v4" and row["mesh"]["data"] == 1
  mem = row["bytes_per_chip"]
  assert 0 < mem["arguments"] < mem["total"] < 1 * GIB
  assert row["hbm_bytes_per_chip"] == 32 * GIB and row["analytic_flops_per_chip"] > 0
