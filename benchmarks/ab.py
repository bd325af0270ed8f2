"""A/B step-time ratio of two code versions (or two config settings) on the same machine, same run.

  git worktree add /tmp/old <rev>
  python benchmarks/ab.py --old=/tmp/old -- --sizes=95m --batches=2 --steps=3
  # one checkout, two settings:
  python benchmarks/ab.py --new-set=model.remat=true -- --sizes=95m --batches=2

Runs benchmarks/train_step.py alternately against the old checkout (``PYTHONPATH=--old``) and this
one, ``--repeats`` times each, and prints new/old for the median step time, clips/s and compile
time. Alternating interleaves the machine's noise (other processes, thermal state) between the two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _run(code_root: str, sets: list[str], bench_args: list[str]) -> list[dict]:
  with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
    out = f.name
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([code_root, os.environ.get("PYTHONPATH", "")]))
  cmd = [sys.executable, os.path.join(HERE, "train_step.py"), f"--json={out}", *bench_args]
  cmd += [f"--set={s}" for s in sets]
  subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
  rows = [json.loads(line) for line in open(out)]
  os.unlink(out)
  return rows


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--old", default=ROOT, help="checkout of the old code (default: this one)")
  p.add_argument("--old-set", action="append", default=[], help="config override for the old runs")
  p.add_argument("--new-set", action="append", default=[], help="config override for the new runs")
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("bench_args", nargs="*", help="arguments of benchmarks/train_step.py (after --)")
  args = p.parse_args()
  results: dict[str, list[list[dict]]] = {"old": [], "new": []}
  for _ in range(args.repeats):
    results["old"].append(_run(os.path.abspath(args.old), args.old_set, args.bench_args))
    results["new"].append(_run(ROOT, args.new_set, args.bench_args))
  print(
    f"old: {os.path.abspath(args.old)} {args.old_set}  new: {ROOT} {args.new_set}  "
    f"({args.repeats} alternating runs each)"
  )
  for i, row in enumerate(results["new"][0]):
    old = [rep[i] for rep in results["old"]]
    new = [rep[i] for rep in results["new"]]
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    so, sn = med(old, "step_s"), med(new, "step_s")
    co, cn = med(old, "compile_s"), med(new, "compile_s")
    mem = ""
    if row.get("planned_memory_gib") is not None and old[0].get("planned_memory_gib"):
      mem = f" | memory new/old {new[0]['planned_memory_gib'] / old[0]['planned_memory_gib']:.3f}"
    print(
      f"{row['size']} batch {row['batch']} {row['mode']}: "
      f"step old {so * 1000:.1f} ms, new {sn * 1000:.1f} ms, "
      f"new/old {sn / so:.3f} (speed-up {so / sn:.2f}x) | compile new/old {cn / co:.2f}{mem} | "
      f"loss old {old[0]['loss']:.4f} new {new[0]['loss']:.4f}"
    )


if __name__ == "__main__":
  main()
