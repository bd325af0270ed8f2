"""launch_tpu.sh (dry run for a v4-32, and --local 2 training with resume), the sweep runner, and
the export/extract commands on a training workdir."""

import json
import os
import subprocess
import sys

import numpy as np

from configs import mert as mert_configs
from mert_jax import recipe
from mert_jax.train import checkpoints
from mert_jax.train.loop import train
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.features import hidden_states, windowed_hidden_states

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dry_run_prints_the_v4_32_commands():
  out = subprocess.run(
      [os.path.join(ROOT, "launch_tpu.sh"), "--project=proj", "--zone=us-central2-b", "--accelerator-type=v4-32",
       "--name=mert-95m", "--config=configs/mert.py:95m", "--workdir=gs://bkt/runs/95m", "--spot", "--dry-run",
       "--config.optimizer.lr=4e-4"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
  lines = [l for l in out.splitlines() if l.startswith("+ ")]
  g = "--project=proj --zone=us-central2-b"
  assert lines[0] == ("+ gcloud compute tpus tpu-vm create mert-95m " + g +
                      " --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")
  assert lines[1].startswith("+ git archive --format=tar.gz")
  assert lines[2].startswith("+ gcloud compute tpus tpu-vm scp ") and lines[2].endswith(g + " --worker=all")
  assert lines[3].startswith("+ gcloud compute tpus tpu-vm ssh mert-95m " + g + " --worker=all --command=")
  assert "pip\\ install" in lines[3] and "\\[tpu\\]" in lines[3]
  assert lines[4].startswith("+ gcloud compute tpus tpu-vm ssh mert-95m " + g + " --worker=all --command=")
  assert "mert_jax.cli.train\\ --config=configs/mert.py:95m\\ --workdir=gs://bkt/runs/95m\\ --config.optimizer.lr=4e-4" in lines[4]
  queued = subprocess.run(
      [os.path.join(ROOT, "launch_tpu.sh"), "--project=proj", "--zone=z", "--accelerator-type=v4-32", "--name=n",
       "--config=c", "--workdir=w", "--queued", "--dry-run"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
  assert "+ gcloud compute tpus queued-resources create n --node-id=n --project=proj --zone=z --accelerator-type=v4-32" in queued
  bad = subprocess.run([os.path.join(ROOT, "launch_tpu.sh"), "--name=n", "--dry-run"], capture_output=True, text=True)
  assert bad.returncode == 2 and "--project is required" in bad.stderr


def test_local_two_processes_train_checkpoint_and_resume(default_data, tmp_path):
  wd = str(tmp_path / "run")
  base = [os.path.join(ROOT, "launch_tpu.sh"), "--local=2", "--local-devices=2", "--config=configs/mert.py:tiny",
          f"--workdir={wd}", f"--config.data.dir={default_data}", "--config.log_every=1", "--config.eval_every=0",
          "--config.checkpoint_every=2", "--config.data.shuffle_window=16"]
  for steps in (2, 4):
    proc = subprocess.run(base + [f"--config.total_steps={steps}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    logs = "".join(open(f"{wd}.process{i}.log").read()[-1500:] for i in range(2))
    assert proc.returncode == 0, proc.stderr + logs
  steps = [json.loads(l)["step"] for l in open(os.path.join(wd, "metrics.jsonl")) if '"loss"' in l]
  assert steps == [1, 2, 3, 4]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4"]
  states = sorted(f for f in os.listdir(os.path.join(wd, "checkpoints", "4", "data_iter")) if f.startswith("process_"))
  assert states == ["process_0-of-2.json", "process_1-of-2.json"]       # one data position per process


def test_tiny_sweep_writes_its_summary(default_data, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "mert_jax.cli.sweep", "--sweep=configs/sweeps/model_size.py:tiny",
                         f"--workdir={tmp_path}", f"--set=data.dir={default_data}"],
                        capture_output=True, text=True, cwd=ROOT, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.load(open(tmp_path / "summary.json"))
  assert [r["run"] for r in rows] == ["tiny-2x32", "tiny-4x32", "tiny-2x64"]
  assert rows[0]["params"] < rows[1]["params"] < rows[2]["params"]
  assert all(r["step"] == 6 and np.isfinite(r["loss"]) and r["clips_per_s"] > 0 for r in rows)
  assert "| tiny-4x32 |" in open(tmp_path / "summary.md").read()


def test_export_and_extract_from_a_training_workdir(default_data, tmp_path, music):
  c = mert_configs.get_config("tiny")
  c.data.dir, c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = default_data, 2, 1, 0, 1
  c.data.shuffle_window = 16
  wd = str(tmp_path / "run")
  state = train(c, wd)["state"]
  latest = checkpoints.load_model(wd)
  first = checkpoints.load_model(wd, step=1)
  from flax import nnx
  p_latest = nnx.to_pure_dict(nnx.state(latest, nnx.Param))
  import jax
  for a, b in zip(jax.tree.leaves(p_latest), jax.tree.leaves(state["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))       # the trained parameters, exactly
  p_first = nnx.to_pure_dict(nnx.state(first, nnx.Param))
  assert any(not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(p_first), jax.tree.leaves(p_latest)))
  hf = tmp_path / "hf"
  proc = subprocess.run([sys.executable, "-m", "mert_jax.cli.convert", "jax-to-hf", f"--checkpoint={wd}", "--step=1",
                         f"--output={hf}"], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # Folder extraction with windows: every file gets the whole file's frame count.
  audio_dir = tmp_path / "audio"
  audio_dir.mkdir()
  import soundfile as sf
  sf.write(audio_dir / "a.wav", music[:5 * 24000], 24000)
  sf.write(audio_dir / "b.flac", music[24000:3 * 24000 + 777], 24000)
  out = tmp_path / "feats"
  proc = subprocess.run([sys.executable, "-m", "mert_jax.cli.extract", f"--checkpoint={wd}", f"--audio={audio_dir}",
                         f"--output={out}", "--window-seconds=1.5"], capture_output=True, text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert np.load(out / "a.wav.npy").shape == (3, num_frames(5 * 24000, latest.cfg.conv_layers), 32)
  assert np.load(out / "b.flac.npy").shape == (3, num_frames(2 * 24000 + 777, latest.cfg.conv_layers), 32)
  # A window longer than the clip is the whole-file computation.
  f32 = checkpoints.load_model(wd, dtype="float32").backbone
  np.testing.assert_array_equal(windowed_hidden_states(f32, music[:30000], 10.0), hidden_states(f32, music[:30000]))
