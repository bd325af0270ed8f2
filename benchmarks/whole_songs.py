"""Whole-file feature extraction against length: mert-jax's whole-file extractor and
``transformers.HubertModel``, seconds of audio per second and peak memory, one run.

  python benchmarks/whole_songs.py --size=95m --lengths=10,60,180,600 --json=ROWS.jsonl

Each (system, length) runs in a fresh process (its peak resident memory is its own): the same
random weights of ``--size`` (mert-jax's seed 0, converted to HF names for transformers), float32,
every hidden state, on real music (Debian game soundtracks, looped to the length). Each process
runs the clip twice and times the second (the first holds mert-jax's compile for the length's
bucket, and PyTorch's warm-up); ``--passes=1`` times the first alone (compile included), for
lengths where two passes take too long. transformers runs under an address-space limit
(``--torch-gb``) so a length it cannot hold fails with its own out-of-memory error instead of
swapping the machine;
mert-jax runs unlimited (XLA reserves address space it does not use). Where both ran, the
largest absolute difference of their hidden states is reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

SAMPLE_RATE = 24000
COMPARED_LAYERS = (0, 1, -1)  # hidden states saved for the equality check


def music(seconds: float, folder: str | None = None) -> np.ndarray:
  """``seconds`` of real music: the audio files of ``folder`` (default: the installed Debian
  soundtracks) decoded one after another, looped."""
  from data_pipeline.audio import load_audio
  from data_pipeline.audio_format import AUDIO_EXTENSIONS
  from data_pipeline.example_audio import real_music_files

  if folder:
    names = sorted(os.listdir(folder))
    files = [os.path.join(folder, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
  else:
    files = real_music_files()
  if not files:
    raise SystemExit(
      f"no music in {folder or 'the Debian soundtrack folders'} (apt-get install singularity-music)"
    )
  need, parts, got, i = int(seconds * SAMPLE_RATE), [], 0, 0
  while got < need:
    x = load_audio(files[i % len(files)], SAMPLE_RATE)
    parts.append(x)
    got, i = got + len(x), i + 1
  return np.concatenate(parts)[:need]


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def run_jax(size: str, audio: np.ndarray, out: str, passes: int = 2) -> dict:
  from mert_jax.config import model_config
  from mert_jax.model.mert import create_model
  from mert_jax.model.whole_file import whole_file_extractor

  backbone = create_model(model_config(size, dtype="float32"), seed=0).backbone
  extract = whole_file_extractor(backbone)
  began = time.perf_counter()
  feats = extract(audio)
  first = wall = time.perf_counter() - began
  if passes == 2:
    began = time.perf_counter()
    feats = extract(audio)
    wall = time.perf_counter() - began
  np.savez(out, *[feats[i] for i in COMPARED_LAYERS])
  return {"first_s": round(first, 2), "wall_s": round(wall, 2)}


def run_torch(size: str, audio: np.ndarray, out: str, weights: str, passes: int = 2) -> dict:
  import torch
  import transformers

  from mert_jax.config import model_config
  from mert_jax.hf import convert

  cfg = model_config(size, dtype="float32")
  hf = transformers.HubertModel(transformers.HubertConfig(**convert.hf_config_dict(cfg))).eval()
  sd = {k: torch.from_numpy(v) for k, v in np.load(weights).items()}
  hf.load_state_dict(sd, strict=False)
  x = torch.from_numpy(audio[None].copy())
  with torch.no_grad():
    began = time.perf_counter()
    hs = hf(x, output_hidden_states=True).hidden_states
    first = wall = time.perf_counter() - began
    if passes == 2:
      del hs
      began = time.perf_counter()
      hs = hf(x, output_hidden_states=True).hidden_states
      wall = time.perf_counter() - began
  np.savez(out, *[hs[i][0].numpy() for i in COMPARED_LAYERS])
  return {"first_s": round(first, 2), "wall_s": round(wall, 2)}


def child(args: argparse.Namespace) -> None:
  """One (system, length) measurement; prints one JSON line."""
  audio = music(args.seconds, args.music)
  if args.system == "transformers":
    limit = int(args.torch_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  row = {"system": args.system, "audio_seconds": args.seconds, "passes": args.passes}
  try:
    if args.system == "mert-jax":
      row |= run_jax(args.size, audio, args.out, args.passes)
    else:
      row |= run_torch(args.size, audio, args.out, args.weights, args.passes)
    row["audio_s_per_s"] = round(args.seconds / row["wall_s"], 2)
  except (MemoryError, RuntimeError) as e:  # torch's allocator failure under the limit
    row["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
  row["peak_rss_gb"] = round(peak_rss_gb(), 2)
  print(json.dumps(row), flush=True)


def save_weights(size: str, path: str) -> None:
  from mert_jax.config import model_config
  from mert_jax.hf import convert
  from mert_jax.model.mert import create_model

  model = create_model(model_config(size, dtype="float32"), seed=0)
  np.savez(path, **{k: np.array(v) for k, v in convert.backbone_to_hf_state_dict(model).items()})


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="95m", help="model size (mert_jax/config.py)")
  p.add_argument("--lengths", default="10,60,180,600", help="clip lengths, seconds")
  p.add_argument("--systems", default="mert-jax,transformers")
  p.add_argument("--torch-gb", type=float, default=20.0, help="transformers' address-space limit")
  p.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
  p.add_argument("--json", default=None, help="also append the rows to this file")
  p.add_argument("--music", default=None, help="folder of audio files (default: Debian's)")
  p.add_argument(
    "--passes",
    type=int,
    default=2,
    choices=(1, 2),
    help="1: time the first pass (compile included)",
  )
  # one measurement (the parent's children)
  p.add_argument("--system", default=None, help=argparse.SUPPRESS)
  p.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
  p.add_argument("--out", default=None, help=argparse.SUPPRESS)
  p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.system:
    child(args)
    return
  lengths = [float(x) for x in args.lengths.split(",")]
  systems = args.systems.split(",")
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.npz")
    if "transformers" in systems:
      save_weights(args.size, weights)
    for seconds in lengths:
      outs = {}
      for system in systems:
        out = os.path.join(tmp, f"{system}_{seconds:g}.npz")
        cmd = [sys.executable, os.path.abspath(__file__), f"--system={system}"]
        cmd += [f"--seconds={seconds}", f"--out={out}", f"--weights={weights}"]
        cmd += [f"--size={args.size}", f"--torch-gb={args.torch_gb}"]
        cmd += [f"--music={args.music}"] if args.music else []
        cmd += [f"--passes={args.passes}"]
        try:
          done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
          lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
          row = (
            json.loads(lines[-1])
            if lines
            else {
              "system": system,
              "audio_seconds": seconds,
              "failed": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}",
            }
          )
        except subprocess.TimeoutExpired:
          row = {"system": system, "audio_seconds": seconds, "failed": f"> {args.timeout:g} s"}
        if os.path.exists(out):
          outs[system] = out
        row |= {
          "benchmark": "whole_songs",
          "size": args.size,
          "date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} cores",
          "command": "python benchmarks/whole_songs.py " + " ".join(sys.argv[1:]),
        }
        if len(outs) == 2 and system == systems[-1]:
          a, b = (np.load(outs[s]) for s in systems)
          row["max_abs_diff"] = float(max(np.abs(a[k] - b[k]).max() for k in a.files))
        print(json.dumps(row), flush=True)
        if args.json:
          with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
