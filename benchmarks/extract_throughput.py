"""Feature extraction throughput, before and after the batched extractor: seconds of audio per
second of wall time for ``extract --window-seconds`` on real music.

  python benchmarks/extract_throughput.py --size=small --minutes=2 --window-seconds=10 \
      --json=ROWS.jsonl
  python benchmarks/extract_throughput.py --size=95m --minutes=1 --batch=6 --transformers

"before" is the previous path: each window through the model eagerly, one window per call
(mert_jax.model.features.hidden_states); "after" is batched_layers: the windows ``--batch`` at a
time through one jitted program (its compile timed apart, once per run). Random-init weights of
the named size (speed does not depend on the weights); float32, every layer kept.
``--transformers`` also times ``transformers.HubertModel`` (the same weights, converted) on the same
windows, ``--batch`` per call, every hidden state, under ``torch.no_grad``; the passes alternate
(mert-jax, transformers, ...) ``--repeats`` times and the median of each is reported.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from data_pipeline import example_audio
from mert_jax.config import model_config
from mert_jax.model.conv_extractor import samples_for
from mert_jax.model.features import batched_layers, hidden_states, window_starts
from mert_jax.model.mert import create_model


def windows_of(audio: np.ndarray, cfg, window_seconds: float) -> np.ndarray:
  """The equal windows extract cuts (window_starts), stacked: (W, samples)."""
  starts, n = window_starts(len(audio), cfg, window_seconds)
  length = samples_for(n, cfg.conv_layers)
  return np.stack([audio[s * cfg.frame_stride : s * cfg.frame_stride + length] for s in starts])


def hubert_pass(model, windows: np.ndarray, batch: int):
  """A function running ``transformers.HubertModel`` with ``model``'s weights over ``windows``,
  ``batch`` per call (every hidden state, float32, no autograd)."""
  import torch
  import transformers

  from mert_jax.hf import convert

  hf = transformers.HubertModel(
    transformers.HubertConfig(**convert.hf_config_dict(model.backbone.cfg))
  )
  state = convert.backbone_to_hf_state_dict(model)
  hf.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
  hf.eval()
  chunks = [torch.from_numpy(windows[i : i + batch]) for i in range(0, len(windows), batch)]

  def run() -> None:
    with torch.no_grad():
      for x in chunks:
        hf(x, output_hidden_states=True)

  run()  # warm-up
  return run


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="small", help="model size (mert_jax/config.py)")
  p.add_argument("--minutes", type=float, default=2.0, help="minutes of real music")
  p.add_argument("--window-seconds", type=float, default=10.0)
  p.add_argument("--batch", type=int, default=8, help="windows per call (after)")
  p.add_argument("--json", default=None, help="also append the row to this file")
  p.add_argument("--transformers", action="store_true", help="also time transformers.HubertModel")
  p.add_argument("--repeats", type=int, default=3, help="--transformers: alternating passes")
  args = p.parse_args()
  cfg = model_config(args.size, dtype="float32")
  model = create_model(cfg, seed=0)
  backbone = model.backbone
  audio = example_audio.music_clip(seconds=60.0 * args.minutes, offset_seconds=0.0)
  windows = windows_of(audio, cfg, args.window_seconds)
  seconds = len(audio) / cfg.sample_rate

  began = time.perf_counter()
  for w in windows:  # before: eager, one window per call
    hidden_states(backbone, w)
  before = time.perf_counter() - began

  extract = batched_layers(backbone, pool="none", batch_size=args.batch)
  began = time.perf_counter()
  extract(windows[: args.batch])  # the compile (and one batch)
  compile_s = time.perf_counter() - began
  hf_pass = hubert_pass(model, windows, args.batch) if args.transformers else None
  afters, hf_walls = [], []
  for _ in range(args.repeats if hf_pass else 1):
    began = time.perf_counter()
    extract(windows)
    afters.append(time.perf_counter() - began)
    if hf_pass:
      began = time.perf_counter()
      hf_pass()
      hf_walls.append(time.perf_counter() - began)
  after = float(np.median(afters))

  row = {
    "benchmark": "extract_throughput",
    "date": datetime.date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}",
    "size": args.size,
    "audio_seconds": round(seconds, 1),
    "windows": len(windows),
    "window_seconds": args.window_seconds,
    "batch": args.batch,
    "before_audio_s_per_s": round(seconds / before, 2),
    "after_audio_s_per_s": round(seconds / after, 2),
    "after_compile_s": round(compile_s, 2),
    "transformers_audio_s_per_s": round(seconds / float(np.median(hf_walls)), 2)
    if hf_walls
    else None,
    "command": "python benchmarks/extract_throughput.py " + " ".join(sys.argv[1:]),
  }
  print(json.dumps(row))
  print(
    f"{args.size}, {seconds:.0f} s of music in {len(windows)} windows of {args.window_seconds} s: "
    f"before {row['before_audio_s_per_s']} s/s (eager, one window per call), after "
    f"{row['after_audio_s_per_s']} s/s (jitted, {args.batch} per call; compile "
    f"{compile_s:.1f} s, once)"
    + (f"; transformers {row['transformers_audio_s_per_s']} s/s" if hf_walls else "")
  )
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps({k: v for k, v in row.items()}) + "\n")


if __name__ == "__main__":
  main()
