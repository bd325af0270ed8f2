"""Pod-scale planning numbers from FLOP counts: per-chip batch, step time at a given MFU, wall time
of the recipe, and the data-loader load per host. Writes the table used in docs/scaling.md.

  python benchmarks/scaling.py --chips=32 --chips-per-host=4 --peak-tflops=275 --mfu=0.30,0.40,0.50

Inputs are the recipe (configs/mert.py: global batch, accumulation, crop, steps) and the analytic
FLOPs (mert_jax/model/flops.py). The MFU column is an assumption to be replaced by a measurement
(benchmarks/train_step.py on the target chip); the reader rate is the one measured in
benchmarks/README.md (clips/s per CPU core) and is passed with --reader-clips-per-core.
"""

from __future__ import annotations

import argparse

from mert_jax import recipe
from mert_jax.model.flops import train_flops_per_clip


def plan(
  size: str,
  chips: int,
  chips_per_host: int,
  peak_tflops: float,
  mfu: float,
  reader_clips_per_core: float,
  record_seconds: float,
) -> dict:
  c = recipe.load_config(f"{recipe.DEFAULT_RECIPE}:{size}")
  cfg = recipe.model_config_from(c)
  flops_clip = train_flops_per_clip(cfg, c.crop_samples)
  per_chip_update = c.batch_size / chips
  step_s = per_chip_update * flops_clip / (peak_tflops * 1e12 * mfu)
  clips_s = c.batch_size / step_s
  hosts = max(chips // chips_per_host, 1)
  host_clips_s = clips_s / hosts
  return {
    "size": size,
    "global_batch": c.batch_size,
    "accum": c.optimizer.grad_accum_steps,
    "per_chip_micro_batch": per_chip_update / c.optimizer.grad_accum_steps,
    "gflop_per_clip": flops_clip / 1e9,
    "mfu": mfu,
    "update_s": step_s,
    "clips_per_s": clips_s,
    "hours": c.total_steps * step_s / 3600,
    "total_steps": c.total_steps,
    "host_clips_per_s": host_clips_s,
    # The reader takes one crop per record, so storage serves whole records: int16 audio + int16
    # codes.
    "host_read_mb_per_s": host_clips_s
    * record_seconds
    * 2
    * (cfg.sample_rate + cfg.sample_rate / cfg.frame_stride * cfg.num_codebooks)
    / 1e6,
    "host_reader_cores": host_clips_s / reader_clips_per_core,
    "host_to_device_mb_per_s": host_clips_s * c.crop_samples * 4 / 1e6,  # float32 audio
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default="95m,330m")
  p.add_argument("--chips", type=int, default=32, help="v4-64 = 32 chips")
  p.add_argument("--chips-per-host", type=int, default=4)
  p.add_argument(
    "--peak-tflops", type=float, default=275.0, help="dense bf16 peak per chip (TPU v4: 275)"
  )
  p.add_argument("--mfu", default="0.30,0.40,0.50")
  p.add_argument("--reader-clips-per-core", type=float, default=2090.0)
  p.add_argument(
    "--record-seconds",
    type=float,
    default=30.0,
    help="record length in the prepared shards (data_pipeline.prepare --segment-seconds)",
  )
  args = p.parse_args()
  print(
    "| size | global batch (accum) | per-chip micro-batch | GFLOP/clip | MFU | update time "
    "| clips/s (pod) | recipe wall time (steps) "
    "| per host: clips/s, storage read MB/s, reader cores, host->device MB/s |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for size in args.sizes.split(","):
    for mfu in (float(m) for m in args.mfu.split(",")):
      r = plan(
        size,
        args.chips,
        args.chips_per_host,
        args.peak_tflops,
        mfu,
        args.reader_clips_per_core,
        args.record_seconds,
      )
      print(
        f"| {size} | {r['global_batch']} ({r['accum']}) | {r['per_chip_micro_batch']:g} "
        f"| {r['gflop_per_clip']:.1f} "
        f"| {mfu:.0%} | {r['update_s'] * 1000:.0f} ms | {r['clips_per_s']:,.0f} "
        f"| {r['hours']:.1f} h ({r['total_steps'] // 1000}k) "
        f"| {r['host_clips_per_s']:,.0f}, {r['host_read_mb_per_s']:.0f}, "
        f"{r['host_reader_cores']:.2f}, {r['host_to_device_mb_per_s']:.0f} |"
      )


if __name__ == "__main__":
  main()
