"""Training-step throughput of the MERT model.

  python benchmarks/model_step.py --size=95m --batch=2 --seconds=5 --steps=3          # fwd + bwd
  python benchmarks/model_step.py --size=95m --batch=64 --full                        # full step, on a GPU

Default mode times ``jax.jit(jax.value_and_grad(pretraining_loss))`` on random audio and labels:
masking, mixup, forward, the 8-codebook cosine CE, CQT-head MSE and backward, with the CQT *target*
replaced by zeros (benchmarks/cqt.py times the CQT). ``--full`` times the trainer's own jitted step
(mert_jax/train_step.py): masking, mixup, CQT targets (the configured method), loss, backward,
clipping and the AdamW update, with the state donated; it reports MFU when the device's peak is
known (mert_jax/metrics.py). FLOPs are counted analytically (mert_jax/flops.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.mert import get_config
from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.metrics import peak_flops_per_device
from mert_jax.optim import make_optimizer
from mert_jax.train_step import init_state, make_train_step
from mert_jax.conv_extractor import num_frames
from mert_jax.flops import train_flops_per_clip
from mert_jax.model import create_model
from mert_jax.objective import pretraining_loss


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--size", default="95m")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--seconds", type=float, default=5.0)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--attention", default="auto", help="model.attention_impl")
  p.add_argument("--full", action="store_true", help="the trainer's full step (CQT, optimizer)")
  p.add_argument("--profile", default="", help="write a jax.profiler trace of the timed steps to this folder")
  args = p.parse_args()

  cfg = model_config(args.size, dtype=args.dtype, attention_impl=args.attention)
  obj = ObjectiveConfig()
  length = int(args.seconds * cfg.sample_rate)
  t = num_frames(length, cfg.conv_layers)
  rng = np.random.RandomState(0)
  batch = {"audio": jnp.asarray(0.1 * rng.randn(args.batch, length).astype(np.float32)),
           "labels": jnp.asarray(rng.randint(0, cfg.codebook_size, (args.batch, cfg.num_codebooks, t + 1)))}
  zero_cqt = lambda a: jnp.zeros((a.shape[0], t, cfg.cqt_bins), jnp.float32)
  graphdef, state = nnx.split(create_model(cfg))
  if args.full:
    opt_cfg = get_config(args.size).optimizer
    tx, schedule = make_optimizer(opt_cfg, 400_000)
    graphdef, template = nnx.split(create_model(cfg), nnx.Param)
    state = init_state(nnx.to_pure_dict(template), tx)
    full = jax.jit(make_train_step(graphdef, template, tx, schedule, obj, cfg.cqt_bins), donate_argnums=0)
    batch = jax.tree.map(lambda x: x[None], batch)          # one micro-batch
    def step(state, batch, key):
      new_state, metrics = full(state, batch, key)
      return metrics["loss"], new_state
  else:
    @jax.jit
    def step(state, batch, key):
      def loss_fn(s):
        return pretraining_loss(nnx.merge(graphdef, s), batch, key, cqt_fn=zero_cqt, cfg=obj)[0]
      return jax.value_and_grad(loss_fn)(state)

  t0 = time.perf_counter()
  loss, out = step(state, batch, jax.random.key(0))
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  if args.full:
    state = out
  times = []
  if args.profile:
    jax.profiler.start_trace(args.profile)
  for i in range(args.steps):
    t0 = time.perf_counter()
    loss, out = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    if args.full:
      state = out
  if args.profile:
    jax.profiler.stop_trace()
    print(f"profile written to {args.profile} (open with TensorBoard's profile plugin or Perfetto)")
  med = statistics.median(times)
  flops = train_flops_per_clip(cfg, length) * args.batch
  dev = jax.devices()[0]
  peak = peak_flops_per_device(dev)
  mfu = f"; MFU {flops / med / peak:.1%}" if peak else "; MFU n/a (unknown device peak)"
  print(f"device={dev.device_kind} ({dev.platform}) jax={jax.__version__} size={args.size} dtype={args.dtype} "
        f"attention={args.attention} batch={args.batch} clip={args.seconds}s frames={t} "
        f"mode={'full step' if args.full else 'fwd+bwd'}")
  print(f"compile+first step {compile_s:.1f} s; step median {med * 1000:.1f} ms over {args.steps} "
        f"(min {min(times) * 1000:.1f}); {args.batch / med:.2f} clips/s; "
        f"{flops / 1e9 / args.batch:.1f} GFLOP/clip; {flops / med / 1e12:.3f} TFLOP/s{mfu}; loss {float(loss):.3f}")
  if jax.devices()[0].platform != "cpu":
    stats = dev.memory_stats() or {}
    print(f"peak device memory {stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB")


if __name__ == "__main__":
  main()
