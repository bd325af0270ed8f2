r"""Frame-level features of every layer, for downstream probes.

  python -m mert_jax.cli.extract --checkpoint=CKPT_DIR --audio=FILE --output=OUT.npy
  python -m mert_jax.cli.extract --checkpoint=WORKDIR [--step=N] --audio=DIR --output=OUT_DIR \
      [--window-seconds=30]
  python -m mert_jax.cli.extract --hf=HF_DIR --audio=FILE --output=OUT.npy
  python -m mert_jax.cli.extract --checkpoint=CKPT_DIR --audio=DIR --output=OUT_DIR \
      --window-seconds=10 --layers=4,8,12 --pool=mean --dtype=float16

Decodes each file, downmixes and resamples to the model's rate (24 kHz), runs the backbone in
float32 and saves (num_layers + 1, frames, hidden) float32: entry for entry the quantities of
``transformers.HubertModel(whole file, output_hidden_states=True).hidden_states`` (spec §5.5) by
default (``--window-seconds=0``). With ``--audio`` a folder, every audio file under it gets
``OUT_DIR/<relative path>.npy``.

Whole files (the default) run exactly as one input, in memory that grows linearly with the length
(mert_jax/model/whole_file.py): the front end 10 s at a time with the whole file's GroupNorm
statistics, attention blockwise from 55 s. Each file is zero-padded to a length bucket (padding
under 25 % of the file, or under 10 s) that is masked out, so a folder of songs compiles one
program per bucket, not per length. Files longer than --max-minutes (default 30) are refused in
one line naming them (memory grows with the length: docs/whole_songs.md gives the peaks).

Long files: ``--window-seconds=S`` runs windows of about S seconds, placed so that together they
produce exactly the whole file's frames: every window holds n frames of 320 samples plus the
80-sample receptive-field tail and starts on a frame boundary, the last one ending at the file's
last frame (it overlaps the one before; only its new frames are kept). All windows of all files
have one shape, so they run --batch at a time through one compiled program
(mert_jax/model/features.py: batched_layers); nothing is padded. Each window is normalised and
attended on its own (the extractor's GroupNorm, the positional conv and attention see only the
window), so features near window edges differ from a whole-file pass.

--layers picks hidden states (0 is the CNN projection; default all), --pool=mean averages them over
the file's frames ((layers, hidden) per file), --dtype=float16 halves the files.

--checkpoint, --hf, --audio and --output may be in a bucket (gs://BUCKET/PATH, the gcs extra):
audio files are downloaded one at a time, each .npy is uploaded whole once written.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import time

import jax
import numpy as np

from data_pipeline import storage
from data_pipeline.atomic import atomic_open
from data_pipeline.audio import load_audio
from data_pipeline.audio_format import AUDIO_EXTENSIONS
from data_pipeline.cli_help import ArgumentParser, prog
from data_pipeline.progress import counted_line
from mert_jax.hf.convert import import_hf
from mert_jax.model.features import POOLS, batched_layers, windowed_hidden_states
from mert_jax.model.mert import Backbone
from mert_jax.model.whole_file import whole_file_extractor
from mert_jax.train import checkpoints


def save_npy(path: str, array: np.ndarray) -> None:
  """np.save through a temporary file, so a crash never leaves a truncated .npy."""
  with atomic_open(path, "wb") as f:
    np.save(f, array)


def _load(path: str, sample_rate: int) -> np.ndarray:
  """``load_audio`` of a local or remote file (its errors name ``path``, not a download)."""
  with storage.local_copy(path) as local:
    try:
      return load_audio(local, sample_rate)
    except (ValueError, FileNotFoundError) as e:
      raise type(e)(str(e).replace(local, path)) from e


def _extract_one(
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
  save_npy(out, feats)
  return feats.shape


def _layers(args: argparse.Namespace, backbone: Backbone) -> tuple[int, ...]:
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


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  parser = ArgumentParser(prog=prog("mert_jax.cli.extract"), description=__doc__)
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument(
    "--checkpoint",
    metavar="DIR",
    help="mert_jax model checkpoint directory or training workdir",
  )
  src.add_argument("--hf", metavar="DIR", help="Hugging Face Hubert/MERT folder")
  parser.add_argument(
    "--step", type=int, default=None, metavar="N", help="training workdir step (default: latest)"
  )
  parser.add_argument(
    "--audio",
    required=True,
    metavar="FILE_OR_DIR",
    help="audio file (wav, flac, ogg, opus, mp3, ...) or folder",
  )
  parser.add_argument(
    "--output",
    required=True,
    metavar="PATH",
    help="output .npy path (a folder when --audio is a folder)",
  )
  parser.add_argument(
    "--window-seconds",
    type=float,
    default=0.0,
    metavar="S",
    help="process in windows of ~S s (0: the whole file at once)",
  )
  parser.add_argument(
    "--max-minutes",
    type=float,
    default=30.0,
    metavar="M",
    help="longest file extracted whole; longer ones are refused (default: 30)",
  )
  parser.add_argument(
    "--layers", default="", metavar="I,J,...", help="hidden states to keep (default: all)"
  )
  parser.add_argument(
    "--pool", default="none", choices=POOLS, help="mean: average over frames (default: none)"
  )
  parser.add_argument(
    "--dtype", default="float32", choices=("float32", "float16"), help="of the saved features"
  )
  parser.add_argument(
    "--batch", type=int, default=8, metavar="N", help="windows per compiled call (default: 8)"
  )
  return parser


def check_inputs(args: argparse.Namespace) -> None:
  """Refuses a missing --audio (or bucket), an output bucket that cannot be written, or a negative
  window before a model is loaded (a missing model folder is refused by its loader, which reads
  its config first)."""
  storage.check_bucket(args.audio, "--audio")
  if storage.is_remote(args.output):  # the folder the features go into
    folder = args.output if storage.isdir(args.audio) else posixpath.dirname(args.output)
    storage.check_writable_folder(folder, "--output")
  if not storage.exists(args.audio):
    raise FileNotFoundError(f"{args.audio}: no such audio file or folder (--audio)")
  if args.window_seconds < 0:
    raise ValueError(f"--window-seconds={args.window_seconds}: must be >= 0")
  if args.batch < 1:
    raise ValueError(f"--batch={args.batch}: must be >= 1")
  if not args.max_minutes > 0:
    raise ValueError(f"--max-minutes={args.max_minutes:g}: must be > 0")


def main(argv: list[str] | None = None) -> int:
  """Runs the command: 0 when every file was written, 3 when some files of a folder were skipped,
  1 (one ``error: ...`` line on stderr) when the model or a single input cannot be used."""
  args = build_parser().parse_args(argv)
  try:
    check_inputs(args)
    return _run(args)
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
  """Loads the model and extracts the file or folder; returns the exit status."""
  if args.checkpoint:
    model = checkpoints.load_model(args.checkpoint, step=args.step, dtype="float32")
  else:
    model, _ = import_hf(args.hf, dtype="float32")
  backbone = model.backbone
  layers = _layers(args, backbone)
  windows = whole = None
  if args.window_seconds > 0:
    windows = batched_layers(
      backbone, layers=layers, pool="none", dtype="float32", batch_size=args.batch
    )
  else:
    whole = whole_file_extractor(backbone, layers=layers)
  layout = "(layers, hidden)" if args.pool == "mean" else "(layers, frames, hidden)"
  if not storage.isdir(args.audio):
    shape = _extract_one(backbone, args.audio, args.output, args, windows, whole)
    print(f"wrote {args.output}: {shape} {layout} {args.dtype}")
    return 0
  rels = [r for r in storage.files_under(args.audio) if r.lower().endswith(AUDIO_EXTENSIONS)]
  failures, start = 0, time.monotonic()
  for i, rel in enumerate(rels, 1):
    path, out = os.path.join(args.audio, rel), os.path.join(args.output, rel + ".npy")
    try:
      shape = _extract_one(backbone, path, out, args, windows, whole)
      line = counted_line(i, len(rels), f"wrote {out}: {shape}", time.monotonic() - start)
      print(line, flush=True)
    except (ValueError, FileNotFoundError) as e:
      failures += 1
      print(f"[{i}/{len(rels)}] skipped {path}: {e}", file=sys.stderr, flush=True)
  if failures:
    print(f"{failures} files could not be processed (listed above)", file=sys.stderr)
  return 3 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
