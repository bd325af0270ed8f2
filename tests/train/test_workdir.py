"""The workdir's identity (mert_jax/train/workdir.py): a resume with another model is refused in
one line before anything is written, deliberate changes are recorded with their step, a failed
fresh run leaves nothing binding, and one trainer holds a workdir at a time."""

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from configs import mert as mert_configs
from mert_jax import workdir_files
from mert_jax.checkpointing import model_checkpoint, workdir_steps
from mert_jax.train import recorded_config, workdir_lock
from mert_jax.train import workdir as workdir_lib
from mert_jax.train.loop import train
from tests.train.helpers import REPO_ROOT, cli_args, losses, tiny

HOST = socket.gethostname()


def dead_pid() -> int:
  """The pid of a process that has exited (and been reaped)."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


@contextlib.contextmanager
def sleeper():
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
  try:
    yield proc.pid
  finally:
    proc.kill()
    proc.wait()


def plant_lock(wd, record) -> str:
  os.makedirs(wd, exist_ok=True)
  text = json.dumps(record)
  with open(os.path.join(wd, workdir_files.LOCK), "w") as f:
    f.write(text)
  return text


def one_line(e: pytest.ExceptionInfo) -> str:
  msg = str(e.value)
  assert "\n" not in msg, msg
  return msg


# --------------------------------------------------------------------------- pure functions


def _recipe_fields() -> dict[str, set[str]]:
  """Every dotted field of every variant of the recipe -> the variants that have it."""
  fields: dict[str, set[str]] = {}
  for variant in mert_configs.VARIANTS:
    for f in recorded_config.flatten(recorded_config.as_json(mert_configs.get_config(variant))):
      fields.setdefault(f, set()).add(variant)
  return fields


def test_every_recipe_field_is_classified_once():
  """A field added to the recipe fails here until it is put in RUN, PLACEMENT or LOOP."""
  sets = {
    "run": recorded_config.RUN,
    "placement": recorded_config.PLACEMENT,
    "loop": recorded_config.LOOP,
  }
  fields = _recipe_fields()
  assert len(fields) > 100
  unclassified = sorted(f for f in fields if not any(f in s for s in sets.values()))
  assert not unclassified, f"classify these in mert_jax/train/workdir.py: {unclassified}"
  twice = sorted(f for f in fields if sum(f in s for s in sets.values()) > 1)
  assert not twice, f"in more than one set: {twice}"
  stale = sorted(
    (recorded_config.RUN | recorded_config.PLACEMENT | recorded_config.LOOP) - set(fields)
  )
  assert not stale, f"classified, but in no variant of the recipe: {stale}"


def test_field_classification_by_kind():
  kinds = {f: recorded_config.classify(f) for f in _recipe_fields()}
  assert {f for f in kinds if f.split(".")[0] in ("objective", "optimizer")} <= {
    f for f, k in kinds.items() if k == "run"
  }
  for f in ("seed", "batch_size", "crop_samples", "data.dir", "data.groups", "model.dropout"):
    assert kinds[f] == "run", f
  for f in ("data.shuffle_window", "model.layer_norm_first", "model.dtype", "variant"):
    assert kinds[f] == "run", f
  assert kinds["model.remat"] == kinds["mesh"] == "placement"
  assert kinds["total_steps"] == kinds["allow_config_change"] == kinds["init_from"] == "loop"
  probe = [f for f in kinds if f.startswith("probe_")]
  assert len(probe) == 7 and all(kinds[f] == "loop" for f in probe)
  assert recorded_config.classify("model.some_future_field") == "run"


def test_turning_on_the_probe_on_a_resume_is_allowed(tmp_path):
  """The defect of issue 30: probe_* fields were of kind run, so turning on probe_every when
  resuming a workdir was refused as a change to the model or the data."""
  wd = str(tmp_path)
  recorded_config.check_config(wd, tiny("DATA"), resume_step=None)
  later = tiny("DATA", probe_every=50, probe_tasks="pitch", probe_set="small", probe_batch=4)
  changes = recorded_config.check_config(wd, later, resume_step=5)
  assert {c.field for c in changes} == {"probe_every", "probe_tasks", "probe_set", "probe_batch"}
  assert {c.kind for c in changes} == {"loop"}


def test_config_diff():
  old = {"model": {"layer_norm_first": False, "dropout": 0.1}, "total_steps": 3, "seed": 1}
  new = {"model": {"layer_norm_first": True, "dropout": 0.1}, "total_steps": 8, "seed": 1.0}
  new["mesh"], old["rules"], old["flag"], new["flag"] = [2, 2, 2], [["batch", "data"]], 1, True
  changes = recorded_config.config_diff(old, new)
  assert [str(c) for c in changes] == [
    "flag 1 -> True",  # True is not 1
    "mesh <absent> -> [2, 2, 2]",
    "model.layer_norm_first False -> True",
    "rules [['batch', 'data']] -> <absent>",
    "total_steps 3 -> 8",
  ]  # seed 1 == 1.0
  assert [c.kind for c in changes] == ["run", "placement", "run", "placement", "loop"]


def test_check_config_kinds_and_record(tmp_path, capsys):
  wd = str(tmp_path)
  c = tiny("DATA")
  assert recorded_config.check_config(wd, c, resume_step=None) == []  # fresh: recorded
  recorded = (tmp_path / "config.json").read_text()
  later = tiny("DATA", total_steps=5, mesh=[2, 2, 2], **{"model.remat": True})
  changes = recorded_config.check_config(wd, later, resume_step=5)
  out = capsys.readouterr().out
  assert "config changed at step 5 (mesh [-1, 1, 1] -> [2, 2, 2] [placement]; model.remat " in out
  assert "total_steps 3 -> 5 [loop])" in out
  assert (tmp_path / "config.json").read_text() == recorded  # written with the first checkpoint
  recorded_config.record_changes(wd, later, changes, step=5)
  (entry,) = [json.loads(line) for line in open(tmp_path / workdir_files.CONFIG_CHANGES)]
  assert entry["step"] == 5
  assert [(c["field"], c["old"], c["new"], c["kind"]) for c in entry["changes"]] == [
    ("mesh", [-1, 1, 1], [2, 2, 2], "placement"),
    ("model.remat", False, True, "placement"),
    ("total_steps", 3, 5, "loop"),
  ]
  assert recorded_config.check_config(wd, later, resume_step=5) == []  # the new truth
  with pytest.raises(recorded_config.ConfigChangeRefused) as e:
    recorded_config.check_config(wd, tiny("DATA", seed=1, **{"optimizer.lr": 1.0}), resume_step=5)
  assert "optimizer.lr 0.002 -> 1.0; seed 1337 -> 1. These" in one_line(e)
  assert "--config.allow_config_change=optimizer.lr,seed " in str(e.value)


# --------------------------------------------------------------------------- the recorded config


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
  """A tiny workdir trained to step 2, started over a stale lock (dead pid) and after a fresh run
  refused for its data (the corpus has 64 codes, that run's model 32): (workdir, printed lines,
  the failed run's error, what it left)."""
  wd = str(tmp_path_factory.mktemp("workdir") / "run")
  pid = dead_pid()
  plant_lock(wd, workdir_lock.lock_record(pid))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    with pytest.raises(ValueError, match="64 codes but the model expects 8 x 32") as failed:
      train(tiny(data_dir, **{"model.codebook_size": 32}), wd)
    left = {
      "codebook_size": json.load(open(os.path.join(wd, "config.json")))["model"]["codebook_size"],
      "lock": os.path.exists(os.path.join(wd, workdir_files.LOCK)),
      "step": workdir_steps.latest_step(wd),
    }
    train(tiny(data_dir, total_steps=2), wd)
  return wd, out.getvalue(), str(failed.value), left, pid


def test_stale_lock_taken_over_and_failed_fresh_run_replaced(finished):
  wd, out, _, left, pid = finished
  assert f"took over the stale lock of host {HOST}, pid {pid}, since " in out
  assert f"process {pid} is no longer running" in out
  # The refused run recorded its config and released the lock; nothing was trained under it, so
  # the next run's config replaced it, saying so.
  assert left == {"codebook_size": 32, "lock": False, "step": None}
  assert "no checkpoint yet" in out and "model.codebook_size 32 -> 64;" in out
  assert model_checkpoint.workdir_model_config(wd).codebook_size == 64
  assert not os.path.exists(os.path.join(wd, workdir_files.LOCK))
  assert max(losses(wd)) == 2


def test_mistaken_noop_run_is_refused(finished, data_dir):
  """The fault probe: a finished workdir re-run with total_steps=8 and a pre-LN model. It used to
  exit 0 silently and leave config.json describing a model that was never trained."""
  wd = finished[0]
  before = {f: open(os.path.join(wd, f)).read() for f in ("config.json", "metrics.jsonl")}
  with pytest.raises(recorded_config.ConfigChangeRefused) as e:
    train(tiny(data_dir, total_steps=8, **{"model.layer_norm_first": True}), wd)
  msg = one_line(e)
  assert "holds checkpoints up to step 2 trained under another config" in msg
  assert "model.layer_norm_first False -> True. These shape the model" in msg
  assert "--config.allow_config_change=model.layer_norm_first " in msg
  assert "total_steps" not in msg  # a loop setting: allowed
  assert before == {f: open(os.path.join(wd, f)).read() for f in before}
  assert not os.path.exists(os.path.join(wd, workdir_files.CONFIG_CHANGES))
  assert not os.path.exists(os.path.join(wd, workdir_files.LOCK))
  assert model_checkpoint.workdir_model_config(wd).layer_norm_first is False


def test_allowed_change_is_recorded_with_its_step(finished, data_dir, tmp_path, capsys):
  wd = str(tmp_path / "run")
  shutil.copytree(finished[0], wd)
  # Re-seeding (say, to get past a loss spike) is a run change; the step program stays the same.
  seed = {"seed": 7, "allow_config_change": "seed"}
  # A run that fails before its first checkpoint records nothing: config.json keeps describing
  # the checkpoints.
  recorded = open(os.path.join(wd, "config.json")).read()
  with pytest.raises(RuntimeError, match="crashed"):
    with workdir_lib.Claim(wd, tiny(data_dir, **seed)):
      raise RuntimeError("crashed")
  assert open(os.path.join(wd, "config.json")).read() == recorded
  assert not os.path.exists(os.path.join(wd, workdir_files.CONFIG_CHANGES))
  capsys.readouterr()

  out = train(tiny(data_dir, total_steps=3, **seed), wd)
  assert out["metrics"]["step"] == 3
  printed = capsys.readouterr().out
  assert "config changed at step 2 (allow_config_change '' -> 'seed' [loop]; " in printed
  assert "seed 1337 -> 7; total_steps 2 -> 3 [loop])" in printed
  (entry,) = [json.loads(line) for line in open(os.path.join(wd, workdir_files.CONFIG_CHANGES))]
  assert entry["step"] == 2
  assert [(c["field"], c["kind"]) for c in entry["changes"]] == [
    ("allow_config_change", "loop"),
    ("seed", "allowed"),
    ("total_steps", "loop"),
  ]
  config = json.load(open(os.path.join(wd, "config.json")))
  assert (config["seed"], config["total_steps"]) == (7, 3)
  # The new config is the truth now: resuming with it needs no permission.
  assert recorded_config.check_config(wd, tiny(data_dir, total_steps=4, seed=7), resume_step=3)
  assert not os.path.exists(os.path.join(wd, workdir_files.LOCK))


# --------------------------------------------------------------------------- the lock


def test_live_lock_refuses_a_second_trainer(data_dir, tmp_path):
  wd = str(tmp_path / "run")
  with sleeper() as pid:
    text = plant_lock(wd, workdir_lock.lock_record(pid))
    with pytest.raises(workdir_lock.WorkdirLocked) as e:
      train(tiny(data_dir), wd)
    msg = one_line(e)
    assert f"is in use by another trainer (host {HOST}, pid {pid}, since " in msg
    assert f"kill {pid}" in msg
    assert os.listdir(wd) == [workdir_files.LOCK]  # nothing written: no config, metrics, tb
    assert open(os.path.join(wd, workdir_files.LOCK)).read() == text
  lock = workdir_lock.WorkdirLock(wd)  # the holder is gone now
  lock.acquire()
  assert json.load(open(os.path.join(wd, workdir_files.LOCK)))["pid"] == os.getpid()
  lock.release()
  assert os.listdir(wd) == []


def test_other_host_lock_stale_after_its_heartbeat_bound(tmp_path, capsys):
  wd = str(tmp_path)
  record = {**workdir_lock.lock_record(), "host": "elsewhere", "pid": 1}
  plant_lock(wd, record)
  with pytest.raises(workdir_lock.WorkdirLocked) as e:
    workdir_lock.WorkdirLock(wd).acquire()
  assert "(host elsewhere, pid 1, since " in one_line(e) and "heartbeat 0 min ago" in str(e.value)
  plant_lock(wd, {**record, "heartbeat_unix": time.time() - workdir_lock.STALE_AFTER_S - 60})
  with workdir_lock.WorkdirLock(wd):
    assert "took over the stale lock of host elsewhere, pid 1" in capsys.readouterr().out
  assert os.listdir(wd) == []


def test_unreadable_lock(tmp_path):
  wd = str(tmp_path)
  path = os.path.join(wd, workdir_files.LOCK)
  open(path, "w").close()  # a trainer is between creating and writing it ...
  with pytest.raises(workdir_lock.WorkdirLocked, match="is being written by another trainer"):
    workdir_lock.WorkdirLock(wd).acquire()
  old = time.time() - 60
  os.utime(path, (old, old))  # ... or was killed there
  with workdir_lock.WorkdirLock(wd) as lock:
    assert json.load(open(path))["token"] == lock.record["token"]


def test_heartbeat_refreshes_and_detects_a_takeover(tmp_path, capsys):
  wd = str(tmp_path)
  path = os.path.join(wd, workdir_files.LOCK)
  lock = workdir_lock.WorkdirLock(wd)
  lock.acquire()
  since = json.load(open(path))["heartbeat_unix"]
  lock.heartbeat(7)  # within HEARTBEAT_S of the last refresh: nothing written
  assert json.load(open(path))["step"] is None
  lock.heartbeat(7, force=True)
  assert json.load(open(path))["step"] == 7 and json.load(open(path))["heartbeat_unix"] >= since
  other = plant_lock(wd, {**workdir_lock.lock_record(), "host": "elsewhere", "pid": 9})
  with pytest.raises(workdir_lock.WorkdirLockLost) as e:
    lock.heartbeat(8, force=True)
  assert "now names another trainer (host elsewhere, pid 9, since " in one_line(e)
  lock.release()  # not ours any more: left in place
  assert open(path).read() == other


def test_takeover_never_removes_a_lock_it_did_not_judge(tmp_path):
  """Two trainers judge the same stale lock; the first replaces it with its own before the second
  acts: the second's compare-and-remove must leave the new lock in place."""
  wd = str(tmp_path)
  stale = plant_lock(wd, workdir_lock.lock_record(dead_pid()))
  fresh = plant_lock(wd, workdir_lock.lock_record())
  files = workdir_lock.WorkdirLock(wd).files
  assert not files.remove_if(stale)
  assert open(os.path.join(wd, workdir_files.LOCK)).read() == fresh
  assert os.listdir(wd) == [workdir_files.LOCK]
  assert files.remove_if(fresh) and os.listdir(wd) == []


@pytest.mark.multiprocess
def test_two_trainers_at_once(data_dir, tmp_path):
  """A real trainer (command line, subprocess) holds the workdir: a second is refused before it
  writes anything; once the first is killed its lock is stale and taken over."""
  wd = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "mert_jax.cli.train",
    *cli_args(wd, data_dir, "--config.total_steps=1000"),
  ]
  first = subprocess.Popen(
    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT
  )
  try:
    deadline = time.time() + 120
    while (
      not (wd / workdir_files.LOCK).exists() and first.poll() is None and time.time() < deadline
    ):
      time.sleep(0.1)
    assert (wd / workdir_files.LOCK).exists(), first.communicate()[1][-3000:]
    with pytest.raises(workdir_lock.WorkdirLocked) as e:
      train(tiny(data_dir), str(wd))
    assert f"(host {HOST}, pid {first.pid}, since " in one_line(e)
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate()
  with workdir_lock.WorkdirLock(str(wd)) as lock:
    assert lock.held


# --------------------------------------------------------------------------- the lock in a bucket


def test_bucket_lock_writes_are_conditional_on_the_generation_read(gcs):
  """gs:// (the local emulator, which honours ifGenerationMatch as GCS does): a create fails when
  the object exists; a replace or delete based on a stale read changes nothing."""
  files = workdir_lock.WorkdirLock(gcs.path("run")).files
  assert isinstance(files, workdir_lock._ObjectFiles)
  assert files.create("first") and not files.create("second")
  assert files.read() == "first"
  assert files.replace("mine", expected="first") and files.read() == "mine"
  assert not files.replace("stale", expected="first") and files.read() == "mine"
  assert not files.remove_if("first") and files.read() == "mine"
  # A write between this trainer's read and its conditional request: the request is refused.
  text, generation = files.read_generation()
  other = workdir_lock.WorkdirLock(gcs.path("run")).files
  assert other.replace("taken over", expected="mine")
  assert not files._upload("late heartbeat", generation) and files.read() == "taken over"
  assert files.remove_if("taken over") and files.read() is None


def test_bucket_lock_has_one_holder_among_racing_trainers(gcs):
  """Eight trainers start at once on one gs:// workdir: exactly one holds the lock, the others are
  refused naming it; a takeover is noticed at the old holder's next check."""
  import concurrent.futures

  wd = gcs.path("run")
  locks = [workdir_lock.WorkdirLock(wd) for _ in range(8)]

  def acquire(lock):
    try:
      lock.acquire()
      return "held"
    except workdir_lock.WorkdirLocked as e:
      return str(e)

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    outcomes = list(pool.map(acquire, locks))
  assert outcomes.count("held") == 1, outcomes
  holder = locks[outcomes.index("held")]
  assert all("is in use by another trainer" in o for o in outcomes if o != "held"), outcomes
  holder.heartbeat(3, force=True)  # refreshed through a conditional replace
  assert json.loads(holder.files.read())["step"] == 3
  holder.files.replace(json.dumps(workdir_lock.lock_record()), expected=holder.files.read())
  with pytest.raises(workdir_lock.WorkdirLockLost, match="before writing checkpoint 4"):
    holder.verify(4, "writing checkpoint 4")


def test_every_process_checks_the_lock_before_it_writes(tmp_path):
  """A process other than the lock's owner follows the run's token: it sees a takeover and stops,
  and never removes or refreshes the file."""
  wd = str(tmp_path)
  owner = workdir_lock.WorkdirLock(wd)
  owner.acquire()
  follower = workdir_lock.WorkdirLock(wd)
  follower.follow(owner.record["token"])
  follower.verify(5, "writing checkpoint 5")  # still this run's
  follower.heartbeat(5, force=True)  # a follower never rewrites the file
  follower.release()
  assert json.load(open(os.path.join(wd, workdir_files.LOCK)))["step"] is None
  follower.follow(owner.record["token"])
  plant_lock(wd, {**workdir_lock.lock_record(), "host": "elsewhere", "pid": 9})
  with pytest.raises(workdir_lock.WorkdirLockLost) as e:
    follower.verify(6, "writing checkpoint 6")
  assert one_line(e).endswith("stopping at step 6 before writing checkpoint 6")
  assert e.value.exit_status == 5
