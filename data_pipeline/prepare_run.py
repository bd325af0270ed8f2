"""What a preparation run records and checks, for both engines: the options checked before any
file is read, the earlier run found in the output (refused when its options or inputs differ,
deleted with --overwrite), the saved teacher, and the manifest of a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
from typing import Any

import fsspec

from data_pipeline import manifest as manifest_lib
from data_pipeline.prepare_jobs import (
  _SHARD_FILE,
  BEAM_WORK,
  IGNORED,
  PLAN,
  SKIPPED,
  TEACHER_DIR,
  WORK,
  PrepareConfig,
  teacher_request,
)
from data_pipeline.teachers import base, encodec, factory
from mert_jax.files import storage
from mert_jax.files.atomic import (
  TMP_SUFFIX,
)

# Options that do not change what is written (a re-run may change them freely).
NOT_CONTENT_OPTIONS = (
  "input",
  "output",
  "workers",
  "keep_cache",
  "cache_dir",
  "overwrite",
  "engine",
)
MANIFEST_OMITS = ("input", "output", "workers", "cache_dir", "overwrite", "engine")
OVERWRITE_HINT = "use a new --output, or --overwrite to delete it and prepare again"


def content_options(cfg: PrepareConfig) -> dict[str, Any]:
  """The options that decide the output's content (a re-run must repeat them)."""
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_CONTENT_OPTIONS}


def manifest_options(cfg: PrepareConfig) -> dict[str, Any]:
  """The options the manifest records: the content options and --keep-cache."""
  return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in MANIFEST_OMITS}


def option_changes(recorded: dict[str, Any], cfg: PrepareConfig) -> list[str]:
  """``--flag RECORDED -> NOW`` for each content option of ``cfg`` that differs from
  ``recorded`` (an earlier run's options)."""
  changes = []
  for key, now in content_options(cfg).items():
    then = recorded.get(key, "(not recorded)")
    if then != now:
      changes.append(f"--{key.replace('_', '-')} {then} -> {now}")
  return changes


def previous_run(out: str, work: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
  """(manifest of a finished run, plan record of an unfinished or cached one) found in ``out`` and
  its cache folder ``work``."""
  found: list[dict[str, Any] | None] = []
  for path in (manifest_lib.manifest_path(out), os.path.join(work, PLAN)):
    try:
      with fsspec.open(path, "r") as f:
        found.append(json.load(f))
    except FileNotFoundError:
      found.append(None)
    except ValueError as e:
      raise ValueError(f"{path} is unreadable ({e}); {OVERWRITE_HINT}") from e
  return found[0], found[1]


def refuse_other_options(out: str, cfg: PrepareConfig, manifest: dict | None, plan: dict | None):
  """Refuse (in one line) to continue an earlier run in ``out`` made with other content options."""
  for what, record in (("a dataset", manifest), ("an unfinished run", plan)):
    if record is None or "options" not in record:  # plan records before options were recorded
      continue
    changes = option_changes(record["options"], cfg)
    if changes:
      raise ValueError(
        f"{out} holds {what} prepared with other options ({'; '.join(changes)}); {OVERWRITE_HINT}"
      )


def _plan_difference(split_plans: dict[str, list], plan_hash: str, manifest: dict) -> str | None:
  """How the planned shards differ from those of a finished run's ``manifest`` (its plan hash, or
  for manifests without one, each shard's record and sample counts), or None."""
  if "plan_hash" in manifest:
    return None if manifest["plan_hash"] == plan_hash else "the segments planned differ"
  counts = {
    split: [(len(shard), sum(seg[3] for seg in shard)) for shard in shards]
    for split, shards in split_plans.items()
  }
  recorded = {
    split: [(s["num_records"], s["num_samples"]) for s in info["shards"]]
    for split, info in manifest["splits"].items()
  }
  return None if counts == recorded else "the shards' record and sample counts differ"


def other_inputs(
  out: str,
  split_plans: dict[str, list],
  plan_hash: str,
  manifest: dict[str, Any] | None,
  plan: dict[str, Any] | None,
) -> str | None:
  """The one-line refusal of a run whose planned segments differ from those of the earlier run
  in ``out`` (other input files under the same options), or None."""
  if manifest is not None and (differs := _plan_difference(split_plans, plan_hash, manifest)):
    return f"{out} holds a dataset prepared from other input files ({differs}); {OVERWRITE_HINT}"
  if plan is not None and plan["plan"] != plan_hash:
    return f"{out} holds an unfinished run over other input files or options; {OVERWRITE_HINT}"
  return None


def clear_output(out: str, work: str) -> list[str]:
  """Delete what a run of prepare wrote in ``out`` (the manifest first, so that the folder stops
  looking finished) and its cache folder ``work``; other files are kept. Returns the names
  removed."""
  removed = []
  names = sorted(storage.list_names(out), key=lambda n: n != manifest_lib.MANIFEST)
  for name in names:
    path = os.path.join(out, name)
    if name in (WORK, BEAM_WORK, TEACHER_DIR, TEACHER_DIR + TMP_SUFFIX) and storage.isdir(path):
      storage.remove(path)
    elif (
      name in (manifest_lib.MANIFEST, SKIPPED, IGNORED)
      or name.removesuffix(TMP_SUFFIX) in (manifest_lib.MANIFEST, SKIPPED, IGNORED)
      or _SHARD_FILE.match(name)
    ):
      storage.remove(path)
    else:
      continue
    removed.append(name)
  if os.path.isdir(work) and WORK not in removed:
    shutil.rmtree(work)
    removed.append(work)
  return removed


def warn(msg: str) -> None:
  """A line about reused work that was bad and redone: printed even without progress output."""
  print(msg, file=sys.stderr, flush=True)


def open_run(cfg: PrepareConfig, work: str) -> tuple[dict | None, dict | None]:
  """The checks before any file is read (input, options, output), then the earlier run in the
  output: (its manifest, its plan record), after refusing one made with other options; with
  --overwrite, its files are deleted first and there is none. ``work``: the run's work folder."""
  storage.check_bucket(cfg.input, "--input")
  if not storage.isdir(cfg.input):
    raise ValueError(f"--input={cfg.input} is not a directory")
  check_options(cfg)  # bad teacher or output options fail before hours of decoding
  if cfg.segment_seconds * cfg.sample_rate % cfg.hop:
    raise ValueError(
      f"--segment-seconds={cfg.segment_seconds} is not a whole number of {cfg.hop}-sample frames"
    )
  if cfg.overwrite:
    removed = clear_output(cfg.output, work)
    if removed:
      warn(f"prepare: --overwrite: deleted the earlier run's {len(removed)} files in {cfg.output}")
    return None, None
  previous, previous_plan = previous_run(cfg.output, work)  # before anything is written
  refuse_other_options(cfg.output, cfg, previous, previous_plan)
  return previous, previous_plan


def checked_teacher(
  cfg: PrepareConfig, teacher_dir: str, name: str, kwargs: dict[str, Any]
) -> base.Teacher:
  """The teacher saved in ``teacher_dir``, else made from ``teacher_request``'s (name, kwargs) and
  saved there; refused when its rate or hop is not the run's."""
  teacher = factory.load_or_make_teacher(teacher_dir, name, **kwargs)
  if teacher.sample_rate != cfg.sample_rate or teacher.hop != cfg.hop:
    raise ValueError(
      f"teacher rate {teacher.sample_rate} Hz / hop {teacher.hop} does not match "
      f"{cfg.sample_rate} Hz / {cfg.hop}"
    )
  return teacher


def recorded_shards(previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
  """Shard name -> its entry in an earlier run's manifest (what a kept shard is checked against)."""
  return {
    s["path"]: s for info in (previous or {}).get("splits", {}).values() for s in info["shards"]
  }


def dataset_manifest(
  cfg: PrepareConfig,
  shards_by_split: dict[str, list[dict[str, Any]]],
  files: dict[str, Any],
  skipped: list[dict[str, str]],
  other: list[str],
  teacher: base.Teacher,
  plan_hash: str,
) -> dict[str, Any]:
  """The manifest of a finished run: ``files`` holds the "input", "used", "train" and "valid"
  files."""
  return manifest_lib.build_manifest(
    shards_by_split,
    {"train": len(files["train"]), "valid": len(files["valid"])},
    teacher.config(),
    sample_rate=cfg.sample_rate,
    hop=cfg.hop,
    counts={
      "num_input_files": len(files["input"]),
      "num_used_files": len(files["used"]),
      "num_skipped_files": len(skipped),
      "num_ignored_files": len(other),
    },
    options=manifest_options(cfg),
    plan_hash=plan_hash,
  )


def _looks_like_hub_id(source: str) -> bool:
  """``owner/name`` (facebook/encodec_24khz), not a path that merely does not exist."""
  return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.endswith(".py")


def check_options(cfg: PrepareConfig) -> None:
  """Refuses (one ValueError line) the options that would fail only after hours of decoding: the
  teacher's, an EnCodec source that is neither a folder nor a Hub id, an output that cannot be
  written (a file, a read-only folder, a bucket that does not exist or refuses writes)."""
  teacher_request(cfg, ())
  if cfg.teacher == "encodec" and not cfg.encodec.startswith("random-init"):
    if not os.path.exists(cfg.encodec) and not _looks_like_hub_id(cfg.encodec):
      raise ValueError(
        f"--encodec={cfg.encodec}: no such folder, and not a Hugging Face Hub id (owner/name, "
        "e.g. facebook/encodec_24khz)"
      )
  if cfg.encodec and cfg.teacher != "encodec":
    raise ValueError(f"--encodec applies only with --teacher=encodec (not --teacher={cfg.teacher})")
  if cfg.teacher == "encodec":
    encodec.resolve_device(cfg.device)  # a CUDA device that is not there: one line, now
  storage.check_writable_folder(cfg.output, "--output")
