r"""Probe a model's frozen features in the MARBLE v1 protocol: what did pretraining buy, per layer?

  python -m mert_jax.probe --checkpoint=CKPT_DIR --task=pitch,instrument --output=PROBE_DIR
  python -m mert_jax.probe --checkpoint=WORKDIR [--step=N] --task=pitch --output=PROBE_DIR
  python -m mert_jax.probe --hf=HF_DIR --task=instrument --output=PROBE_DIR
  python -m mert_jax.probe --random-init=VARIANT --task=pitch,instrument --output=PROBE_DIR
  python -m mert_jax.probe --random-init=VARIANT --task=beat --dtype=float16 --output=PROBE_DIR

The tasks' data is rendered here from General MIDI with the SoundFont pretty_midi ships (cached in
--cache-dir): pitch (MIDI pitch) and instrument (NSynth's 11 families) from single notes on
instrument-disjoint splits (mert_jax/probe/note_set.py); key (24 classes, MIREX weighted score)
from music21's Bach chorales, transposed and rendered (mert_jax/probe/key_set.py); beat (frame
level, 75 Hz, F-measure at 70 ms) from seeded grooves (mert_jax/probe/beat_set.py). Every layer's
hidden states, time-averaged over each clip (per frame for beat), and a softmax-weighted sum of
layers 1..N, are probed with a small head (mert_jax/probe/fit.py); beside the model, the same
architecture with random weights and MFCCs are probed as baselines. OUTPUT gets results.json
(per extractor and task: the test metric per layer and for the weighted sum, the layer chosen on
validation, chance, the seed and the set's data hash), results.md (the tables) and layers.png.

--task=custom --data=DIR probes a folder of your own audio and its labels.jsonl
(mert_jax/probe/custom_set.py: {"file", "label", "split"} per line).

Input normalisation (--normalize): MARBLE v1 normalises each clip to zero mean and unit variance
for MERT-v1-95M but not for 330M (its processor_normalize), while the published 95M
preprocessor_config.json says do_normalize: false. "auto" follows the --hf folder's
preprocessor_config.json (off without one, and for checkpoints); "on"/"off" force it.

--dtype=float16 halves the memory of the stored features (frame-level beat features of a large
model are the big ones); the model runs in float32 either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from mert_jax import recipe
from mert_jax.checkpointing import model_checkpoint
from mert_jax.hf.convert import import_hf
from mert_jax.model.mert import create_model
from mert_jax.probe import features, fit, run
from mert_jax.probe import sets as sets_lib
from mert_jax.terminal.cli_help import ArgumentParser, prog


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
    "--task", required=True, metavar="TASKS", help=f"comma-separated: {','.join(sets_lib.TASKS)}"
  )
  p.add_argument("--data", metavar="DIR", help="--task=custom: audio files and labels.jsonl")
  p.add_argument(
    "--clip-seconds", type=float, default=10.0, metavar="S", help="--task=custom: seconds per clip"
  )
  p.add_argument("--output", required=True, metavar="DIR", help="folder for results.json/.md/.png")
  p.add_argument(
    "--set",
    default="small",
    choices=sets_lib.SIZES,
    help="probe set size (default: small)",
  )
  p.add_argument("--cache-dir", default=".probe_cache", metavar="DIR", help="rendered sets")
  p.add_argument(
    "--baselines",
    default="random,mfcc",
    metavar="NAMES",
    help="probed beside the model: random (same architecture, random weights), mfcc, or none "
    "(default: random,mfcc)",
  )
  p.add_argument(
    "--normalize",
    default="auto",
    choices=("auto", "on", "off"),
    help="zero-mean unit-variance clips before the model (auto: the --hf folder's "
    "preprocessor_config.json do_normalize, else off)",
  )
  p.add_argument(
    "--dtype",
    default="float32",
    choices=("float32", "float16"),
    help="stored features (the model computes in float32)",
  )
  p.add_argument("--seed", type=int, default=0, metavar="N", help="heads, batches, random twin")
  p.add_argument("--batch", type=int, default=8, metavar="N", help="clips per feature call")
  p.add_argument("--max-epochs", type=int, default=100, metavar="N", help="per learning rate")
  grid = ",".join(f"{lr:g}" for lr in fit.ProbeConfig().learning_rates)
  p.add_argument(
    "--learning-rates", default=grid, metavar="LRS", help=f"the grid (default, MARBLE v1's: {grid})"
  )
  return p


def _backbones(args: argparse.Namespace):
  """(the model's backbone, its random-init twin: same architecture, seed --seed)."""
  if args.random_init:
    cfg = recipe.model_config_from(recipe.load_config(args.random_init))
    cfg = dataclasses.replace(cfg, dtype="float32")
    model = create_model(cfg, seed=args.seed + 1)
  elif args.checkpoint:
    model = model_checkpoint.load_model(args.checkpoint, step=args.step, dtype="float32")
  else:
    model, _ = import_hf(args.hf, dtype="float32")
  twin = create_model(model.backbone.cfg, seed=args.seed)
  return model.backbone, twin.backbone


BASELINES = ("random", "mfcc")


def _baselines(text: str) -> tuple[str, ...]:
  """--baselines as names ("none": no baseline); an unknown name is a ValueError naming it."""
  names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
  unknown = [n for n in names if n not in BASELINES]
  if unknown:
    raise ValueError(
      f"--baselines={text}: unknown baseline {unknown[0]!r}; choose from random, mfcc, none"
    )
  return names


def _normalize(args: argparse.Namespace) -> bool:
  """--normalize resolved: "auto" reads do_normalize from the --hf folder's
  preprocessor_config.json (False without one)."""
  if args.normalize != "auto":
    return args.normalize == "on"
  path = os.path.join(args.hf, "preprocessor_config.json") if args.hf else None
  if path and os.path.exists(path):
    with open(path) as f:
      return bool(json.load(f).get("do_normalize", False))
  return False


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    tasks = sets_lib.parse_tasks(args.task)
    baselines = _baselines(args.baselines)
    sets = sets_lib.build_sets(
      tasks, args.set, args.cache_dir, args.seed, data=args.data, clip_seconds=args.clip_seconds
    )
    backbone, twin = _backbones(args)
    normalize = _normalize(args)
    print(f"input normalisation: {'on' if normalize else 'off'} (--normalize={args.normalize})")
    extractors = {"model": features.model_layers(backbone, args.batch, args.dtype, normalize)}
    if "random" in baselines:
      extractors["random init"] = features.model_layers(twin, args.batch, args.dtype, normalize)
    if "mfcc" in baselines:
      extractors["MFCC"] = features.mfcc_baseline
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
