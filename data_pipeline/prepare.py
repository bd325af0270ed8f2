r"""Prepare a pretraining dataset: a folder of music -> 24 kHz mono int16 + teacher tokens ->
sharded TFRecord files + manifest.json.

  python -m data_pipeline.prepare --input=DIR --output=DIR --teacher=kmeans|encodec \
      [--encodec=PATH_OR_HUB_ID] [--workers=N] [--seed=S] [--overwrite]

Stages (each parallel over files or shards, each restartable: its outputs are written to a
temporary name and renamed when complete (mert_jax/files/atomic.py), and a re-run reuses what is
finished after verifying it: decoded and token caches by shape, shards by reading them back against
the plan and the earlier manifest's size and sha256; what fails is rebuilt, in one line each):

1. scan     every file under --input; audio extensions are inputs, other files are listed in
            ignored.jsonl;
2. decode   decode, downmix, resample to 24 kHz, int16 (cached in OUTPUT/.work/); bad files go to
            skipped.jsonl with the reason (truncated, empty, undecodable, unreadable, NaN, silent,
            too short);
3. teacher  k-means: fitted on the training files; encodec: the model you name (saved in
            OUTPUT/teacher/, and reused by a resumed run);
4. tokens   teacher tokens for each whole file (cached);
5. shards   files are cut into segments of --segment-seconds on hop boundaries, segments are
            shuffled (seeded) and written as `{split}-NNNNN-of-NNNNN.tfrecord`
            (data_pipeline/records.py has the record format); a small seeded fraction of files
            forms the `valid` split;
6. manifest manifest.json (data_pipeline/manifest.py): shards, record counts, hours, sample rate,
            teacher config, codebook sizes, label rate and a content hash (sha256 over the shards
            and the teacher config).

--input and --output may be in a bucket (gs://BUCKET/PATH, the gcs extra): input files are
downloaded one at a time to be decoded, and the caches stay local (--cache-dir; by default a
folder named after the output under the system's temporary folder), while the teacher, shards,
reports and manifest are uploaded, each in one piece once complete (the teacher's files before its
teacher.json). A bucket that does not exist or refuses writes is refused before anything is read.

A re-run on an output prepared (or partly prepared) with other content options (seed, teacher,
k-means settings, segment or shard lengths, valid fraction, ...) or other input files is refused in
one line naming the differences, before anything is written: use a new --output, or --overwrite to
delete the earlier run's files and prepare again.

Exit status: 0 when every input file was used, 3 when it finished but skipped files, 1 on failure.
The result is deterministic given the input files, the options and --seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from data_pipeline import beam_options, prepare_local
from data_pipeline.prepare_jobs import ENGINES, EXIT_SKIPPED, TEACHERS, PrepareConfig
from data_pipeline.teachers import encodec
from mert_jax.terminal.cli_help import ArgumentParser, field_comments, prog

_METAVARS = {
  "input": "DIR",
  "output": "DIR",
  "encodec": "PATH_OR_HUB_ID",
  "cache_dir": "DIR",
  "device": "DEVICE",
}


def build_parser() -> argparse.ArgumentParser:
  """The command line: one option per PrepareConfig field, its help the field's comment."""
  p = ArgumentParser(
    prog=prog("data_pipeline.prepare"),
    description=__doc__.split("\n\n")[0],
    epilog=__doc__.split("\n\n", 1)[1],
  )
  comments = field_comments(PrepareConfig)
  for field in dataclasses.fields(PrepareConfig):
    flag = "--" + field.name.replace("_", "-")
    kw: dict[str, Any] = {"help": comments[field.name], "dest": field.name}
    if field.default is dataclasses.MISSING:
      kw.update(required=True)
    elif isinstance(field.default, bool):
      kw.update(action="store_true", default=field.default)
    else:
      default = field.default
      kw.update(type=type(default) if default is not None else str, default=default)
    if field.name == "teacher":
      kw.update(choices=TEACHERS)
    elif field.name == "engine":
      kw.update(choices=ENGINES)
    elif field.name == "encodec_mode":
      kw.update(choices=encodec.ENCODEC_MODES)
    elif field.name in _METAVARS or "type" in kw:
      kw.update(metavar=_METAVARS.get(field.name, "X" if kw.get("type") is float else "N"))
    p.add_argument(flag, **kw)
  return p


def parse_args(argv: list[str] | None) -> tuple[PrepareConfig, list[str]]:
  """(the options, the Beam pipeline options: the arguments prepare does not know, which only
  --engine=beam takes)."""
  parser = build_parser()
  known, rest = parser.parse_known_args(argv)
  cfg = PrepareConfig(**vars(known))
  return cfg, beam_options.pass_through(parser, rest, cfg.engine, "prepare")


def main(argv: list[str] | None = None) -> int:
  cfg, beam_args = parse_args(argv)
  try:
    if cfg.engine == "beam":
      # Imported here: Beam is the optional `beam` extra.
      from data_pipeline import beam_prepare  # pylint: disable=g-import-not-at-top

      manifest = beam_prepare.prepare(cfg, beam_args)
    else:
      manifest = prepare_local.prepare(cfg)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return EXIT_SKIPPED if manifest["num_skipped_files"] else 0


if __name__ == "__main__":
  sys.exit(main())
