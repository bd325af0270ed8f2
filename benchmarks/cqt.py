"""Throughput of the CQT target (mert_jax/objective/cqt.py), both methods, and nnAudio CQT1992v2
on the same device.

  python benchmarks/cqt.py                                   # batch 64 x 5 s (the issue's setting)
  python benchmarks/cqt.py --batch=8 --steps=3               # on a small CPU

Times ``jax.jit(cqt)`` on random audio (the cost does not depend on the content) for
``method="exact"`` and ``method="fast"``, and, when torch and nnAudio are importable, nnAudio's
``CQT1992v2`` with MERT's settings on torch's device (CUDA if available, else CPU). Prints the
device kind, versions, median step time, clips/s, the ratios fast/exact and fast/nnAudio, and the
analytic FLOPs per clip (2 FLOPs per multiply-add of every convolution, zero taps included, as
they are computed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipeline.audio_format import HOP as HOP_SAMPLES
from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax.objective.cqt import _plan, cqt, nnaudio_cqt_kwargs

SR, HOP, FMIN, BINS, BPO = SAMPLE_RATE, HOP_SAMPLES, 32.7, 336, 48


def flops_per_clip(method: str, length: int) -> float:
  """Analytic FLOPs of one clip: the strided convolutions and, for fast, the halvings (block form,
  (K, 2p, p) per block of p outputs over the filtered signal's full support)."""
  plan = _plan(SR, HOP, FMIN, BINS, BPO, method)
  frames = length // HOP + 1
  macs = sum(frames * g.kernels.shape[0] * g.kernels.shape[2] for g in plan.groups)
  k, two_p, p = plan.halving.shape
  c = len(plan.decimation_filter) // 2
  start, n = 0, length
  for _ in range(max(g.stage for g in plan.groups)):
    u0, u1 = -(-(start - c) // 2), (start + n - 1 + c) // 2
    start, n = u0, u1 - u0 + 1
    macs += -(-n // p) * k * two_p * p
  return 2.0 * macs


def nnaudio_flops_per_clip(length: int) -> float:
  return 2.0 * (length // HOP + 1) * 2 * BINS * 65536  # real + imaginary, 65,536-tap kernels


def time_fn(fn: Callable[[], object], steps: int) -> tuple[float, float]:
  """(first call incl. compile, median of ``steps`` further calls) in seconds."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--seconds", type=float, default=5.0)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--methods", default="fast,exact,nnaudio", help="comma-separated subset")
  args = p.parse_args()

  length = int(args.seconds * SR)
  audio_np = (0.1 * np.random.RandomState(0).randn(args.batch, length)).astype(np.float32)
  audio = jax.device_put(jnp.asarray(audio_np))
  dev = jax.devices()[0]
  print(
    f"device={dev.device_kind} ({dev.platform}, {jax.device_count()} device(s)) "
    f"jax={jax.__version__} "
    f"batch={args.batch} clip={args.seconds}s ({length} samples, {length // HOP + 1} frames) "
    f"steps={args.steps}"
  )
  results = {}
  for method in ("fast", "exact"):
    if method not in args.methods:
      continue
    fn = jax.jit(lambda a, m=method: cqt(a, method=m))
    first, step = time_fn(lambda: jax.block_until_ready(fn(audio)), args.steps)
    results[method] = step
    flops = flops_per_clip(method, length)
    print(
      f"{method:>7}: first call {first:.2f} s, step {step * 1000:.1f} ms, "
      f"{args.batch / step:.1f} clips/s, "
      f"{flops / 1e9:.3f} GFLOP/clip, {flops * args.batch / step / 1e12:.3f} TFLOP/s"
    )
  if "nnaudio" in args.methods:
    try:
      import torch
      from nnAudio.features import CQT1992v2
    except ImportError as e:
      print(f"nnaudio: skipped ({e})")
    else:
      tdev = "cuda" if torch.cuda.is_available() else "cpu"
      layer = CQT1992v2(**nnaudio_cqt_kwargs(SR, HOP, FMIN, BINS, BPO)).to(tdev)
      x = torch.from_numpy(audio_np).to(tdev)

      def run():
        with torch.no_grad():
          layer(x)
        if tdev == "cuda":
          torch.cuda.synchronize()

      first, step = time_fn(run, args.steps)
      results["nnaudio"] = step
      flops = nnaudio_flops_per_clip(length)
      name = (
        torch.cuda.get_device_name()
        if tdev == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
      )
      print(
        f"nnaudio: torch {torch.__version__} on {name}: "
        f"first call {first:.2f} s, step {step * 1000:.1f} ms, "
        f"{args.batch / step:.1f} clips/s, {flops / 1e9:.3f} GFLOP/clip, "
        f"{flops * args.batch / step / 1e12:.3f} TFLOP/s"
      )
  if "fast" in results and "exact" in results:
    print(f"speed ratio fast/exact: {results['exact'] / results['fast']:.1f}x")
  if "fast" in results and "nnaudio" in results:
    print(f"speed ratio fast/nnAudio: {results['nnaudio'] / results['fast']:.1f}x")


if __name__ == "__main__":
  main()
