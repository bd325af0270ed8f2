r"""Probe a model's frozen features in the MARBLE v1 protocol: what did pretraining buy, per layer?

  python -m mert_jax.probe --checkpoint=CKPT_DIR --task=pitch,instrument --output=PROBE_DIR
  python -m mert_jax.probe --checkpoint=WORKDIR [--step=N] --task=pitch --output=PROBE_DIR
  python -m mert_jax.probe --hf=HF_DIR --task=instrument --output=PROBE_DIR
  python -m mert_jax.probe --random-init=VARIANT --task=pitch,instrument --output=PROBE_DIR

The tasks' data is rendered here from General MIDI with the SoundFont pretty_midi ships (cached in
--cache-dir): pitch (MIDI pitch) and instrument (NSynth's 11 families) from single notes on
instrument-disjoint splits (mert_jax/probe/note_set.py); key (24 classes, MIREX weighted score)
from music21's Bach chorales, transposed and rendered (mert_jax/probe/key_set.py). Every layer's
hidden states, time-averaged over each clip, and a softmax-weighted sum of layers 1..N, are probed
with a small head (mert_jax/probe/fit.py); beside the model, the same architecture with random
weights and time-averaged MFCCs are probed as baselines. OUTPUT gets results.json (per extractor
and task: the test metric per layer and for the weighted sum, the layer chosen on validation,
chance, the seed and the set's data hash), results.md (the tables) and layers.png.

--task=custom --data=DIR probes a folder of your own audio and its labels.jsonl
(mert_jax/probe/custom_set.py: {"file", "label", "split"} per line).

Not built yet (issue 15): the beat task, the in-training probe, and the sweep's probe
scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from data_pipeline.cli_help import ArgumentParser, prog
from mert_jax import recipe
from mert_jax.hf.convert import import_hf
from mert_jax.model.mert import create_model
from mert_jax.probe import custom_set, features, fit, key_set, note_set, run
from mert_jax.train import checkpoints


def build_parser() -> argparse.ArgumentParser:
  p = ArgumentParser(
    prog=prog("mert_jax.probe"),
    description=__doc__.split("\n\n")[0],
    epilog=__doc__.split("\n\n", 1)[1],
  )
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", metavar="DIR", help="model checkpoint or training workdir")
  src.add_argument("--hf", metavar="DIR", help="Hugging Face Hubert/MERT folder")
  src.add_argument("--random-init", metavar="VARIANT", help="a recipe variant with random weights")
  p.add_argument(
    "--step", type=int, default=None, metavar="N", help="workdir step (default: latest)"
  )
  p.add_argument(
    "--task", required=True, metavar="TASKS", help=f"comma-separated: {','.join(run.TASKS)}"
  )
  p.add_argument("--data", metavar="DIR", help="--task=custom: audio files and labels.jsonl")
  p.add_argument(
    "--clip-seconds", type=float, default=10.0, metavar="S", help="--task=custom: seconds per clip"
  )
  p.add_argument("--output", required=True, metavar="DIR", help="folder for results.json/.md/.png")
  p.add_argument(
    "--set",
    default="small",
    choices=tuple(note_set.PRESETS),
    help="probe set size (default: small)",
  )
  p.add_argument("--cache-dir", default=".probe_cache", metavar="DIR", help="rendered sets")
  p.add_argument("--seed", type=int, default=0, metavar="N", help="heads, batches, random twin")
  p.add_argument("--batch", type=int, default=8, metavar="N", help="clips per feature call")
  p.add_argument("--max-epochs", type=int, default=100, metavar="N", help="per learning rate")
  grid = ",".join(f"{lr:g}" for lr in fit.ProbeConfig().learning_rates)
  p.add_argument(
    "--learning-rates", default=grid, metavar="LRS", help=f"the grid (default, MARBLE v1's: {grid})"
  )
  return p


def _tasks(text: str) -> tuple[str, ...]:
  tasks = tuple(t.strip() for t in text.split(",") if t.strip())
  unknown = [t for t in tasks if t not in run.TASKS]
  if unknown or not tasks:
    bad = unknown[0] if unknown else "(none)"
    raise ValueError(f"--task={text}: unknown task {bad!r}; choose from {', '.join(run.TASKS)}")
  return tasks


def _sets(tasks: tuple[str, ...], args: argparse.Namespace) -> dict[str, object]:
  """task -> its probe set (rendered, or read from --cache-dir), one line about each set."""
  sets: dict[str, object] = {}
  for task in tasks:
    t0 = time.perf_counter()
    if task in ("pitch", "instrument"):
      made = next((s for t, s in sets.items() if t in ("pitch", "instrument")), None)
      config = dataclasses.replace(note_set.PRESETS[args.set], seed=args.seed)
      sets[task] = made or note_set.build(config, args.cache_dir)
    elif task == "key":
      config = dataclasses.replace(key_set.PRESETS[args.set], seed=args.seed)
      sets[task] = key_set.build(config, args.cache_dir)
    else:
      if not args.data:
        raise ValueError("--task=custom needs --data=DIR (audio and labels.jsonl)")
      sets[task] = custom_set.build(args.data, args.clip_seconds)
    info = sets[task].info
    size = info.get("num_notes", info.get("num_clips"))
    took = time.perf_counter() - t0
    print(f"{task}: {size} clips {info['per_split']}, {info['hours']:.2f} h ({took:.1f} s)")
  return sets


def _backbones(args: argparse.Namespace):
  """(the model's backbone, its random-init twin: same architecture, seed --seed)."""
  if args.random_init:
    cfg = recipe.model_config_from(recipe.load_config(args.random_init))
    cfg = dataclasses.replace(cfg, dtype="float32")
    model = create_model(cfg, seed=args.seed + 1)
  elif args.checkpoint:
    model = checkpoints.load_model(args.checkpoint, step=args.step, dtype="float32")
  else:
    model, _ = import_hf(args.hf, dtype="float32")
  twin = create_model(model.backbone.cfg, seed=args.seed)
  return model.backbone, twin.backbone


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    tasks = _tasks(args.task)
    sets = _sets(tasks, args)
    backbone, twin = _backbones(args)
    extractors = {
      "model": features.pooled_layers(backbone, args.batch),
      "random init": features.pooled_layers(twin, args.batch),
      "MFCC mean+std": features.mfcc_baseline,
    }
    grid = tuple(float(x) for x in args.learning_rates.split(","))
    cfg = fit.ProbeConfig(seed=args.seed, max_epochs=args.max_epochs, learning_rates=grid)
    report = run.probe(extractors, sets, cfg)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for path in run.write(report, args.output):
    print(f"wrote {path}")
  print(run.markdown(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
