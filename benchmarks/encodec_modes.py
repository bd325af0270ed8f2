"""The EnCodec teacher's two modes on real music: how many codes the windowed mode (30 s windows,
1 s of left context, 8 windows per call) changes against one pass per file (the reference's
preprocessing), and what each costs.

  python benchmarks/encodec_modes.py --minutes=5 --json=ROWS.jsonl

Weights: ``--encodec=PATH_OR_HUB_ID`` (facebook/encodec_24khz), else the seeded untrained model the
tests use (its random codebooks make near ties, hence flips, more common than trained ones would:
read its differences as an upper-bound estimate). One torch thread, as prepare runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from data_pipeline import example_audio
from data_pipeline.audio import decode_file
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.records import from_int16
from data_pipeline.teachers import encodec


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--minutes", type=float, default=5.0, help="minutes of real music")
  p.add_argument("--encodec", default=None, help="weights (default: the untrained seeded model)")
  p.add_argument("--json", default=None, help="also append the row to this file")
  args = p.parse_args()
  machine = f"{platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}"
  base = encodec.EncodecTeacherConfig(num_threads=1)
  if args.encodec:
    teacher = encodec.EncodecTeacher.from_pretrained(args.encodec, config=base)
  else:
    teacher = encodec.EncodecTeacher.random_init(0, config=base)
  modes = {
    "whole": dataclasses.replace(base, mode="whole"),
    "windowed": base,
    "windowed, one window per call": dataclasses.replace(base, batch_windows=1),
  }
  files, total = [], 0.0
  for path in example_audio.real_music_files():
    if total >= args.minutes * 60:
      break
    audio = from_int16(decode_file(path, SAMPLE_RATE, 1))
    files.append((os.path.basename(path), audio))
    total += len(audio) / SAMPLE_RATE
  if not files:
    raise SystemExit("no Debian music package installed (apt-get install singularity-music)")
  codes, speed = {}, {}
  for name, cfg in modes.items():
    t = encodec.EncodecTeacher(teacher.model, source=teacher.source, seed=teacher.seed, config=cfg)
    t0 = time.perf_counter()
    codes[name] = [t.tokens(audio) for _, audio in files]
    speed[name] = round(total / (time.perf_counter() - t0), 2)
  whole = np.concatenate(codes["whole"], axis=1)
  differ = {
    name: [round(float(x), 5) for x in (np.concatenate(c, axis=1) != whole).mean(axis=1)]
    for name, c in codes.items()
    if name != "whole"
  }
  row = {
    "benchmark": "encodec_modes",
    "date": str(datetime.date.today()),
    "machine": machine,
    "weights": args.encodec or "untrained, seeded (random_init(0))",
    "files": len(files),
    "audio_minutes": round(total / 60, 2),
    "longest_file_s": round(max(len(a) for _, a in files) / SAMPLE_RATE, 1),
    "audio_s_per_s_one_thread": speed,
    "fraction_of_codes_differing_from_whole_per_codebook": differ,
  }
  print(json.dumps(row, indent=1))
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
