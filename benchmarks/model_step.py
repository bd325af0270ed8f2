"""Forward + backward throughput of the MERT model and objective (no optimizer, no CQT).

  python benchmarks/model_step.py --size=95m --batch=2 --seconds=5 --steps=3
  python benchmarks/model_step.py --size=330m --batch=32 --seconds=5     # on a GPU

Times ``jax.jit(jax.value_and_grad(pretraining_loss))`` on random audio and labels: masking,
mixup, forward, the 8-codebook cosine CE, CQT-head MSE and backward. The CQT *target* is
replaced by zeros here (its cost is benchmarked by the CQT issue's benchmark), and the
optimizer update is not included (the trainer's benchmark covers the full step). FLOPs are
counted analytically (mert_jax/flops.py); TFLOP/s = FLOPs per step / median step time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax.config import ObjectiveConfig, model_config
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

  @jax.jit
  def step(state, batch, key):
    def loss_fn(s):
      return pretraining_loss(nnx.merge(graphdef, s), batch, key, cqt_fn=zero_cqt, cfg=obj)[0]
    return jax.value_and_grad(loss_fn)(state)

  t0 = time.perf_counter()
  loss, grads = step(state, batch, jax.random.key(0))
  jax.block_until_ready(grads)
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(args.steps):
    t0 = time.perf_counter()
    loss, grads = step(state, batch, jax.random.key(i + 1))
    jax.block_until_ready(grads)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  flops = train_flops_per_clip(cfg, length) * args.batch
  dev = jax.devices()[0]
  print(f"device={dev.device_kind} ({dev.platform}) jax={jax.__version__} size={args.size} dtype={args.dtype} "
        f"attention={args.attention} batch={args.batch} clip={args.seconds}s frames={t}")
  print(f"compile+first step {compile_s:.1f} s; step median {med * 1000:.1f} ms over {args.steps} "
        f"(min {min(times) * 1000:.1f}); {args.batch / med:.2f} clips/s; "
        f"{flops / 1e9 / args.batch:.1f} GFLOP/clip; {flops / med / 1e12:.3f} TFLOP/s; loss {float(loss):.3f}")


if __name__ == "__main__":
  main()
