"""launch_tpu.sh against a fake Google Cloud CLI (tests/launcher/fake_gcloud.py: every call
recorded, the slice's workers simulated on this machine, each with its own home): a queued slice
polled until ACTIVE, the working tree shipped, uv setting up Python 3.11, two workers training as
one JAX job, logs, stop, restart resuming from the checkpoint, preemption and re-creation,
delete; plus the dry run, --help and the one-line refusals. The README's launcher commands are
the ones run."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.launcher import fake_gcloud

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "launch_tpu.sh")
FAKE_BIN = os.path.join(ROOT, "tests", "launcher", "bin")
FAST = ("--skip-compile-check", "--poll-interval=0")  # no fit check (its own tests), no sleeps


class Cloud:
  """The fake gcloud's state folder and an environment that puts it first on PATH."""

  def __init__(self, state: str):
    self.state = state
    self.env = {
      **os.environ,
      "PATH": os.pathsep.join([FAKE_BIN, os.path.dirname(sys.executable), os.environ["PATH"]]),
      "FAKE_GCLOUD_STATE": state,
      "FAKE_GCLOUD_PYTHON": sys.executable,
      "PYTHON": sys.executable,
    }

  def launch(self, *args: str, launcher: str = LAUNCHER, ok: bool = True, **env: str):
    """Runs the launcher; ``ok``: assert it exited 0."""
    proc = subprocess.run(
      [launcher, *args],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(launcher),
      env={**self.env, **env},
      timeout=600,
    )
    if ok:
      assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc

  def calls(self) -> list[str]:
    """Each recorded gcloud call as 'GROUP VERB', in order."""
    return [" ".join(a[2:4]) for a in fake_gcloud.calls(self.state)]

  def worker_calls(self) -> list[dict]:
    path = os.path.join(self.state, "worker_calls.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []

  def home(self, name: str, worker: int) -> str:
    return fake_gcloud.home_of(self.state, name, worker)

  def log(self, name: str, worker: int) -> str:
    path = os.path.join(self.home(name, worker), "mert-train.log")
    return open(path).read() if os.path.exists(path) else ""

  def wait_log(self, name: str, worker: int, text: str, timeout: float = 600) -> str:
    """Waits until worker's training log shows ``text``; returns the log."""
    end = time.time() + timeout
    while text not in (log := self.log(name, worker)):
      assert time.time() < end, f"worker {worker}'s log never showed {text!r}:\n{log[-3000:]}"
      time.sleep(0.2)
    return log


def one_line(proc: subprocess.CompletedProcess, status: int = 1) -> str:
  """The launcher's one error line: its only one on stderr, the last line (gcloud's own output,
  and the warning about uncommitted changes, may come before it)."""
  assert proc.returncode == status, (proc.returncode, proc.stderr)
  ours = [
    l
    for l in proc.stderr.splitlines()
    if l.startswith("launch_tpu.sh:") and not l.startswith("launch_tpu.sh: warning:")
  ]
  assert len(ours) == 1 and proc.stderr.endswith(ours[0] + "\n"), proc.stderr
  return ours[0]


@pytest.fixture
def cloud(tmp_path):
  c = Cloud(str(tmp_path / "gcloud"))
  yield c
  fake_gcloud.kill_workers(c.state)  # whatever a failed test left running


def readme_launcher_commands(keep: tuple[str, ...] = ()) -> dict[str, list[str]]:
  """The README's ``./launch_tpu.sh`` lines by action (launch, logs, stop, delete, local), as
  argv: continuation lines joined, comments dropped, ``[OPTION]`` kept when in ``keep``."""
  text = open(os.path.join(ROOT, "README.md")).read()
  found = {}
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      argv = shlex.split(line, comments=True)
      if argv[:1] != ["./launch_tpu.sh"]:
        continue
      argv = [a.strip("[]") for a in argv[1:] if not a.startswith("[") or a.strip("[]") in keep]
      action = next((a[2:] for a in argv if a in ("--logs", "--stop", "--delete")), "launch")
      found["local" if any(a.startswith("--local=") for a in argv) else action] = argv
  assert set(found) == {"launch", "logs", "stop", "delete", "local"}, found
  return found


def _set(argv: list[str], **values: str) -> list[str]:
  """``argv`` with --KEY=... replaced (keys with _ for - and __ for .)."""
  out = []
  for a in argv:
    key = a.split("=", 1)[0][2:].replace("-", "_").replace(".", "__")
    out.append(f"{a.split('=', 1)[0]}={values[key]}" if key in values else a)
  return out


# ----------------------------------------------------------------------------- the README's path
#
# The launcher is tested with a stub trainer: what the launcher owns is the slice's life, the
# shipped tree, the set-up, the start, the logs, the stop and the restart. That the real trainer,
# started as the launcher starts it (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
# forms one job, agrees on a step at SIGTERM, saves it and resumes from it is the trainer's, and is
# tested with two real trainer processes in tests/train/test_loop.py
# (test_two_processes_match_one_process_through_a_preemption) and
# tests/train/test_multihost_faults.py.

STEPPING_TRAINER = '''"""Stands in for the trainer under the README's commands: a step line
each tenth of a second; SIGTERM ends it with a line naming its step."""
import os, signal, sys, time
e = os.environ
print("stub", e["JAX_PROCESS_ID"], "of", e["JAX_NUM_PROCESSES"], sys.argv[1:], flush=True)
step = 0
def stop(*_):
  print(f"stub stopped by SIGTERM at step {step}", flush=True)
  sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
  step += 1
  print(f"step {step:4d}/1000", flush=True)
  time.sleep(0.1)
'''


@pytest.mark.multiprocess
def test_the_readme_commands_queue_a_slice_log_stop_and_recreate_it(cloud: Cloud, tmp_path) -> None:
  """The README's commands on a fake v4-16 (2 workers): queued until ACTIVE, shipped, set up,
  one trainer per worker with the job's coordinates; logs of all workers; --stop ends both; after
  a Spot preemption the launch command re-creates the slice and starts again; delete."""
  launcher = _stub_checkout(str(tmp_path / "checkout"), trainer=STEPPING_TRAINER)
  wd = str(tmp_path / "run")
  cmds = readme_launcher_commands(keep=("--spot", "--queued", "--worker=all"))
  launch = _set(cmds["launch"], accelerator_type="v4-16", config="configs/mert.py:tiny", workdir=wd)
  assert "--queued" in launch and "--spot" in launch
  name = next(a.split("=", 1)[1] for a in launch if a.startswith("--name="))

  def stop() -> None:
    """--stop: both trainers get SIGTERM and end; their pid files are gone."""
    out = cloud.launch(*cmds["stop"], launcher=launcher).stdout
    said = "\n".join(l for l in out.splitlines() if not l.startswith("+ "))  # not the command
    assert "worker 0: stopping the trainer" in said and "worker 1: stopping the trainer" in said
    assert "did not stop" not in said, said
    for w in range(2):
      assert not os.path.exists(os.path.join(cloud.home(name, w), "mert-train.pid"))
      assert "stub stopped by SIGTERM at step" in cloud.log(name, w)

  out = cloud.launch(*launch, *FAST, launcher=launcher).stdout
  assert "waiting for ACTIVE" in out and "started training" in out
  assert cloud.calls() == [
    "queued-resources describe",  # none yet
    "tpu-vm describe",  # none either
    "queued-resources create",
    *["queued-resources describe"] * 4,  # ACCEPTED, WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE
    "tpu-vm describe",  # READY
    "tpu-vm ssh",  # stop what runs, free the TPU
    "tpu-vm scp",  # the working tree
    "tpu-vm ssh",  # set up
    "tpu-vm ssh",  # start
  ]
  create = fake_gcloud.calls(cloud.state)[2]
  assert create[4:] == [
    name,
    f"--node-id={name}",
    "--project=P",
    "--zone=us-central2-b",
    "--accelerator-type=v4-16",
    "--runtime-version=tpu-ubuntu2204-base",
    "--spot",
  ]
  for w in range(2):  # uv was there: a venv, the install (the stub test checks their arguments)
    uv = [c["argv"][:2] for c in cloud.worker_calls() if c["worker"] == str(w)]
    assert uv == [["venv", "--python"], ["pip", "install"]]
    log = cloud.wait_log(name, w, "step    2/1000")
    passed = [a for a in launch if a.startswith(("--config", "--workdir"))]  # the trainer's own
    assert passed[:2] == ["--config=configs/mert.py:tiny", f"--workdir={wd}"]
    assert f"stub {w} of 2 {passed}" in log, log[-3000:]
  logs = cloud.launch(*cmds["logs"], launcher=launcher).stdout  # --worker=all
  assert re.search(r"^\[worker 0\] step +2/1000", logs, flags=re.M), logs
  assert "[worker 1] === launch_tpu.sh: start" in logs

  stop()

  # A Spot preemption (queued resource SUSPENDED): the launch command deletes and re-creates the
  # slice, sets it up again and starts the trainers on the new disks.
  fake_gcloud.preempt(cloud.state, name)
  before = len(cloud.calls())
  out = cloud.launch(*launch, *FAST, launcher=launcher).stdout
  assert f"slice {name} is SUSPENDED (preempted or not granted): deleting it" in out
  assert cloud.calls()[before:] == [
    "queued-resources describe",  # SUSPENDED
    "queued-resources delete",
    "queued-resources create",
    *["queued-resources describe"] * 4,
    "tpu-vm describe",
    "tpu-vm ssh",
    "tpu-vm scp",
    "tpu-vm ssh",
    "tpu-vm ssh",
  ]
  for w in range(2):
    assert cloud.wait_log(name, w, "step    2/1000").count("=== launch_tpu.sh: start") == 1

  cloud.launch(*cmds["delete"], launcher=launcher)  # the VMs go, and what ran on them
  assert cloud.calls()[-3:] == ["queued-resources describe", "tpu-vm describe"] + [
    "queued-resources delete"
  ]
  assert not os.path.exists(fake_gcloud.homes_of(cloud.state, name))


# ----------------------------------------------------------------------------- a stub trainer

STUB_TRAINER = '''"""Stands in for the trainer: says which code and job it is; SIGTERM ends it."""
import os, signal, sys, time
e = os.environ
print("stub {version}", __file__, e["JAX_PROCESS_ID"], "of", e["JAX_NUM_PROCESSES"], sys.argv[1:])
print("python", sys.version_info[:2], "coordinator", e["JAX_COORDINATOR_ADDRESS"], flush=True)
stop = lambda *_: (print("stub stopped by SIGTERM", flush=True), sys.exit(0))
signal.signal(signal.SIGTERM, stop)
time.sleep(300)
'''


def _stub_checkout(root: str, trainer: str = STUB_TRAINER) -> str:
  """A git checkout with this launcher and a stub trainer: HEAD has version 'head'; the working
  tree has 'working' (uncommitted), an untracked file, an ignored one and a deleted one."""
  os.makedirs(os.path.join(root, "mert_jax", "cli"))
  shutil.copy(LAUNCHER, root)
  files = {
    "pyproject.toml": '[project]\nname = "stub"\n[project.optional-dependencies]\ntpu = []\n',
    "mert_jax/__init__.py": "",
    "mert_jax/cli/__init__.py": "",
    "mert_jax/cli/train.py": trainer.format(version="head") if trainer is STUB_TRAINER else trainer,
    ".gitignore": "ignored.txt\n",
    "gone.txt": "deleted in the working tree\n",
  }
  for path, text in files.items():
    with open(os.path.join(root, path), "w") as f:
      f.write(text)
  git = ["git", "-C", root, "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(["git", "init", "-q", root], check=True)
  subprocess.run([*git, "add", "-A"], check=True)
  subprocess.run([*git, "commit", "-q", "-m", "stub"], check=True)
  with open(os.path.join(root, "mert_jax/cli/train.py"), "w") as f:
    f.write(trainer.format(version="working") if trainer is STUB_TRAINER else trainer)
  for path in ("untracked.txt", "ignored.txt"):
    open(os.path.join(root, path), "w").close()
  os.remove(os.path.join(root, "gone.txt"))
  return os.path.join(root, "launch_tpu.sh")


@pytest.mark.multiprocess
def test_ships_the_working_tree_installs_uv_restarts_and_recreates_a_preempted_slice(
  cloud: Cloud, tmp_path
) -> None:
  """tpu-vm create waited to READY; the working tree (not HEAD) runs on both workers; uv comes
  from its installer where missing; a re-launch stops the old trainer and reuses the setup; a
  preempted slice is deleted and re-created; --logs --worker=all; --stop; --delete."""
  launcher = _stub_checkout(str(tmp_path / "checkout"))
  name, g = "stub", ["--name=stub", "--project=p", "--zone=z"]
  launch = [*g, "--accelerator-type=v4-16", "--config=c", "--workdir=gs://b/w", *FAST]
  env = {"FAKE_GCLOUD_NODE_STATES": "CREATING,READY", "FAKE_GCLOUD_WORKER_UV": "0"}

  proc = cloud.launch(*launch, launcher=launcher, **env)
  assert "TPU VM stub is CREATING; waiting for READY" in proc.stdout
  assert "warning: shipping the working tree with 3 uncommitted change(s)" in proc.stderr
  assert cloud.calls() == [
    "queued-resources describe",
    "tpu-vm describe",
    "tpu-vm create",
    "tpu-vm describe",  # CREATING
    "tpu-vm describe",  # READY
    "tpu-vm ssh",
    "tpu-vm scp",
    "tpu-vm ssh",
    "tpu-vm ssh",
  ]
  for w in range(2):
    shipped = os.path.join(cloud.home(name, w), "mert-jax")
    assert sorted(os.listdir(shipped)) == [
      ".gitignore",
      "launch_tpu.sh",
      "mert_jax",
      "pyproject.toml",
      "untracked.txt",
    ]
    log = cloud.wait_log(name, w, "coordinator 127.0.0.1:")
    trainer = os.path.join(shipped, "mert_jax/cli/train.py")
    assert f"stub working {trainer} {w} of 2 ['--config=c', '--workdir=gs://b/w']" in log, log
  by_tool = [(c["tool"], c["argv"][:2]) for c in cloud.worker_calls() if c["worker"] == "0"]
  assert by_tool == [
    ("curl", ["-LsSf", "https://astral.sh/uv/install.sh"]),
    ("uv", ["venv", "--python"]),
    ("uv", ["pip", "install"]),
  ]
  home = cloud.home(name, 0)
  venv, install = [c["argv"] for c in cloud.worker_calls() if c["worker"] == "0"][1:]
  assert venv == ["venv", "--python", "3.11", f"{home}/mert-venv"]
  assert install == ["pip", "install", "-q", "--python", f"{home}/mert-venv/bin/python", "-e"] + [
    f"{home}/mert-jax[tpu]"
  ]

  # Re-launch (the restart): the running trainer gets SIGTERM; uv and the venv are reused.
  cloud.launch(*launch, launcher=launcher, **env)
  for w in range(2):
    log = cloud.wait_log(name, w, "stub stopped by SIGTERM")
    assert log.count("=== launch_tpu.sh: start") == 2
  assert [c["argv"][:1] for c in cloud.worker_calls()][6:] == [["pip"], ["pip"]]

  logs = cloud.launch(*g, "--logs", "--worker=all", launcher=launcher).stdout
  assert "[worker 0] stub stopped by SIGTERM" in logs and "[worker 1] stub working" in logs
  assert "stub working" in cloud.launch(*g, "--logs", "--worker=1", launcher=launcher).stdout

  # A Spot preemption: the VM is gone to PREEMPTED; the launch command re-creates it.
  fake_gcloud.preempt(cloud.state, name)
  bad = cloud.launch(*g, "--logs", launcher=launcher, ok=False)
  assert "TPU VM stub is PREEMPTED, not READY" in one_line(bad)
  before = len(cloud.calls())
  out = cloud.launch(*launch, launcher=launcher, **env).stdout
  assert "slice stub is PREEMPTED (preempted or not granted): deleting it" in out
  assert cloud.calls()[before + 2 : before + 4] == ["tpu-vm delete", "tpu-vm create"]
  assert cloud.wait_log(name, 1, "stub working").count("=== launch_tpu.sh: start") == 1  # new disk

  stop = cloud.launch(*g, "--stop", launcher=launcher).stdout
  assert "worker 1: stopping the trainer" in stop and "gives it back" in stop
  assert "stub stopped by SIGTERM" in cloud.log(name, 1)
  cloud.launch(*g, "--delete", launcher=launcher)
  assert cloud.calls()[-1] == "tpu-vm delete"
  again = cloud.launch(*g, "--delete", launcher=launcher)
  assert "nothing to delete" in again.stderr


# ----------------------------------------------------------------------------- refusals


def test_a_failed_or_never_granted_queued_resource_is_one_line(cloud: Cloud) -> None:
  args = ["--name=q", "--project=p", "--zone=z", "--config=c", "--workdir=w", "--queued", *FAST]
  failed = cloud.launch(*args, ok=False, FAKE_GCLOUD_QR_STATES="WAITING_FOR_RESOURCES,FAILED")
  line = one_line(failed)
  assert "queued resource q is FAILED" in line and "--delete" in line
  late = cloud.launch("--name=late", *args[1:], "--wait-timeout=0", ok=False)
  assert "still ACCEPTED after 0 s (--wait-timeout); it stays queued" in one_line(late)
  assert "tpu-vm scp" not in cloud.calls()


def test_the_compile_check_refuses_in_one_line_before_any_slice(cloud: Cloud, tmp_path) -> None:
  """A stand-in for ``python -m mert_jax.compile_check`` (PYTHON) that says the config does not
  fit: the launcher passes its line on with the way out, and creates nothing."""
  shim = tmp_path / "python"
  shim.write_text(
    '#!/bin/sh\necho "$@" > "$0.args"\n'
    'echo "error: 95m needs 41.2 GiB per chip; v4-8 has 32 GiB (try --config.batch_size=512)" >&2\n'
    "exit 1\n"
  )
  shim.chmod(0o755)
  args = ["--name=n", "--project=p", "--zone=z", "--config=configs/mert.py:95m", "--workdir=w"]
  proc = cloud.launch(*args, "--config.model.remat=true", ok=False, PYTHON=str(shim))
  line = one_line(proc)
  assert proc.stderr.count("\n") == 1
  assert "the compile check refused configs/mert.py:95m on v4-8: error: 95m needs 41.2 GiB" in line
  assert "--skip-compile-check" in line
  assert (tmp_path / "python.args").read_text().split() == [
    "-m",
    "mert_jax.compile_check",
    "--config=configs/mert.py:95m",
    "--topology=v4-8",
    "--config.model.remat=true",
  ]
  assert cloud.calls() == []


def test_the_real_compile_check_refuses_an_unknown_slice_before_any_slice(cloud: Cloud) -> None:
  """The real module (``python -m mert_jax.compile_check``): a slice type libtpu has no topology
  for is refused before anything compiles, its closest names in the launcher's one line."""
  args = ["--name=n", "--project=p", "--zone=z", "--config=configs/mert.py:tiny", "--workdir=w"]
  proc = cloud.launch(*args, "--accelerator-type=v4-33", ok=False, PYTHON=sys.executable)
  line = one_line(proc)
  assert "the compile check refused configs/mert.py:tiny on v4-33" in line and "v4-32" in line
  assert cloud.calls() == []


def test_missing_gcloud_and_bad_options_are_one_line(tmp_path) -> None:
  path = str(tmp_path)  # the tools the launcher needs before it looks for gcloud, and no gcloud
  for tool in ("bash", "dirname", "tr"):
    os.symlink(shutil.which(tool), tmp_path / tool)
  cases = {
    ("--name=n", "--project=p", "--zone=z", "--stop"): "gcloud is not on PATH: install the Google",
    ("--name=n", "--dry-run"): "--project is required",
    ("--name=n", "--project=p", "--zone=z", "--logs", "--worker=x"): "--worker must be a worker",
    ("--name=n", "--project=p", "--zone=z", "--stop", "--delete"): "one action each",
    ("--name=n", "--project=p", "--zone=z", "--poll-interval=1m"): "--poll-interval must be",
    ("--name=n", "--project=p", "--zone=z", "--stop", "--follow"): "--follow applies to --logs",
  }
  for args, message in cases.items():
    proc = subprocess.run(
      [LAUNCHER, *args], capture_output=True, text=True, env={**os.environ, "PATH": path}
    )
    assert proc.returncode in (1, 2) and proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert message in proc.stderr, (args, proc.stderr)


# ----------------------------------------------------------------------------- dry run, help


def test_dry_run_prints_the_v4_32_commands() -> None:
  def dry(*args: str) -> list[str]:
    out = subprocess.run(
      [LAUNCHER, *args, "--dry-run"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.startswith("+ ")
    return [l for l in out.splitlines() if l.startswith("+ ")]

  g = "--project=proj --zone=us-central2-b"
  lines = dry(
    "--project=proj",
    "--zone=us-central2-b",
    "--accelerator-type=v4-32",
    "--name=mert-95m",
    "--config=configs/mert.py:95m",
    "--workdir=gs://bkt/runs/95m",
    "--spot",
    "--config.optimizer.lr=4e-4",
  )
  assert lines[0] == (
    "+ python3 -m mert_jax.compile_check --config=configs/mert.py:95m --topology=v4-32 "
    "--config.optimizer.lr=4e-4"
  )
  assert lines[1].startswith("+ git ls-files -co --exclude-standard | tar -czf ")
  assert lines[2] == (
    f"+ gcloud compute tpus tpu-vm create mert-95m {g} --accelerator-type=v4-32 "
    "--version=tpu-ubuntu2204-base --spot"
  )
  assert lines[3] == f"+ gcloud compute tpus tpu-vm describe mert-95m {g} --format=value\\(state\\)"
  ssh = f"+ gcloud compute tpus tpu-vm ssh mert-95m {g} --worker=all "
  assert lines[4].startswith(ssh) and "/tmp/libtpu_lockfile" in lines[4]
  assert "lsof -t $devs" in lines[4] and "kill -TERM" in lines[4]
  assert lines[5].startswith("+ gcloud compute tpus tpu-vm scp ")
  assert lines[5].endswith(f"mert-95m:mert-jax.tar.gz {g} --worker=all")
  assert lines[6].startswith(ssh) and "uv venv --python 3.11 ~/mert-venv" in lines[6]
  assert 'uv pip install -q --python ~/mert-venv/bin/python -e "$HOME/mert-jax[tpu]"' in lines[6]
  assert "https://astral.sh/uv/install.sh" in lines[6]
  assert lines[7].startswith(ssh)
  assert (
    "mert_jax.cli.train\\ --config=configs/mert.py:95m\\ --workdir=gs://bkt/runs/95m\\ "
    "--config.optimizer.lr=4e-4"
  ) in lines[7]
  assert len(lines) == 8

  queued = dry(
    *"--project=p --zone=z --accelerator-type=v4-32 --name=n --config=c --workdir=w".split(),
    "--queued",
    "--skip-compile-check",
  )
  assert queued[1] == (
    "+ gcloud compute tpus queued-resources create n --node-id=n --project=p --zone=z "
    "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base"
  )
  assert queued[2] == (
    "+ gcloud compute tpus queued-resources describe n --project=p --zone=z "
    "--format=value\\(state.state\\)"
  )
  name = ["--name=n", "--project=p", "--zone=z"]
  logs = dry(*name, "--logs")[0]
  assert "--worker=0 --command=" in logs and logs.endswith("tail\\ -n\\ 100\\ ~/mert-train.log")
  assert "tail\\ -n\\ 100\\ -F" in dry(*name, "--logs", "--worker=all", "--follow")[0]
  assert "kill -TERM" in dry(*name, "--stop")[0]
  assert dry(*name, "--delete") == [
    f"+ gcloud compute tpus tpu-vm delete n {' '.join(name[1:])} --quiet"
  ]
  assert "queued-resources delete n" in dry(*name, "--delete", "--queued")[0]
  local = dry("--local=2", "--local-devices=2", "--config=c", "--workdir=/tmp/w")
  assert len(local) == 2 and "--num_processes=2 --process_id=1" in local[1]


def test_help_explains_every_option_the_launcher_accepts() -> None:
  """Each option of the launcher's argument loop has a line of its own in --help, with text."""
  source = open(LAUNCHER).read()
  loop = source[source.index('for arg in "$@"; do') : source.index("done", source.index("case"))]
  options = re.findall(r"^\s+(-h\|--help|--[\w.-]+)(?:=\*|\*)?\)", loop, flags=re.M)
  assert len(options) >= 22, options
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


WATCHED_TRAINER = '''"""A trainer under --watch: counts its starts in its home; its exit depends on
the workdir's last part: fail-once, always-fails, lock-lost."""
import os, signal, sys, time
home, worker = os.path.expanduser("~"), int(os.environ["JAX_PROCESS_ID"])
mode = [a for a in sys.argv if a.startswith("--workdir=")][0].rsplit("/", 1)[1]
with open(os.path.join(home, "starts"), "a") as f:
  f.write("start\\n")
start = len(open(os.path.join(home, "starts")).read().splitlines())
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
status = {"fail-once": 4 if start == 1 else 0, "always-fails": 1, "lock-lost": 5}[mode]
if worker == 1 or (mode == "fail-once" and start > 1):
  time.sleep(0.5)
  print("stub start", start, "exits", status, flush=True)
  sys.exit(status if worker == 1 else 0)
time.sleep(300)
'''


@pytest.mark.multiprocess
def test_watch_restarts_a_failed_job_within_its_budget(cloud: Cloud, tmp_path) -> None:
  """--watch: a worker whose trainer fails (status 4: a lost peer) makes the launcher launch
  again, logged, and the job then finishes (exit 0); a trainer failing every time exhausts
  --max-restarts in one line; status 5 (the workdir taken over) is never restarted."""
  launcher = _stub_checkout(str(tmp_path / "checkout"), trainer=WATCHED_TRAINER)
  env = {"FAKE_GCLOUD_WORKER_UV": "0"}

  def launch(mode: str, *extra: str, ok: bool = True):
    g = [f"--name={mode}", "--project=p", "--zone=z", "--accelerator-type=v4-16"]
    return cloud.launch(
      *g,
      "--config=c",
      f"--workdir=gs://b/{mode}",
      "--watch",
      *extra,
      *FAST,
      launcher=launcher,
      ok=ok,
      **env,
    )

  proc = launch("fail-once", "--max-restarts=2")
  assert "worker 1: exited 4; restart 1 of 2: launching again" in proc.stdout, proc.stdout
  assert "training finished: every worker's trainer exited 0" in proc.stdout
  for w in range(2):
    assert open(os.path.join(cloud.home("fail-once", w), "starts")).read().count("start") == 2

  proc = launch("always-fails", "--max-restarts=1", ok=False)
  line = one_line(proc)
  assert "worker 1: exited 1; gave up after 1 restart(s) (--max-restarts=1)" in line, line
  assert "restart 1 of 1: launching again" in proc.stdout

  proc = launch("lock-lost", ok=False)
  line = one_line(proc, status=5)
  assert "worker 1: exited 5: another trainer took gs://b/lock-lost over; not restarting" in line
  assert "launching again" not in proc.stdout
