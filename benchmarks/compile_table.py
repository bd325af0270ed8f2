"""Markdown tables for docs/scaling.md from mert-compile-check JSON lines: every compile, every
max-batch search, and the full-depth max batch extrapolated from compiles at reduced depth.

  python benchmarks/compile_table.py benchmarks/results/compile_check_v4_2026-12-02.jsonl

Compiles at two depths (``--config.model.num_layers``) x two per-chip batches of the same recipe
and slice are fitted with mert_jax/train/batch_search.py's DepthModel and evaluated at the
recipe's own depth: those rows are *extrapolated*, the others *compiled*.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from typing import Any

from mert_jax import recipe
from mert_jax.train.batch_search import DEPTH_METHOD, fit_depth_model

GIB = 2**30
LAYERS = "model.num_layers="


def _gib(n: int | None) -> str:
  return "-" if n is None else f"{n / GIB:.2f}"


def _est(seconds: float | None, clips: int) -> str:
  return "null" if not seconds else f"{seconds * 1000:.0f} ms, {clips / seconds:.0f}"


def _remat(overrides: list[str], variant: str) -> str:
  for o in overrides:
    if o.startswith("model.remat="):
      return o.split("=", 1)[1]
  return str(recipe.load_config(f"{recipe.DEFAULT_RECIPE}:{variant}").model.remat).lower()


def compile_rows(rows: list[dict[str, Any]]) -> list[str]:
  """One line per compile: memory breakdown (measured) and step-time estimates."""
  out = [
    "| size | remat | overrides | slice | mesh (d,f,t) | per-chip batch | arguments | outputs "
    "| temporaries | code | total GiB | fits | compile s | XLA cost model: step, clips/s/chip "
    "| analytic at peak: step, clips/s/chip |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    if r.get("kind") != "compile":
      continue
    m, b = r["bytes_per_chip"], r["per_chip_batch"]
    mesh = ",".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
    extra = [o for o in r["overrides"] if not o.startswith("model.remat=")]
    out.append(
      f"| {r['variant']} | {_remat(r['overrides'], r['variant'])} | {' '.join(extra) or '-'} "
      f"| {r['topology']} | {mesh} | {b} | {_gib(m['arguments'])} | {_gib(m['outputs'])} "
      f"| {_gib(m['temporaries'])} | {_gib(m['generated_code'])} | {m['total'] / GIB:.2f} "
      f"| {'yes' if r['fits'] else 'no'} | {r['compile_s']:.0f} "
      f"| {_est(r['xla_step_s'], b)} | {_est(r['analytic_step_s_at_peak'], b)} |"
    )
  return out


def search_rows(rows: list[dict[str, Any]]) -> list[str]:
  """One line per max-batch search (compiled, full depth)."""
  out = []
  for r in rows:
    if r.get("kind") == "max_batch":
      out.append(
        f"| {r['variant']} | {_remat(r['overrides'], r['variant'])} | {r['topology']} "
        f"| {r['max_per_chip_batch']} ({'exact' if r['exact'] else 'bound'}) "
        f"| compiled: {r['compiles']} compiles {r['probes']} | `{r['command']}` |"
      )
  return out


def extrapolated_rows(rows: list[dict[str, Any]]) -> list[str]:
  """The recipe-depth max batch of each (recipe, overrides, slice) compiled at two depths x two
  batches."""
  groups: dict[tuple, dict[tuple[int, int], int]] = defaultdict(dict)
  commands: dict[tuple, list[str]] = defaultdict(list)
  for r in rows:
    layers = [o for o in r.get("overrides", []) if o.startswith(LAYERS)]
    if r.get("kind") != "compile" or not layers:
      continue
    rest = tuple(o for o in r["overrides"] if not o.startswith(LAYERS))
    key = (r["config"], r["variant"], rest, r["topology"], r["hbm_gib_per_chip"])
    groups[key][int(layers[0][len(LAYERS) :]), r["per_chip_batch"]] = r["bytes_per_chip"]["total"]
    commands[key].append(r["command"])
  out = []
  for key, points in groups.items():
    if len(points) != 4:
      continue
    config, variant, rest, topology, hbm_gib = key
    depth = recipe.load_config(config).model.num_layers
    model = fit_depth_model(points)
    best = model.max_batch(depth, int(hbm_gib * GIB))
    out.append(
      f"| {variant} | {_remat(list(rest), variant)} | {topology} | {best} (extrapolated) "
      f"| {model.bytes(depth, best) / GIB:.2f} GiB at {best}; {depth} layers; from "
      f"{sorted(points)} | {'; '.join(f'`{c}`' for c in commands[key])} |"
    )
  return out


def summary_rows(rows: list[dict[str, Any]], mfu: float) -> list[str]:
  """Per (size, remat, mesh, chip): the largest per-chip batch compiled to fit, the smallest
  compiled not to (exact when they are adjacent), the memory there, XLA's FLOPs per clip and the
  clips/s per chip they imply at ``mfu`` of the chip's peak (an estimate), and the command."""
  groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    if r.get("kind") != "compile" or any(o.startswith(LAYERS) for o in r["overrides"]):
      continue
    mesh = ",".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
    fsdp = r["mesh"]["fsdp"]
    key = (
      r["variant"],
      _remat(r["overrides"], r["variant"]),
      fsdp,
      r["device_kind"],
      r["hbm_gib_per_chip"],
    )
    groups[key].append({**r, "_mesh": mesh})
  out = [
    "| size | remat | fsdp | chip (HBM) | largest per-chip batch that fits "
    "| GiB there (args + temps) "
    f"| smallest compiled not to fit | XLA GFLOP/clip | est. clips/s/chip at {mfu:.0%} MFU "
    f"| slices compiled | command |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  sizes = ("tiny", "95m", "330m", "1b")
  for key in sorted(groups, key=lambda k: (k[3], sizes.index(k[0]) if k[0] in sizes else 9, k[1:])):
    size, remat, fsdp, kind, hbm = key
    group = groups[key]
    fit_rows = [r for r in group if r["fits"]]
    over = [r["per_chip_batch"] for r in group if not r["fits"]]
    best = max(fit_rows, key=lambda r: r["per_chip_batch"]) if fit_rows else None
    smallest_over = min(over) if over else None
    if best is None:
      biggest = f"none of {sorted(r['per_chip_batch'] for r in group)}"
      mem = flops = est = "-"
      command = group[0]["command"]
    else:
      b = best["per_chip_batch"]
      exact = smallest_over == b + 1
      biggest = f"**{b}**" + (" (exact)" if exact else " (lower bound)")
      m = best["bytes_per_chip"]
      mem = f"{m['total'] / GIB:.2f} ({m['arguments'] / GIB:.2f} + {m['temporaries'] / GIB:.2f})"
      per_clip = best["xla_flops_per_chip"] / b
      flops = f"{per_clip / 1e9:.0f}"
      est = f"{mfu * best['peak_flops_per_chip'] / per_clip:.0f}"
      command = best["command"]
    command = re.sub(r" --json=\S+", "", command)  # where the row was saved is not part of it
    slices = ", ".join(sorted({r["topology"] for r in group}))
    out.append(
      f"| {size} | {remat} | {fsdp} | {kind} ({hbm:g} GiB) | {biggest} | {mem} "
      f"| {smallest_over if smallest_over is not None else 'not compiled'} | {flops} | {est} "
      f"| {slices} | `{command}` |"
    )
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("files", nargs="+", help="JSON lines written by mert-compile-check --json")
  p.add_argument("--mfu", type=float, default=0.4, help="the MFU of the clips/s estimate")
  args = p.parse_args()
  rows = [json.loads(line) for f in args.files for line in open(f) if line.strip()]
  print("\n".join(summary_rows(rows, args.mfu)))
  print()
  print("\n".join(compile_rows(rows)))
  print()
  print("| size | remat | slice | max per-chip batch | how | command |")
  print("|---|---|---|---|---|---|")
  print("\n".join(search_rows(rows) + extrapolated_rows(rows)))
  print(f"\nextrapolation: {DEPTH_METHOD}")


if __name__ == "__main__":
  main()
