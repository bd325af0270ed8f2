"""prepare's two engines side by side on the same real music: the local process pool and the Beam
pipeline (DirectRunner), each with 1 and 2 workers, in one run on one machine.

  python benchmarks/prepare_engines.py --minutes=10 --workers=1,2 --json=ROWS.jsonl

The k-means teacher (8 x 1024) is fitted once first and given to every run (its fit is a one-off
per corpus, on one thread, and is timed on its own), so each row times what grows with the corpus:
decode + tokens + shards (the Beam engine decodes every file twice: once to plan, once to write).
Throughput is hours of audio per hour of wall time per worker (= audio seconds / wall seconds /
workers). Each row also carries the manifest's content hash: all rows must agree.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from data_pipeline import beam_prepare, example_audio, prepare_jobs, prepare_local

FIT_FRAMES = 50_000  # the k-means fit's sample (as benchmarks/pipeline_throughput.py)


def _config(inp: str, out: str, engine: str, workers: int) -> prepare_jobs.PrepareConfig:
  return prepare_jobs.PrepareConfig(
    input=inp,
    output=out,
    teacher="kmeans",
    workers=workers,
    engine=engine,
    kmeans_max_fit_frames=FIT_FRAMES,
    valid_fraction=0.0,
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--minutes", type=float, default=10.0, help="minutes of real music")
  p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
  p.add_argument("--engines", default="local,beam", help="engines, comma-separated")
  p.add_argument("--json", default=None, help="also append each row to this file")
  args = p.parse_args()
  machine = f"{platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}"
  print(f"{datetime.date.today()} {machine}")
  tmp = tempfile.mkdtemp()
  inp = os.path.join(tmp, "in")
  os.makedirs(inp)
  seconds = example_audio.copy_real_music(inp, args.minutes)
  print(f"corpus: {seconds / 60:.1f} min of real music, {len(os.listdir(inp))} files")

  teacher = os.path.join(tmp, "teacher_run")
  t0 = time.perf_counter()
  prepare_local.prepare(_config(inp, teacher, "local", 1), progress=False)
  print(f"k-means fit + one local pass (1 worker): {time.perf_counter() - t0:.1f} s")

  for engine in args.engines.split(","):
    for workers in map(int, args.workers.split(",")):
      out = os.path.join(tmp, f"{engine}_{workers}")
      shutil.copytree(os.path.join(teacher, prepare_jobs.TEACHER_DIR), os.path.join(out, "teacher"))
      cfg = _config(inp, out, engine, workers)
      run = beam_prepare.prepare if engine == "beam" else prepare_local.prepare
      t0 = time.perf_counter()
      manifest = run(cfg, progress=False)
      wall = time.perf_counter() - t0
      row = {
        "benchmark": "prepare_engines",
        "date": str(datetime.date.today()),
        "machine": machine,
        "engine": engine + (" (DirectRunner)" if engine == "beam" else " (process pool)"),
        "workers": workers,
        "teacher": "kmeans 8x1024 (fitted beforehand)",
        "audio_hours": round(seconds / 3600, 4),
        "wall_s": round(wall, 1),
        "audio_hours_per_hour_per_worker": round(seconds / wall / workers, 1),
        "content_hash": manifest["content_hash"],
      }
      print(json.dumps(row), flush=True)
      if args.json:
        with open(args.json, "a") as f:
          f.write(json.dumps(row) + "\n")
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
