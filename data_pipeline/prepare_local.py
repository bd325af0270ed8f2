"""The local engine: a preparation on this machine's process pool, through a cache of decoded
files (``--engine=local``, the default; ``beam_prepare.py`` is the other engine).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import sys
import time
from typing import Any, Iterator

import numpy as np

from data_pipeline import manifest as manifest_lib
from data_pipeline.audio import AUDIO_EXTENSIONS
from data_pipeline.prepare_jobs import (
  IGNORED,
  PLAN,
  SKIPPED,
  TEACHER_DIR,
  PrepareConfig,
  _cache_key,
  _decode_job,
  _shard_job,
  _tokens_job,
  plan_splits,
  scan,
  teacher_request,
  valid_split,
  work_dir,
)
from data_pipeline.prepare_run import (
  checked_teacher,
  content_options,
  dataset_manifest,
  open_run,
  other_inputs,
  recorded_shards,
  warn,
)
from data_pipeline.records import from_int16
from data_pipeline.teachers import base
from mert_jax.files import storage
from mert_jax.files.atomic import (
  atomic_write_jsonl,
  atomic_write_text,
)
from mert_jax.terminal import progress as progress_lib


def _cached_audios(caches: dict[str, str]) -> Iterator[tuple[str, np.ndarray]]:
  """(file, decoded float32 audio) of ``caches`` (file -> its cache), one at a time (the k-means
  fit streams them; its frame sample is keyed by the file's path, not its position)."""
  for rel, cache in caches.items():
    yield rel, from_int16(np.load(cache + ".npy", mmap_mode="r"))


def prepare(cfg: PrepareConfig, *, progress: bool = True) -> dict[str, Any]:
  """Run every stage; returns the manifest (also written to OUTPUT/manifest.json)."""
  work = work_dir(cfg)
  previous, previous_plan = open_run(cfg, work)
  t_start = time.time()
  out = cfg.output
  say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
  work_existed = os.path.isdir(work)
  workers = cfg.workers or os.cpu_count() or 1
  ctx = multiprocessing.get_context("spawn")

  audio_files, other = scan(cfg.input)
  # A bucket's stamps from one listing (local files are examined one by one by _cache_key).
  stamps = storage.file_stamps(cfg.input) if storage.is_remote(cfg.input) else {}
  if not audio_files:
    raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {cfg.input}")
  say(
    f"prepare: {len(audio_files)} audio files under {cfg.input} ({len(other)} other files "
    f"ignored), {workers} workers"
  )
  caches = {
    rel: os.path.join(work, _cache_key(os.path.join(cfg.input, rel), rel, stamps.get(rel)))
    for rel in audio_files
  }
  min_samples = int(cfg.min_seconds * cfg.sample_rate)

  os.makedirs(work, exist_ok=True)
  with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    futs = {
      pool.submit(
        _decode_job, os.path.join(cfg.input, rel), caches[rel], cfg.sample_rate, min_samples
      ): rel
      for rel in audio_files
    }
    decoded = {}
    for fut in progress_lib.progress(
      cf.as_completed(futs), len(futs), "decode", "files", enabled=progress
    ):
      decoded[futs[fut]] = fut.result()
  for rel in audio_files:
    if decoded[rel].get("rebuilt"):
      warn(f"prepare: the decoded cache of {rel} was bad ({decoded[rel]['rebuilt']}); redone")
  skipped = [
    {"path": rel, "reason": decoded[rel]["reason"]} for rel in audio_files if not decoded[rel]["ok"]
  ]
  good = [rel for rel in audio_files if decoded[rel]["ok"]]

  valid = valid_split(good, cfg.valid_fraction, cfg.seed)
  train_files = [rel for rel in good if rel not in valid]
  rel_plans, plan_hash = plan_splits({rel: decoded[rel]["num_samples"] for rel in good}, valid, cfg)
  split_plans = {
    split: [[(caches[rel], rel, st, ln) for rel, st, ln in shard] for shard in shards]
    for split, shards in rel_plans.items()
  }
  refusal = other_inputs(out, split_plans, plan_hash, previous, previous_plan)
  if refusal:
    if not work_existed:
      shutil.rmtree(work, ignore_errors=True)  # leave the folder as it was
    raise ValueError(refusal)
  atomic_write_text(
    os.path.join(work, PLAN), json.dumps({"plan": plan_hash, "options": content_options(cfg)})
  )
  atomic_write_jsonl(
    os.path.join(out, IGNORED),
    ({"path": p, "reason": "not an audio file extension"} for p in other),
  )
  atomic_write_jsonl(os.path.join(out, SKIPPED), skipped)
  for s in skipped:
    say(f"  skipped {s['path']}: {s['reason']}")
  if not good:
    raise ValueError(
      f"none of the {len(audio_files)} audio files could be used; see {os.path.join(out, SKIPPED)}"
    )

  teacher_dir = os.path.join(out, TEACHER_DIR)
  say(f"teacher: {cfg.teacher}")
  fit_audios = progress_lib.progress(  # lazy: silent when a saved teacher is reused
    _cached_audios({rel: caches[rel] for rel in train_files}),
    len(train_files),
    "k-means features",
    "files",
    enabled=progress,
  )
  name, kwargs = teacher_request(cfg, fit_audios)
  if name == "kmeans":
    kwargs["progress"] = progress  # the clustering's own lines (per codebook, per step)
  teacher = checked_teacher(cfg, teacher_dir, name, kwargs)
  recorded = recorded_shards(previous)
  with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
    token_futs = {
      pool.submit(
        _tokens_job,
        caches[rel],
        teacher_dir,
        (teacher.num_codebooks, base.num_tokens(decoded[rel]["num_samples"], cfg.hop)),
      ): rel
      for rel in good
    }
    for fut in progress_lib.progress(
      cf.as_completed(token_futs), len(token_futs), "tokens", "files", enabled=progress
    ):
      if note := fut.result():
        warn(f"prepare: the token cache of {token_futs[fut]} was bad ({note}); redone")
    shard_futs = {}
    for split, shards in split_plans.items():
      for i, shard in enumerate(shards):
        shard_name = manifest_lib.shard_name(split, i, len(shards))
        path = os.path.join(out, shard_name)
        fut = pool.submit(_shard_job, path, shard, cfg.hop, recorded.get(shard_name))
        shard_futs[fut] = (split, i, shard_name)
    results: dict[str, dict[int, Any]] = {s: {} for s in split_plans}
    for fut in progress_lib.progress(
      cf.as_completed(shard_futs), len(shard_futs), "shards", "shards", enabled=progress
    ):
      split, i, shard_name = shard_futs[fut]
      results[split][i], note = fut.result()
      if note:
        warn(f"prepare: {os.path.join(out, shard_name)} {note}; rebuilt it")

  shards_by_split = {
    split: [by_index[i] for i in sorted(by_index)] for split, by_index in results.items()
  }
  files = {"input": audio_files, "used": good, "train": train_files, "valid": valid}
  manifest = dataset_manifest(cfg, shards_by_split, files, skipped, other, teacher, plan_hash)
  splits = manifest["splits"]
  manifest_lib.write_manifest(out, manifest)
  if not cfg.keep_cache:
    shutil.rmtree(work, ignore_errors=True)
  say(
    f"done in {time.time() - t_start:.1f} s: {manifest['total_hours']:.3f} h in "
    f"{sum(len(s['shards']) for s in splits.values())} shards; {len(skipped)} files skipped "
    f"(see {SKIPPED}); manifest {manifest_lib.manifest_path(out)}"
  )
  return manifest


# --flag metavars, where the field's type says too little.
