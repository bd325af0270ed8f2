"""The learning experiment in one command: does pretraining buy features better than random weights
and MFCCs? (docs/probing.md)

  python benchmarks/learning.py --music=DIR [--music=DIR ...] --minutes=M --workdir=DIR \
      --output=DIR [--recipe=configs/mert.py:small_rq] [--set=full] [--tasks=pitch,instrument,key]

1. prepare  the music folders (every audio file under each, symlinked side by side into
            OUTPUT/music so that one corpus holds them all) with ``data_pipeline.prepare``
            (k-means teacher of the recipe's codebook shape; a BEST-RQ recipe does not read its
            codes) into OUTPUT/data; skipped when OUTPUT/data has a manifest;
2. stats    the corpus statistics the recipe's targets need (log-CQT and log-mel,
            ``mert_jax.objective.target_stats``) into OUTPUT/target_stats.npz;
3. train    the recipe for ``--minutes`` of this machine's time, as steps: ``--minutes`` x 60 x
            ``--steps-per-s`` (the recipe's measured pace here; the schedule needs the step count
            up front), with a checkpoint every ``--checkpoint-every`` steps, into ``--workdir`` (a
            normal training workdir: re-running resumes it; ``probe --checkpoint=WORKDIR`` and
            ``extract`` read it);
4. probe    the last checkpoint, the same architecture with random weights and MFCCs on
            ``--tasks`` (``python -m mert_jax.probe``'s MARBLE protocol) into OUTPUT/probe;
5. curve    every earlier checkpoint probed on ``--curve-tasks`` (the model only:
            ``--baselines=none``) into OUTPUT/curve/stepN, the last one linked to OUTPUT/probe;
            OUTPUT/curve.png and the curve table (``benchmarks/probe_curve.py``);
6. report   OUTPUT/learning.md: the probe table (weighted sum of layers, test split) with each
            row's margin over random weights and MFCCs, the run's last evaluation (masked
            accuracy against the training prior, effective rank) and the curve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import probe_curve  # noqa: E402  (the curve's table and picture)
from data_pipeline import audio_format  # noqa: E402
from data_pipeline import prepare as prepare_lib  # noqa: E402
from mert_jax import recipe  # noqa: E402
from mert_jax.checkpointing import workdir_steps  # noqa: E402
from mert_jax.cli import probe as probe_cli  # noqa: E402
from mert_jax.config import ObjectiveConfig  # noqa: E402
from mert_jax.objective import target_stats_file as target_stats  # noqa: E402
from mert_jax.train.loop import train  # noqa: E402

SMALL_RQ_STEPS_PER_S = 0.4  # small_rq on the 2-core CPU, alone (0.44 measured 2026-12-07)
MODEL = "model"  # the probe report's extractor names: the model, then its two baselines
BASELINES = ("random init", "MFCC")


def stage_music(folders: list[str], out: str) -> int:
  """Symlinks every audio file under ``folders`` into ``out`` (prepare does not follow symlinked
  folders); returns how many."""
  os.makedirs(out, exist_ok=True)
  n = 0
  for i, folder in enumerate(folders):
    for root, _, names in os.walk(folder, followlinks=True):
      for name in sorted(names):
        if os.path.splitext(name)[1].lower() not in audio_format.AUDIO_EXTENSIONS:
          continue
        rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "__")
        link = os.path.join(out, f"{i}__{rel}")
        if not os.path.lexists(link):
          os.symlink(os.path.abspath(os.path.join(root, name)), link)
        n += 1
  return n


def probe_curve_stage(args: argparse.Namespace, probe_dir: str) -> str:
  """Probes every kept checkpoint of ``args.workdir`` before the last on ``args.curve_tasks``
  (model only) into OUTPUT/curve/stepN (an existing folder is kept: re-running resumes), links the
  last step's folder to ``probe_dir`` and draws OUTPUT/curve.png; returns the curve's table."""
  steps = workdir_steps.complete_steps(args.workdir)
  curve = os.path.join(args.output, "curve")
  os.makedirs(curve, exist_ok=True)
  for step in steps[:-1]:
    folder = os.path.join(curve, f"step{step}")
    if os.path.exists(os.path.join(folder, "results.json")):
      continue
    status = probe_cli.main(
      [
        f"--checkpoint={args.workdir}",
        f"--step={step}",
        f"--task={args.curve_tasks}",
        f"--set={args.set}",
        "--baselines=none",
        f"--output={folder}",
        f"--cache-dir={args.cache_dir}",
        f"--max-epochs={args.max_epochs}",
      ]
    )
    if status:
      raise SystemExit(status)
  last = os.path.join(curve, f"step{steps[-1]}")
  if not os.path.lexists(last):
    os.symlink(os.path.relpath(probe_dir, curve), last)
  folders = probe_curve.probe_folders([os.path.join(curve, "step*")])
  points, losses = probe_curve.load_points(folders), probe_curve.eval_losses(args.workdir)
  levels = probe_curve.random_levels(folders)
  probe_curve.draw(points, levels, losses, os.path.join(args.output, "curve.png"))
  return "\n".join(probe_curve.table(points, losses))


def report(probe: dict, last_eval: dict, steps: int, scheduled: int, seconds: float) -> str:
  """The markdown summary: per task, the model's score beside the baselines and its margins."""
  lines = [
    f"pretraining: {steps} of {scheduled} scheduled steps in {seconds / 60:.1f} min"
    + ("" if steps == scheduled else " (stopped early: SIGTERM; re-running resumes it)"),
    "",
    "| task | metric | pretrained | random init | MFCC | - random | - MFCC |",
    "|---|---|---|---|---|---|---|",
  ]
  results = probe["results"]
  for task in results[MODEL]:

    def score(name: str) -> float:
      """The weighted sum of layers; an extractor of one layer (MFCC): that layer."""
      res = results[name][task]
      return res["weighted"] if res["weighted"] is not None else max(res["layers"].values())

    m, (r, f) = score(MODEL), map(score, BASELINES)
    metric = results[MODEL][task]["metric"]
    lines.append(
      f"| {task} | {metric} | {m:.3f} | {r:.3f} | {f:.3f} | {m - r:+.3f} | {m - f:+.3f} |"
    )
  if last_eval:
    acc = sum(last_eval["eval_accuracy"]) / len(last_eval["eval_accuracy"])
    prior = sum(last_eval["eval_prior_accuracy"]) / len(last_eval["eval_prior_accuracy"])
    ranks = [v for k, v in last_eval.items() if k.startswith("eval_rank_l")]
    lines += [
      "",
      f"last evaluation (step {last_eval['step']}): masked accuracy {acc:.4f} against the "
      f"training prior {prior:.4f}; effective rank per layer "
      + ", ".join(f"{r:.1f}" for r in ranks),
    ]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--music", action="append", required=True, help="a folder of music (repeatable)")
  p.add_argument("--minutes", type=float, required=True, help="pretraining time budget")
  p.add_argument("--workdir", required=True, help="the training workdir")
  p.add_argument("--output", required=True, help="data, statistics, probes and the report")
  p.add_argument("--recipe", default="configs/mert.py:small_rq", help="the recipe to pretrain")
  p.add_argument("--steps-per-s", type=float, default=SMALL_RQ_STEPS_PER_S, help="its pace here")
  p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
  p.add_argument("--tasks", default="pitch,instrument,key", help="probe tasks")
  p.add_argument(
    "--curve-tasks",
    default="pitch,instrument",
    help="tasks probed at every earlier checkpoint (the curve); empty: no curve",
  )
  p.add_argument("--set", default="full", help="probe set size: full, small or tiny")
  p.add_argument("--max-epochs", type=int, default=100, help="probe head epochs per rate")
  p.add_argument("--kmeans-max-fit-frames", type=int, default=100_000, help="prepare's k-means")
  p.add_argument("--valid-fraction", type=float, default=0.05, help="files held out")
  p.add_argument("--cache-dir", default=".probe_cache", help="rendered probe sets")
  p.add_argument("--config", action="append", default=[], metavar="FIELD=VALUE", help="override")
  args = p.parse_args(argv)

  config = recipe.load_config(args.recipe)
  recipe.apply_overrides(config, recipe.parse_assignments(args.config))
  data = os.path.join(args.output, "data")
  if not os.path.exists(os.path.join(data, "manifest.json")):
    staged = stage_music(args.music, os.path.join(args.output, "music"))
    print(f"prepare: {staged} audio files from {len(args.music)} folders", flush=True)
    status = prepare_lib.main(
      [
        f"--input={os.path.join(args.output, 'music')}",
        f"--output={data}",
        f"--kmeans-codebooks={config.model.num_codebooks}",
        f"--kmeans-codebook-size={config.model.codebook_size}",
        f"--kmeans-max-fit-frames={args.kmeans_max_fit_frames}",
        f"--valid-fraction={args.valid_fraction}",
        "--shard-seconds=1800",
      ]
    )
    if status:
      return status
  config.data.dir = data
  ocfg = ObjectiveConfig.from_dict(config.objective.to_dict())
  if ocfg.target_stats_needed_by and not ocfg.target_stats:
    stats = os.path.join(args.output, "target_stats.npz")
    if not os.path.exists(stats):
      mcfg = recipe.model_config_from(config)
      target_stats.save(
        stats, target_stats.compute(data, mcfg, ocfg, crops=512, crop_samples=config.crop_samples)
      )
    config.objective.target_stats = stats
  config.total_steps = max(1, round(args.minutes * 60 * args.steps_per_s))
  config.checkpoint_every = config.keep_every = args.checkpoint_every
  config.eval_every = args.checkpoint_every
  began = time.time()
  train(config, args.workdir)
  seconds = time.time() - began

  probe_dir = os.path.join(args.output, "probe")
  status = probe_cli.main(
    [
      f"--checkpoint={args.workdir}",
      f"--task={args.tasks}",
      f"--set={args.set}",
      f"--output={probe_dir}",
      f"--cache-dir={args.cache_dir}",
      f"--max-epochs={args.max_epochs}",
    ]
  )
  if status:
    return status
  with open(os.path.join(probe_dir, "results.json")) as f:
    probe = json.load(f)
  with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
    evals = [r for r in map(json.loads, f) if "eval_loss" in r]
  done = workdir_steps.latest_step(args.workdir)  # the probed step (SIGTERM stops early)
  text = report(probe, evals[-1] if evals else {}, done, config.total_steps, seconds)
  if args.curve_tasks:
    curve_table = probe_curve_stage(args, probe_dir)
    text += f"\nthe curve (OUTPUT/curve.png; score: weighted sum / best layer):\n\n{curve_table}\n"
  with open(os.path.join(args.output, "learning.md"), "w") as f:
    f.write(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
