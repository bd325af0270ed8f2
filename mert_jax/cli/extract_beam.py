r"""``extract --engine=beam``: a folder's features as an Apache Beam pipeline, for corpora of
thousands of hours. The same output, messages and exit codes as the local engine
(mert_jax/cli/extract.py): one .npy per audio file, OUTPUT/skipped.jsonl, OUTPUT/extract.json, and
a re-run keeps what an earlier run wrote.

  python -m mert_jax.cli.extract --engine=beam --checkpoint=gs://B/ckpt --audio=gs://B/music \
      --output=gs://B/features [--runner=DataflowRunner --project=P --region=R ...]

The launcher lists the files still to extract (extract_files.plan_folder); one pipeline spreads them
over the workers, each of which loads the model once (``DoFn.setup``) and compiles its programs
once (one per length bucket, or one for windows), then decodes, extracts and writes each file
(atomically: a worker that dies mid-file leaves no .npy, so the file is extracted again by the
next run). A row per file (its shape, or why it was skipped) comes back to the launcher through
OUTPUT/.beam/, deleted at the end. The model and the audio must be readable by the workers (a
bucket, or local paths on the DirectRunner).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any, Iterator

import fsspec

from data_pipeline import beam_options
from mert_jax.cli import extract_files
from mert_jax.files import storage
from mert_jax.files.atomic import atomic_write_text
from mert_jax.terminal.progress import log_level

with log_level(logging.ERROR):  # Beam's import warns that optional BigQuery clients are missing
  import apache_beam as beam

BEAM_WORK = ".beam"  # OUTPUT/.beam: the rows the workers hand to the launcher
ROWS = "rows.json"


class ExtractFile(beam.DoFn):
  """A file's path relative to --audio -> its row (extract_files.extract_file); the model and its
  extractors are built once per worker."""

  def __init__(self, args: dict[str, Any]):
    self.args = args

  def setup(self) -> None:
    self.ns = argparse.Namespace(**self.args)
    self.backbone = extract_files.load_backbone(self.ns)
    self.windows, self.whole = extract_files.extractors(self.ns, self.backbone)

  def process(self, rel: str) -> Iterator[dict[str, Any]]:
    yield extract_files.extract_file(self.backbone, self.ns, self.windows, self.whole, rel)


def run(args: argparse.Namespace, rels: list[str], beam_args: list[str]) -> list[dict[str, Any]]:
  """Extracts ``rels`` (relative to --audio) on Beam; their rows in ``rels``' order."""
  if not rels:
    return []
  work = os.path.join(args.output, BEAM_WORK)
  storage.makedirs(work)
  rows_path = os.path.join(work, ROWS)
  options = beam_options.pipeline_options(args.workers, beam_args)
  with beam.Pipeline(options=options) as p:
    _ = (
      p
      | "files" >> beam.Create(rels)
      | "spread" >> beam.Reshuffle()
      | "extract" >> beam.ParDo(ExtractFile(vars(args)))
      | "all rows" >> beam.combiners.ToList()
      | "write rows" >> beam.Map(lambda rows: atomic_write_text(rows_path, json.dumps(rows)))
    )
  with fsspec.open(rows_path, "r") as f:
    by_path = {row["path"]: row for row in json.load(f)}
  storage.remove(work)
  return [by_path[rel] for rel in rels]
