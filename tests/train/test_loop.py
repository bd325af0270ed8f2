"""The training loop: identical losses across meshes and process counts, restore onto another
mesh, SIGTERM checkpoints, data-state mismatches, and gradient accumulation resuming exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from mert_jax.train.loop import train
from tests.processes import run_together
from tests.train.helpers import REPO_ROOT, cli_args, losses, run_cli, tiny

pytestmark = pytest.mark.long  # tens of seconds: started first (conftest.py)


def _steps_on_mesh(data_dir: str, mesh: tuple[int, ...], heads: int, batches: list) -> tuple:
  """(losses, final state) of the trainer's own step, built by state.build for ``mesh`` as train()
  builds it, over the same host batches. (Whole train() runs on each mesh add the reader,
  checkpoints and metrics, which tests of their own cover; the mesh changes only this.)"""
  from mert_jax.train import input as input_lib
  from mert_jax.train import state as state_lib

  f32 = {"model.num_heads": heads, "model.dtype": "float32"}  # fp32 compute: fp32 tolerance
  single = mesh == (1, 1, 1)
  config = tiny(data_dir, mesh=list(mesh), num_devices=1 if single else 0, **f32)
  setup = state_lib.build(config)
  state, key, losses_ = setup.init(), jax.random.key(config.seed), []
  for local in batches:
    batch = input_lib.global_batch(local, 1, setup.batch_shardings)
    state, metrics = setup.train_step(state, batch, key)
    losses_.append(float(metrics["loss"]))
  return losses_, state


@pytest.mark.parametrize("heads,meshes", [(4, [(8, 1, 1), (2, 4, 1), (2, 2, 2)]), (8, [(1, 1, 8)])])
def test_meshes_give_single_device_losses(data_dir, heads, meshes):
  """Three steps of the train step on each mesh equal one device's (losses within float32
  rounding); parameters and optimizer state are sharded as the rules say."""
  rng = np.random.default_rng(0)
  c = tiny(data_dir)
  labels_shape = (1, c.batch_size, c.model.num_codebooks, c.crop_samples // 320)
  batches = [
    {
      "audio": rng.standard_normal((1, c.batch_size, c.crop_samples)).astype(np.float32),
      "labels": rng.integers(0, c.model.codebook_size, labels_shape).astype(np.int32),
    }
    for _ in range(3)
  ]
  ref_losses, _ = _steps_on_mesh(data_dir, (1, 1, 1), heads, batches)
  assert all(np.isfinite(ref_losses)) and ref_losses[0] != ref_losses[-1]
  for mesh in meshes:
    got, state = _steps_on_mesh(data_dir, mesh, heads, batches)
    np.testing.assert_allclose(got, ref_losses, rtol=2e-5, err_msg=str(mesh))
    params, opt = state["params"], state["opt_state"]
    layer = params["backbone"]["encoder"]["layers"][0]
    q = layer["attention"]["q_proj"]["kernel"]
    fc1 = layer["feed_forward"]["intermediate_dense"]["kernel"]
    want_q = P("fsdp" if mesh[1] > 1 else None, "tensor" if mesh[2] > 1 else None, None)
    assert q.sharding.spec == want_q, (mesh, q.sharding.spec)
    assert fc1.sharding.spec == P(want_q[0], want_q[1])
    mu = opt[1][0].mu["backbone"]["encoder"]["layers"][0]["attention"]["q_proj"]["kernel"]
    assert mu.sharding.spec == want_q  # optimizer state sharded like the parameter
    if mesh[1] > 1:
      assert q.addressable_shards[0].data.shape[0] == q.shape[0] // mesh[1]


@pytest.mark.multiprocess
def test_sigterm_checkpoints_and_resumes(data_dir, tmp_path):
  wd = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "mert_jax.cli.train",
    *cli_args(wd, data_dir, "--config.total_steps=1000", "--config.checkpoint_every=1000"),
  ]
  proc = subprocess.Popen(
    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT
  )
  deadline = time.time() + 300
  while time.time() < deadline:
    if os.path.exists(wd / "metrics.jsonl") and len(losses(wd)) >= 3:
      break
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  stopped = ocp.CheckpointManager(str(wd / "checkpoints")).latest_step()
  assert stopped is not None and 3 <= stopped < 1000
  run_cli(wd, data_dir, f"--config.total_steps={stopped + 2}")
  assert max(losses(wd)) == stopped + 2


DIST = """
import json, os, signal, sys, jax
jax.config.update("jax_num_cpu_devices", 4)
from tests import shared_compile_cache
shared_compile_cache.let_every_process_write()
pid, port = int(sys.argv[1]), sys.argv[2]
jax.distributed.initialize(f"127.0.0.1:{port}", 2, pid, initialization_timeout=120)
c = json.loads(sys.argv[3])
if pid in c["sigterm"]:  # a maintenance notice to this host only, before its first step
  os.kill(os.getpid(), signal.SIGTERM)
from configs import mert as mert_configs
from mert_jax.train.loop import train
cfg = mert_configs.get_config("tiny")
cfg.data.dir = c["data_dir"]
cfg.total_steps, cfg.log_every, cfg.eval_every, cfg.checkpoint_every = c["steps"], 1, 0, 1000
cfg.data.shuffle_window, cfg.data.groups, cfg.mesh = 16, 2, [8, 1, 1]
cfg.model.dtype = "float32"
train(cfg, c["workdir"])
"""


@pytest.mark.multiprocess
def test_two_processes_match_one_process_through_a_preemption(data_dir, tmp_path):
  """Two processes x 4 devices give one process x 8 devices' losses, across a preemption notice
  that reaches one host only: JAX's preemption sync manager makes both save at one agreed step and
  exit 0, and the re-run resumes from it."""
  import portpicker

  total = 6
  one = tmp_path / "one"
  train(tiny(data_dir, total_steps=total, **{"data.groups": 2, "model.dtype": "float32"}), str(one))
  script = tmp_path / "dist.py"
  script.write_text(DIST)
  wd = tmp_path / "two"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))  # tests/ importable
  env.pop("XLA_FLAGS", None)
  for sigterm in ([1], []):  # host 1 is told to stop; then the job is started again
    port = str(portpicker.pick_unused_port())
    arg = json.dumps({"data_dir": data_dir, "workdir": str(wd), "steps": total, "sigterm": sigterm})
    run_together([[sys.executable, str(script), str(i), port, arg] for i in range(2)], env, 600)
    if sigterm:
      agreed = ocp.CheckpointManager(str(wd / "checkpoints")).latest_step()
      assert agreed is not None and 1 <= agreed < total, agreed
      assert max(losses(wd)) == agreed  # both hosts stopped there (a save needs every host)
  a, b = losses(one), losses(wd)
  assert sorted(b) == list(range(1, total + 1))
  np.testing.assert_allclose([b[s] for s in b], [a[s] for s in b], rtol=2e-5)


def test_restore_onto_another_mesh(data_dir, tmp_path):
  f32 = {"model.dtype": "float32"}
  straight = train(tiny(data_dir, total_steps=3, mesh=[8, 1, 1], **f32), str(tmp_path / "straight"))
  assert straight["train_step_compiles"] == 1  # no recompiles between steps
  wd = str(tmp_path / "moved")
  train(tiny(data_dir, total_steps=2, mesh=[8, 1, 1], **f32), wd)
  out = train(tiny(data_dir, total_steps=3, mesh=[2, 2, 2], **f32), wd)  # resume on (2, 2, 2)
  q = out["state"]["params"]["backbone"]["encoder"]["layers"][0]["attention"]["q_proj"]["kernel"]
  assert q.sharding.spec == P("fsdp", "tensor", None)
  np.testing.assert_allclose(losses(wd)[3], losses(tmp_path / "straight")[3], rtol=2e-5)


def test_data_state_mismatch_is_explained_and_restart_fallback(data_dir, tmp_path):
  wd = str(tmp_path / "run")
  train(tiny(data_dir, total_steps=2, **{"data.groups": 2}), wd)
  # data.groups shapes the data stream: a deliberate change is named (and recorded).
  groups1 = {"data.groups": 1, "allow_config_change": "data.groups"}
  with pytest.raises(
    RuntimeError,
    match=r"data-iterator state cannot be restored.*data.groups=1"
    r".*on_state_mismatch=restart",
  ):
    train(tiny(data_dir, total_steps=3, **groups1), wd)
  out = train(tiny(data_dir, total_steps=3, **groups1, **{"data.on_state_mismatch": "restart"}), wd)
  assert out["metrics"]["step"] == 3


def test_grad_accumulation_trains_and_resumes_exactly(data_dir, tmp_path):
  """The 330M recipe's path: 2 micro-batches of 4 clips per update on a (2, 2, 2) mesh. A run of 4
  steps equals 2 steps then a resume to 4: losses bit for bit, final parameters identical."""
  accum = {"optimizer.grad_accum_steps": 2, "mesh": [2, 2, 2]}
  straight = train(tiny(data_dir, total_steps=4, **accum), str(tmp_path / "straight"))
  assert straight["train_step_compiles"] == 1
  wd = str(tmp_path / "resumed")
  first = train(tiny(data_dir, total_steps=2, **accum), wd)
  assert first["metrics"]["step"] == 2
  resumed = train(tiny(data_dir, total_steps=4, **accum), wd)
  a, b = losses(tmp_path / "straight"), losses(wd)
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  assert all(np.isfinite(a[s]) for s in a)
  assert [a[s] for s in range(1, 5)] == [b[s] for s in range(1, 5)]  # bit for bit
  for x, y in zip(jax.tree.leaves(straight["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_trainer_that_lost_its_workdir_writes_no_row_of_that_step(
  data_dir, tmp_path, monkeypatch
):
  """The lock is checked before a step's metrics row is written: a trainer another one took the
  workdir from stops without adding that row (found when an old trainer wrote one row into a
  fresh run's metrics.jsonl)."""
  from mert_jax.train import workdir as workdir_lib
  from mert_jax.train import workdir_lock

  real = workdir_lib.Claim.heartbeat

  def heartbeat(self, step=None, **kw):
    if step == 2:
      raise workdir_lock.WorkdirLockLost(f"taken over; stopping at step {step} before writing more")
    return real(self, step, **kw)

  monkeypatch.setattr(workdir_lib.Claim, "heartbeat", heartbeat)
  wd = tmp_path / "run"
  with pytest.raises(workdir_lock.WorkdirLockLost):
    train(tiny(data_dir), str(wd))
  steps = [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1]
