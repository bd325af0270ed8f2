"""Data-pipeline throughput: prepare (per teacher) and the reader.

  python benchmarks/pipeline_throughput.py --minutes=10 --workers=2

prepare: real music files (the Debian soundtrack package's ogg files, decoded from their original
format) -> shards, timed end to end; reported as hours of audio per hour of wall time per core
(= audio seconds / wall seconds / workers). The k-means fit is timed separately (it runs once per
corpus, single-threaded). reader: parse + CRC + crop + window shuffle + batch of 5 s clips from
30 s records in one process (one core), after the shuffle buffer is full.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

from data_pipeline import example_audio, prepare_jobs, prepare_local
from data_pipeline.audio import decode_file
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.reader import ReaderConfig, make_dataset
from data_pipeline.records import from_int16
from data_pipeline.teachers import factory, kmeans_features


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--minutes", type=float, default=10.0)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--teachers", default="kmeans,encodec")
  p.add_argument("--reader-batches", type=int, default=40)
  args = p.parse_args()
  print(
    f"{datetime.date.today()} {platform.machine()} {os.cpu_count()} cores, "
    f"python {sys.version.split()[0]}"
  )
  tmp = tempfile.mkdtemp()
  inp = os.path.join(tmp, "in")
  os.makedirs(inp)
  seconds = example_audio.copy_real_music(inp, args.minutes)
  print(f"corpus: {seconds / 60:.1f} min of ogg/vorbis music")
  out_kmeans = None
  for teacher in args.teachers.split(","):
    out = os.path.join(tmp, f"out_{teacher}")
    cfg = prepare_jobs.PrepareConfig(
      input=inp,
      output=out,
      teacher=teacher,
      workers=args.workers,
      encodec="random-init" if teacher == "encodec" else None,
      kmeans_max_fit_frames=50_000,
      valid_fraction=0.0,
    )
    t0 = time.perf_counter()
    prepare_local.prepare(cfg, progress=False)
    wall = time.perf_counter() - t0
    print(
      f"prepare teacher={teacher} workers={args.workers}: {wall:.1f} s wall for "
      f"{seconds / 3600:.3f} h -> "
      f"{seconds / wall / args.workers:.1f} h of audio per hour per core (all stages)"
    )
    if teacher == "kmeans":
      out_kmeans = out
      audios = [
        from_int16(decode_file(os.path.join(inp, f), SAMPLE_RATE, 1))
        for f in sorted(os.listdir(inp))
      ]
      t0 = time.perf_counter()
      factory.make_teacher(
        "kmeans", audios=audios, config=kmeans_features.KMeansConfig(max_fit_frames=50_000), seed=0
      )
      fit = time.perf_counter() - t0
      print(
        f"  of which the one-off k-means fit (8 x 1024 codes, 50,000 frames, 1 thread) takes "
        f"about {fit:.1f} s; without it: {seconds / max(wall - fit, 1e-9) / args.workers:.0f} h "
        f"of audio per hour per core"
      )
  if out_kmeans:
    cfg = ReaderConfig(crop_samples=5 * SAMPLE_RATE, batch_size=64, shuffle_window=1024)
    ds, _ = make_dataset(out_kmeans, cfg)
    it = iter(ds)
    for _ in range(1024 // 64 + 2):  # fill the shuffle window
      next(it)
    t0 = time.perf_counter()
    for _ in range(args.reader_batches):
      next(it)
    dt = time.perf_counter() - t0
    print(
      f"reader: {args.reader_batches * 64 / dt:.0f} clips/s (5 s clips, batch 64, window 1024, "
      f"one process)"
    )
  shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
