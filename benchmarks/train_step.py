"""Training-step throughput: clips/s, step time, MFU and peak memory over model sizes and batch
sizes.

  # full step (default)
  python benchmarks/train_step.py --sizes=95m,330m --batches=32,64,128
  # model only, CQT target zero
  python benchmarks/train_step.py --sizes=95m --batches=2 --mode=fwd_bwd
  # jax.profiler trace
  python benchmarks/train_step.py --sizes=95m --batches=64 --profile=/tmp/trace
  # largest batch that fits
  python benchmarks/train_step.py --sizes=95m --max-batch
  # config overrides
  python benchmarks/train_step.py --sizes=95m --batches=2 --set=model.remat=true
  # memory against crop length, compile only (--steps=0), full vs blockwise attention
  python benchmarks/train_step.py --sizes=95m --batches=1 --seconds=5,30,60 --steps=0 \
      --set=model.attention_impl=blockwise

``full`` times the trainer's own jitted step (mert_jax/train/state.py, train/step.py) with the state
donated: masking, mixup, CQT targets (the configured method), forward, loss, backward, clipping and
the AdamW update, on random audio and labels in 5 s clips. ``fwd_bwd`` times
``value_and_grad(pretraining_loss)`` with the CQT target replaced by zeros. FLOPs are analytic
(mert_jax/model/flops.py); MFU uses the device's dense bf16 peak (mert_jax/train/metrics.py). Peak
memory is the device allocator's peak on accelerators and XLA's buffer plan (arguments + outputs +
temporaries - aliased) on CPU, which has no allocator statistics. Each (size, batch) runs in its own
process so peaks and compile caches do not leak between rows. ``--json=FILE`` appends one JSON row
per run (benchmarks/ab.py compares two checkouts with it). ``--seconds`` takes several clip lengths
(memory against crop length); ``--steps=0`` compiles without running (the memory plan only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_one(
  size: str, batch: int, seconds: float, steps: int, mode: str, sets: list[str], profile: str
) -> dict:
  """Compile and time one configuration in this process; returns the result row."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from mert_jax import recipe
  from mert_jax.model.conv_extractor import num_frames
  from mert_jax.model.flops import train_flops_per_clip
  from mert_jax.model.mert import create_model
  from mert_jax.objective.loss import pretraining_loss
  from mert_jax.train import state as state_lib
  from mert_jax.train.metrics import peak_flops_per_device

  c = recipe.load_config(f"{recipe.DEFAULT_RECIPE}:{size}")
  recipe.apply_overrides(c, recipe.parse_assignments(sets))
  c.optimizer.grad_accum_steps, c.mesh = 1, [1, 1, 1]  # one micro-batch per update, one device
  cfg, obj = recipe.model_config_from(c), recipe.objective_config_from(c)
  length = int(round(seconds * cfg.sample_rate))
  t = num_frames(length, cfg.conv_layers)
  rng = np.random.RandomState(0)
  batch = {
    "audio": jnp.asarray(0.1 * rng.randn(batch, length).astype(np.float32)),
    "labels": jnp.asarray(rng.randint(0, cfg.codebook_size, (batch, cfg.num_codebooks, t + 1))),
  }
  b = batch["audio"].shape[0]
  if mode == "full":
    setup = state_lib.build(c, devices=jax.devices()[:1])  # the trainer's own state and jitted step
    state = setup.init()
    step = setup.train_step
    batch = jax.device_put(jax.tree.map(lambda x: x[None], batch), setup.batch_shardings)
    loss_of = lambda out: out[1]["loss"]
  else:
    graphdef, state = nnx.split(create_model(cfg))
    zero_cqt = lambda a: jnp.zeros((a.shape[0], t, cfg.cqt_bins), jnp.float32)

    def fwd_bwd(state, batch, key):
      def loss_fn(s):
        return pretraining_loss(nnx.merge(graphdef, s), batch, key, cqt_fn=zero_cqt, cfg=obj)[0]

      return jax.value_and_grad(loss_fn)(state)

    step = jax.jit(fwd_bwd)
    loss_of = lambda out: out[0]

  t0 = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.key(0)).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  planned = None
  if mem is not None:
    planned = (
      mem.argument_size_in_bytes
      + mem.output_size_in_bytes
      + mem.temp_size_in_bytes
      - mem.alias_size_in_bytes
    )

  dev = jax.devices()[0]
  row = {
    "size": size,
    "batch": b,
    "seconds": seconds,
    "frames": t,
    "mode": mode,
    "sets": sets,
    "device": f"{dev.device_kind} ({dev.platform})",
    "jax": jax.__version__,
    "compile_s": round(compile_s, 2),
    "planned_memory_gib": planned / 2**30 if planned is not None else None,
    "steps": steps,
  }
  if steps == 0:  # the memory plan only
    return row

  def advance(state, i):
    out = compiled(state, batch, jax.random.key(i))
    jax.block_until_ready(out)
    return (out[0] if mode == "full" else state), out

  t0 = time.perf_counter()
  state, out = advance(state, 1)  # warm-up (first execution)
  first_s = time.perf_counter() - t0
  times = []
  if profile:
    jax.profiler.start_trace(profile)
  for i in range(steps):
    t0 = time.perf_counter()
    state, out = advance(state, i + 2)
    times.append(time.perf_counter() - t0)
  if profile:
    jax.profiler.stop_trace()
  med = statistics.median(times)
  flops = train_flops_per_clip(cfg, length) * b
  peak = peak_flops_per_device(dev)
  stats = dev.memory_stats() if dev.platform != "cpu" else None
  return {
    **row,
    "first_step_s": round(first_s, 3),
    "step_s": med,
    "step_min_s": min(times),
    "clips_per_s": b / med,
    "gflop_per_clip": flops / b / 1e9,
    "tflops": flops / med / 1e12,
    "mfu": (flops / med / peak) if peak else None,
    "peak_memory_gib": stats.get("peak_bytes_in_use", 0) / 2**30 if stats else None,
    "loss": float(loss_of(out)),
  }


def _fmt(r: dict) -> str:
  if r["steps"] == 0:
    return (
      f"{r['size']:>5} batch {r['batch']:>4} | {r['seconds']:6.1f} s ({r['frames']} frames) | "
      f"XLA plan {r['planned_memory_gib']:.2f} GiB | compile {r['compile_s']:.1f} s"
    )
  mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
  mem = (
    f"peak {r['peak_memory_gib']:.2f} GiB"
    if r["peak_memory_gib"] is not None
    else f"XLA plan {r['planned_memory_gib']:.2f} GiB"
    if r["planned_memory_gib"] is not None
    else "mem n/a"
  )
  return (
    f"{r['size']:>5} batch {r['batch']:>4} | step {r['step_s'] * 1000:9.1f} ms"
    f" | {r['clips_per_s']:8.2f} clips/s"
    f" | {r['tflops']:7.3f} TFLOP/s | MFU {mfu:>6} | {mem} | compile {r['compile_s']:.1f} s"
    f" | loss {r['loss']:.3f}"
  )


def _child(args, size: str, batch: int, seconds: float) -> dict | None:
  """Run one configuration in a fresh process; None when it ran out of memory."""
  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    "--child",
    f"--sizes={size}",
    f"--batches={batch}",
    f"--seconds={seconds}",
    f"--steps={args.steps}",
    f"--mode={args.mode}",
  ]
  cmd += [f"--set={s}" for s in args.set]
  if args.profile:
    cmd.append(f"--profile={os.path.join(args.profile, f'{size}_b{batch}_{seconds:g}s')}")
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    if "RESOURCE_EXHAUSTED" in proc.stderr or "out of memory" in proc.stderr.lower():
      return None
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"benchmark of size {size} batch {batch} failed (exit {proc.returncode})")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--sizes", default="95m", help="comma-separated: tiny,95m,330m,1b")
  p.add_argument("--batches", default="2", help="comma-separated clips per step (per device)")
  p.add_argument("--seconds", default="5", help="comma-separated clip lengths (s)")
  p.add_argument(
    "--steps", type=int, default=3, help="timed steps after one warm-up (0: compile only)"
  )
  p.add_argument("--mode", choices=("full", "fwd_bwd"), default="full")
  p.add_argument(
    "--set", action="append", default=[], help="config override KEY=VALUE, e.g. model.remat=true"
  )
  p.add_argument(
    "--profile", default="", help="write jax.profiler traces of the timed steps under this folder"
  )
  p.add_argument("--json", default="", help="append one JSON row per run to this file")
  p.add_argument(
    "--max-batch",
    action="store_true",
    help="double the batch from --batches until it no longer fits",
  )
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  sizes = args.sizes.split(",")
  batches = [int(b) for b in args.batches.split(",")]
  lengths = [float(s) for s in args.seconds.split(",")]
  if args.child:
    row = run_one(sizes[0], batches[0], lengths[0], args.steps, args.mode, args.set, args.profile)
    print(json.dumps(row))
    return
  rows = []
  for size, seconds in ((z, s) for z in sizes for s in lengths):
    todo = list(batches)
    while todo:
      batch = todo.pop(0)
      r = _child(args, size, batch, seconds)
      if r is None:
        print(f"{size:>5} batch {batch:>4} {seconds:g} s | does not fit in device memory")
        if args.max_batch:
          break
        continue
      rows.append(r)
      print(_fmt(r), flush=True)
      if args.max_batch and not todo:
        todo.append(batch * 2)
  if rows:
    r = rows[0]
    print(
      f"device {r['device']}, jax {r['jax']}, "
      f"clips of {args.seconds} s, mode {r['mode']}"
      + (f", overrides {r['sets']}" if r["sets"] else "")
    )
  if args.json:
    with open(args.json, "a") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
  main()
