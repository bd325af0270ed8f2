"""The kernels behind the model's CPU speed, beside PyTorch's: attention in the layouts and block
sizes the model can use, and a bfloat16 product with a float32 or a bfloat16 result.

  python benchmarks/cpu_kernels.py --lengths=749,4500 --json=ROWS.jsonl

Attention: MERT-95M's 12 heads of 64 channels over ``--lengths`` frames, float32, one clip:
``xla`` is ``jax.nn.dot_product_attention`` (XLA's path), ``heads_inside`` the einsums on
(B, T, H, d) as the model had them, ``manual`` and ``blockwise QxK`` the model's own paths
(mert_jax/model/attention.py, blockwise_attention.py; head-major), ``torch`` PyTorch's
``scaled_dot_product_attention`` (its CPU flash kernel). Matmul: (2048, 768) x (768, 3072), the
FFN's shape at 2,048 frames, in float32, and in bfloat16 with a bfloat16 or a float32 result
(``preferred_element_type``: what mert_jax/model/layers.matmul asks for). Each entry is the
median of ``--repeats`` calls after a warm-up, the systems interleaved so that a change in the
machine's load touches all of them alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

HEADS, HEAD_DIM = 12, 64  # MERT-95M
BLOCKS = ((256, 1024), (512, 512), (1024, 512))  # (queries, keys) per block of the blockwise path
MATMUL = (2048, 768, 3072)  # (M, K, N): the FFN's first product at 2,048 frames


def medians_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
  """Median wall milliseconds of each function (after one warm-up call), interleaved."""
  for fn in fns.values():
    fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      began = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - began)
  return {name: round(1000 * float(np.median(t)), 2) for name, t in times.items()}


def attention_fns(frames: int) -> dict[str, Callable[[], object]]:
  import jax
  import jax.numpy as jnp
  import torch

  from mert_jax.model.attention import _attention_manual
  from mert_jax.model.blockwise_attention import blockwise_attention

  q = jnp.asarray(
    0.1 * np.random.default_rng(0).standard_normal((1, frames, HEADS, HEAD_DIM)), jnp.float32
  )

  def heads_inside(q, k, v):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

  def manual(q, k, v):
    kw = dict(relax=0.0, dropout_rate=0.0, dropout_key=None, deterministic=True)
    return _attention_manual(q, k, v, None, **kw)

  jitted = {
    "xla": jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=1.0)),
    "heads_inside": jax.jit(heads_inside),
    "manual": jax.jit(manual),
    **{
      f"blockwise {bq}x{bk}": jax.jit(
        lambda q, k, v, bq=bq, bk=bk: blockwise_attention(q, k, v, block_q=bq, block_k=bk)
      )
      for bq, bk in BLOCKS
    },
  }
  fns = {name: (lambda f=f: jax.block_until_ready(f(q, q, q))) for name, f in jitted.items()}
  qt = torch.from_numpy(np.asarray(q)).transpose(1, 2).contiguous()

  def torch_sdpa():
    with torch.no_grad():
      torch.nn.functional.scaled_dot_product_attention(qt, qt, qt)

  return {**fns, "torch": torch_sdpa}


def matmul_fns() -> dict[str, Callable[[], object]]:
  import jax
  import jax.numpy as jnp
  import torch

  m, k, n = MATMUL
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
  b = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
  a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
  f32 = jax.jit(lambda x, y: x @ y)
  to_f32 = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  at, bt = torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b))
  at16, bt16 = at.to(torch.bfloat16), bt.to(torch.bfloat16)
  return {
    "jax float32": lambda: jax.block_until_ready(f32(a, b)),
    "jax bfloat16 -> bfloat16": lambda: jax.block_until_ready(f32(a16, b16)),
    "jax bfloat16 -> float32": lambda: jax.block_until_ready(to_f32(a16, b16)),
    "torch float32": lambda: at @ bt,
    "torch bfloat16": lambda: at16 @ bt16,
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--lengths", default="749,4500", help="comma-separated frame counts (attention)")
  p.add_argument("--repeats", type=int, default=7, help="timed calls per entry")
  p.add_argument("--json", default=None, help="also append the rows to this file")
  args = p.parse_args()
  import jax
  import torch

  base = {
    "benchmark": "cpu_kernels",
    "date": datetime.date.today().isoformat(),
    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    "jax": jax.__version__,
    "torch": torch.__version__,
    "command": "python benchmarks/cpu_kernels.py " + " ".join(sys.argv[1:]),
  }
  rows = [
    {
      **base,
      "kernel": "attention",
      "frames": int(t),
      "ms": medians_ms(attention_fns(int(t)), args.repeats),
    }
    for t in args.lengths.split(",")
  ]
  rows.append(
    {**base, "kernel": "matmul", "shape": MATMUL, "ms": medians_ms(matmul_fns(), args.repeats)}
  )
  for row in rows:
    what = f"attention, {row['frames']} frames" if row["kernel"] == "attention" else "matmul"
    print(f"{what}: " + ", ".join(f"{k} {v} ms" for k, v in row["ms"].items()), flush=True)
  if args.json:
    with open(args.json, "a") as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
