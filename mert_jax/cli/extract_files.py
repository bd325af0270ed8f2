"""The per-file work of ``extract``, shared by its engines (``extract.py`` is the command,
``extract_beam.py`` the Beam engine): the model and its extractors made once, one file's features
written whole or its reason for skipping, and a folder's plan (what an earlier run kept) and closing
report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import fsspec
import jax
import numpy as np

from data_pipeline.audio import load_audio
from data_pipeline.audio_format import AUDIO_EXTENSIONS
from mert_jax.checkpointing import model_checkpoint
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_save_npy, atomic_write_jsonl, atomic_write_text
from mert_jax.hf.convert import import_hf
from mert_jax.model.features import batched_layers, windowed_hidden_states
from mert_jax.model.mert import Backbone
from mert_jax.model.whole_file import whole_file_extractor

SPEC = "extract.json"  # in a folder's OUTPUT: the options its features were made with


SKIPPED = "skipped.jsonl"  # in a folder's OUTPUT: the files the last run could not use, and why


SPEC_OPTIONS = ("layers", "pool", "dtype", "window_seconds")  # the options that change the output


def _load(path: str, sample_rate: int) -> np.ndarray:
  """``load_audio`` of a local or remote file (its errors name ``path``, not a download)."""
  with storage.local_copy(path) as local:
    try:
      return load_audio(local, sample_rate)
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(str(e).replace(local, path)) from e


def extract_one(
  backbone: Backbone,
  path: str,
  out: str,
  args: argparse.Namespace,
  windows,
  whole,
) -> tuple[int, ...]:
  """Extracts one file to ``out`` with ``windows`` (the batched extractor of --window-seconds) or
  else ``whole`` (the whole-file extractor); both are made once per run, so their compiled
  programs serve every file."""
  audio = _load(path, backbone.cfg.sample_rate)
  minutes = len(audio) / backbone.cfg.sample_rate / 60
  if windows is None and minutes > args.max_minutes:
    raise ValueError(
      f"{path}: {minutes:.2f} min of audio is more than --max-minutes={args.max_minutes:g}; raise "
      f"it (memory grows linearly with the length) or extract in windows (--window-seconds=30)"
    )
  try:
    with jax.default_matmul_precision("highest"):
      if windows is not None:
        feats = windowed_hidden_states(backbone, audio, args.window_seconds, windows)
      else:
        feats = whole(audio)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from e
  if args.pool == "mean":
    feats = feats.mean(axis=1)
  feats = feats.astype(args.dtype)
  storage.make_parent(out)
  atomic_save_npy(out, feats)
  return feats.shape


def layers_of(args: argparse.Namespace, backbone: Backbone) -> tuple[int, ...]:
  """--layers as indices (all when unset), each checked against the model's depth."""
  depth = backbone.cfg.num_layers + 1
  if not args.layers:
    return tuple(range(depth))
  try:
    chosen = tuple(int(x) for x in args.layers.split(","))
  except ValueError:
    chosen = ()
  if not chosen or any(not 0 <= i < depth for i in chosen):
    raise ValueError(
      f"--layers={args.layers}: comma-separated indices among 0..{depth - 1} "
      "(0: the CNN projection, i: transformer layer i)"
    )
  return chosen


def load_backbone(args: argparse.Namespace) -> Backbone:
  """The float32 backbone of --checkpoint (at --step) or --hf."""
  if args.checkpoint:
    return model_checkpoint.load_model(args.checkpoint, step=args.step, dtype="float32").backbone
  return import_hf(args.hf, dtype="float32")[0].backbone


def extractors(args: argparse.Namespace, backbone: Backbone) -> tuple:
  """(windows, whole): the batched extractor of --window-seconds, else the whole-file one (the
  other None); made once, so their compiled programs serve every file."""
  layers = layers_of(args, backbone)
  if args.window_seconds > 0:
    batched = batched_layers(
      backbone, layers=layers, pool="none", dtype="float32", batch_size=args.batch
    )
    return batched, None
  return None, whole_file_extractor(backbone, layers=layers)


def spec_of(args: argparse.Namespace) -> dict:
  """What a folder's features depend on: the model and the options that change them."""
  model = {"checkpoint": args.checkpoint, "step": args.step} if args.checkpoint else {"hf": args.hf}
  return {"model": model, **{k: getattr(args, k) for k in SPEC_OPTIONS}}


def output_path(args: argparse.Namespace, rel: str) -> str:
  """The .npy of input file ``rel`` (relative to --audio)."""
  return os.path.join(args.output, rel + ".npy")


def plan_folder(args: argparse.Namespace) -> tuple[list[str], list[str]]:
  """(every audio file under --audio, those still to extract): the files whose .npy an earlier
  run with the same options wrote are kept. Writes OUTPUT/extract.json; refuses (one line) an
  OUTPUT holding features made with other options."""
  spec = spec_of(args)
  spec_path = os.path.join(args.output, SPEC)
  if storage.exists(spec_path):
    with fsspec.open(spec_path, "r") as f:
      earlier = json.load(f)
    if earlier != spec:
      differ = sorted(k for k in {*spec, *earlier} if spec.get(k) != earlier.get(k))
      raise ValueError(
        f"--output={args.output} holds features extracted with another {'/'.join(differ)} "
        f"({SPEC}); extract into another folder, or delete it to start over"
      )
  rels = [r for r in storage.files_under(args.audio) if r.lower().endswith(AUDIO_EXTENSIONS)]
  storage.makedirs(args.output)
  atomic_write_text(spec_path, json.dumps(spec, indent=1))
  written = set(storage.files_under(args.output))  # one listing, not one request per file
  return rels, [r for r in rels if f"{r}.npy" not in written]


def extract_file(backbone: Backbone, args: argparse.Namespace, windows, whole, rel: str) -> dict:
  """One file of a folder -> its row: {"path", "shape"} when written, {"path", "reason"} when
  skipped (the reason names the file)."""
  path = os.path.join(args.audio, rel)
  try:
    shape = extract_one(backbone, path, output_path(args, rel), args, windows, whole)
    return {"path": rel, "shape": list(shape)}
  except (ValueError, FileNotFoundError) as e:
    reason = str(e)
    return {"path": rel, "reason": reason if path in reason else f"{path}: {reason}"}


def finish_folder(args: argparse.Namespace, rows: list[dict], kept: int) -> int:
  """Writes OUTPUT/skipped.jsonl and the closing lines; the exit status (3: files skipped)."""
  skipped = [r for r in rows if "reason" in r]
  atomic_write_jsonl(os.path.join(args.output, SKIPPED), skipped)
  print(
    f"extract: {len(rows) - len(skipped)} files written, {kept} kept from an earlier run, "
    f"{len(skipped)} skipped ({os.path.join(args.output, SKIPPED)})",
    flush=True,
  )
  if skipped:
    print(f"{len(skipped)} files could not be processed (listed above)", file=sys.stderr)
  return 3 if skipped else 0
