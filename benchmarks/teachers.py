"""Teacher throughput: seconds of audio tokenised per second of wall time, per CPU core.

  python benchmarks/teachers.py    # 60 s of real music, k-means 8 x 1024, EnCodec random init
  python benchmarks/teachers.py --seconds=30 --codebook-size=256 --skip-encodec
  python benchmarks/teachers.py --fit-clips=10 --skip-encodec  # fit on 10 tracks (45k frames)

Everything runs on one core (k-means: ``KMeansConfig.num_threads=1``; EnCodec:
``torch.set_num_threads(1)``), so the "per core" figure is the measured audio-seconds per
wall-second; multiply by the worker processes the preparation command runs. K-means reports
fitting (feature extraction + residual MiniBatchKMeans on all the frames of ``--fit-clips`` clips,
each from a different track) and assignment (``tokens`` of the first clip) separately; assignment
is the median of ``--repeats`` runs. EnCodec uses untrained weights (``make_teacher("encodec",
seed=0)``, i.e. ``random_init``): the network and its cost are those of the real 24 kHz model.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

from data_pipeline import example_audio
from data_pipeline.audio_format import SAMPLE_RATE
from data_pipeline.teachers.encodec import EncodecTeacherConfig
from data_pipeline.teachers.factory import make_teacher
from data_pipeline.teachers.kmeans_features import KMeansConfig, frame_features


def timed(fn, repeats: int) -> tuple[float, object]:
  """(median wall seconds over ``repeats`` calls, last result)."""
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seconds", type=float, default=60.0, help="length of the real-music clip")
  p.add_argument("--repeats", type=int, default=3, help="runs of each assignment timing (median)")
  p.add_argument("--codebooks", type=int, default=8)
  p.add_argument("--codebook-size", type=int, default=1024)
  p.add_argument(
    "--fit-clips", type=int, default=1, help="k-means is fitted on this many clips (tracks)"
  )
  p.add_argument("--skip-encodec", action="store_true")
  args = p.parse_args()

  print(f"date     {datetime.datetime.now().isoformat(timespec='seconds')}")
  print(
    f"machine  {platform.platform()}, {platform.processor() or platform.machine()}, "
    f"{os.cpu_count()} CPUs visible, python {platform.python_version()}"
  )
  music = example_audio.music_clip(seconds=args.seconds)
  secs = len(music) / SAMPLE_RATE
  print(
    f"audio    {secs:.1f} s of "
    f"{'real' if example_audio.real_music_files() else 'synthesised'} music, 24 kHz"
  )

  cfg = KMeansConfig(num_codebooks=args.codebooks, codebook_size=args.codebook_size, num_threads=1)
  frame_features(music[:SAMPLE_RATE], cfg)  # warm-up: imports, filterbanks
  t_feat, _ = timed(lambda: frame_features(music, cfg), args.repeats)
  fit_audio = [music] + [
    example_audio.music_clip(seconds=args.seconds, index=i) for i in range(1, args.fit_clips)
  ]
  fit_secs = sum(len(a) for a in fit_audio) / SAMPLE_RATE
  t_fit, teacher = timed(lambda: make_teacher("kmeans", audios=fit_audio, config=cfg, seed=0), 1)
  t_tok, codes = timed(lambda: teacher.tokens(music), args.repeats)
  print(
    f"kmeans   {args.codebooks} x {args.codebook_size}, {cfg.feature_dim}-dim features, "
    f"{teacher.fit_info['fit_frames']} fit frames, n_init={cfg.n_init}"
  )
  print(f"  features only  {secs / t_feat:9.1f} audio-s/s/core  ({t_feat:.3f} s)")
  print(
    f"  fit            {fit_secs / t_fit:9.1f} audio-s/s/core  ({t_fit:.2f} s for "
    f"{fit_secs:.0f} s: features + {args.codebooks} k-means)"
  )
  print(f"  assign tokens  {secs / t_tok:9.1f} audio-s/s/core  ({t_tok:.3f} s -> {codes.shape})")

  if not args.skip_encodec:
    import torch  # pylint: disable=g-import-not-at-top

    torch.set_num_threads(1)
    enc = make_teacher("encodec", seed=0, config=EncodecTeacherConfig(num_threads=1))
    t_enc, codes = timed(lambda: enc.tokens(music), max(1, args.repeats - 1))
    print(
      f"encodec  random init, 6 kbps, window {enc.cfg.window_seconds:g} s + "
      f"{enc.cfg.context_seconds:g} s context, torch {torch.__version__} CPU, 1 thread"
    )
    print(f"  tokens         {secs / t_enc:9.1f} audio-s/s/core  ({t_enc:.2f} s -> {codes.shape})")


if __name__ == "__main__":
  main()
