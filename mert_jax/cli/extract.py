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

A folder is a corpus: OUTPUT/extract.json records the options the features were made with (model,
step, layers, pool, dtype, windows), OUTPUT/skipped.jsonl the files the last run could not use and
why, and a re-run keeps every .npy an earlier run wrote (each is written whole or not at all) and
extracts the rest; a re-run with other options into the same OUTPUT is refused. ``--engine=beam``
(the ``beam`` extra) runs the files of a folder as an Apache Beam pipeline
(mert_jax/cli/extract_beam.py: Dataflow, Flink, Spark, or the DirectRunner's --workers processes)
with the same output, messages and exit codes; arguments extract does not know are Beam's
pipeline options and pass through (docs/beam.md).

--checkpoint, --hf, --audio and --output may be in a bucket (gs://BUCKET/PATH, the gcs extra):
audio files are downloaded one at a time, each .npy is uploaded whole once written.
"""

from __future__ import annotations

import argparse
import posixpath
import sys
import time

from data_pipeline import beam_options
from mert_jax.checkpointing import workdir_steps
from mert_jax.cli.extract_files import (
  extract_file,
  extract_one,
  extractors,
  finish_folder,
  layers_of,
  load_backbone,
  output_path,
  plan_folder,
)
from mert_jax.files import storage
from mert_jax.model.features import POOLS
from mert_jax.terminal.cli_help import ArgumentParser, prog
from mert_jax.terminal.progress import counted_line

ENGINES = ("local", "beam")  # the values of --engine


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
  parser.add_argument(
    "--engine",
    default="local",
    choices=ENGINES,
    help="a folder's files in this process (local) or as an Apache Beam pipeline (beam)",
  )
  parser.add_argument(
    "--workers",
    type=int,
    default=None,
    metavar="N",
    help="--engine=beam on the DirectRunner: worker processes (default: one per CPU)",
  )
  return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
  """(extract's options, Beam's pipeline options: the arguments extract does not know, which only
  --engine=beam takes)."""
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  return args, beam_options.pass_through(parser, rest, args.engine, "extract")


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
  args, beam_args = parse_args(argv)
  try:
    check_inputs(args)
    if args.engine == "beam" and not storage.isdir(args.audio):
      raise ValueError(f"--engine=beam extracts a folder; --audio={args.audio} is a file")
    return _run(args, beam_args)
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
  """Loads the model and extracts the file or folder; returns the exit status."""
  if not storage.isdir(args.audio):
    backbone = load_backbone(args)
    windows, whole = extractors(args, backbone)
    shape = extract_one(backbone, args.audio, args.output, args, windows, whole)
    layout = "(layers, hidden)" if args.pool == "mean" else "(layers, frames, hidden)"
    print(f"wrote {args.output}: {shape} {layout} {args.dtype}")
    return 0
  if args.checkpoint and args.step is None:
    # A training workdir's latest step, fixed now: the workers, extract.json and a re-run while
    # training goes on all name this one (None for a model checkpoint).
    args.step = workdir_steps.latest_step(args.checkpoint)
  backbone = load_backbone(args)  # a model or --layers that cannot be used: one line, first
  layers_of(args, backbone)
  rels, todo = plan_folder(args)
  kept = len(rels) - len(todo)
  print(
    f"extract: {len(rels)} audio files under {args.audio}: {kept} kept from an earlier run, "
    f"{len(todo)} to extract ({args.engine})",
    flush=True,
  )
  if args.engine == "beam":
    from mert_jax.cli import extract_beam  # pylint: disable=g-import-not-at-top

    del backbone  # each worker loads its own
    rows = extract_beam.run(args, todo, beam_args)
    for row in rows:
      if "reason" in row:
        print(f"skipped {row['reason']}", file=sys.stderr, flush=True)
    return finish_folder(args, rows, kept)
  windows, whole = extractors(args, backbone)
  rows, start = [], time.monotonic()
  for i, rel in enumerate(todo, 1):
    rows.append(row := extract_file(backbone, args, windows, whole, rel))
    if "reason" in row:
      print(f"[{i}/{len(todo)}] skipped {row['reason']}", file=sys.stderr, flush=True)
    else:
      done = f"wrote {output_path(args, rel)}: {tuple(row['shape'])}"
      print(counted_line(i, len(todo), done, time.monotonic() - start), flush=True)
  return finish_folder(args, rows, kept)


if __name__ == "__main__":
  sys.exit(main())
