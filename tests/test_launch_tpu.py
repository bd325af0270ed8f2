"""launch_tpu.sh: the dry run prints the v4-32 commands, and ``--local=2`` trains with two
processes and checkpoints one data position per process (the process boundary is the point: these
run subprocesses). Resuming with two processes is tests/train/test_loop.py's
test_two_processes_match_one_process."""

import json
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launch_tpu.sh")


@pytest.mark.multiprocess
def test_dry_run_prints_the_v4_32_commands() -> None:
  out = subprocess.run(
    [
      LAUNCHER,
      "--project=proj",
      "--zone=us-central2-b",
      "--accelerator-type=v4-32",
      "--name=mert-95m",
      "--config=configs/mert.py:95m",
      "--workdir=gs://bkt/runs/95m",
      "--spot",
      "--dry-run",
      "--config.optimizer.lr=4e-4",
    ],
    capture_output=True,
    text=True,
    check=True,
    cwd=ROOT,
  ).stdout
  lines = [l for l in out.splitlines() if l.startswith("+ ")]
  g = "--project=proj --zone=us-central2-b"
  assert lines[0] == (
    "+ gcloud compute tpus tpu-vm create mert-95m "
    + g
    + " --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
  )
  assert lines[1].startswith("+ git archive --format=tar.gz")
  ssh = "+ gcloud compute tpus tpu-vm ssh mert-95m " + g + " --worker=all --command="
  assert lines[2].startswith("+ gcloud compute tpus tpu-vm scp ")
  assert lines[2].endswith(g + " --worker=all")
  assert lines[3].startswith(ssh)
  assert "pip\\ install" in lines[3] and "\\[tpu\\]" in lines[3]
  assert lines[4].startswith(ssh)
  assert (
    "mert_jax.cli.train\\ --config=configs/mert.py:95m\\ --workdir=gs://bkt/runs/95m\\ "
    "--config.optimizer.lr=4e-4"
  ) in lines[4]
  queued = subprocess.run(
    [
      LAUNCHER,
      "--project=proj",
      "--zone=z",
      "--accelerator-type=v4-32",
      "--name=n",
      "--config=c",
      "--workdir=w",
      "--queued",
      "--dry-run",
    ],
    capture_output=True,
    text=True,
    check=True,
    cwd=ROOT,
  ).stdout
  assert (
    "+ gcloud compute tpus queued-resources create n --node-id=n --project=proj --zone=z "
    "--accelerator-type=v4-32"
  ) in queued
  bad = subprocess.run([LAUNCHER, "--name=n", "--dry-run"], capture_output=True, text=True)
  assert bad.returncode == 2 and "--project is required" in bad.stderr


@pytest.mark.multiprocess
def test_local_two_processes_train_and_checkpoint(default_data: str, tmp_path) -> None:
  wd = str(tmp_path / "run")
  base = [
    LAUNCHER,
    "--local=2",
    "--local-devices=2",
    "--config=configs/mert.py:tiny",
    f"--workdir={wd}",
    f"--config.data.dir={default_data}",
    "--config.log_every=1",
    "--config.eval_every=0",
    "--config.checkpoint_every=2",
    "--config.data.shuffle_window=16",
  ]
  proc = subprocess.run(
    base + ["--config.total_steps=2"], capture_output=True, text=True, cwd=ROOT, timeout=900
  )
  logs = "".join(open(f"{wd}.process{i}.log").read()[-1500:] for i in range(2))
  assert proc.returncode == 0, proc.stderr + logs
  steps = [json.loads(l)["step"] for l in open(os.path.join(wd, "metrics.jsonl")) if '"loss"' in l]
  assert steps == [1, 2]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2"]
  states = sorted(
    f
    for f in os.listdir(os.path.join(wd, "checkpoints", "2", "data_iter"))
    if f.startswith("process_")
  )
  assert states == ["process_0-of-2.json", "process_1-of-2.json"]  # one data position per process


def test_help_explains_every_option_the_launcher_accepts() -> None:
  """Each option of the launcher's argument loop has a line of its own in --help, with text."""
  source = open(LAUNCHER).read()
  loop = source[source.index('for arg in "$@"; do') : source.index("done", source.index("case"))]
  options = re.findall(r"^\s+(-h\|--help|--[\w.-]+)(?:=\*|\*)?\)", loop, flags=re.M)
  assert len(options) >= 15, options
  proc = subprocess.run([LAUNCHER, "--help"], capture_output=True, text=True, timeout=30)
  assert proc.returncode == 0
  helped = {}
  for line in proc.stdout.splitlines():
    m = re.match(r"^  (-h, --help|--[\w.-]+)(?:=\S+)?\s{2,}(\S.*)$", line)
    if m:
      helped[m.group(1)] = m.group(2)
  for option in options:
    name = (
      "-h, --help"
      if option == "-h|--help"
      else option.rstrip(".") + (".FIELD" if option.endswith(".") else "")
    )
    assert helped.get(name), (option, name, sorted(helped))
