"""How much of each codebook can be predicted from what a masked span leaves visible?

  python benchmarks/teacher_ceiling.py --data=DATA_DIR [--targets=teacher|bestrq] \
      [--config=RECIPE] [--config.FIELD=VALUE ...] [--crops=256] [--json=FILE]

For every codebook of the chosen targets (the data's offline teacher, or BEST-RQ computed from the
audio with the recipe's objective settings), frames are drawn from seeded crops of the training
split (fit) and the valid split (score, held-out files). Each frame's input is the log-CQT (the
project's CQT, standardised per bin over the fit frames, 336 bins averaged to 84 semitones) at the
frames t-5, t-4, t-3 and t+3, t+4, t+5: the context a 5-frame masked span around t leaves. A
scikit-learn MLP (one hidden layer) predicts the code at t. Printed per codebook: the held-out
accuracy of the MLP, of always predicting the fit split's most frequent code (the prior), and
the number of codes used. A codebook whose MLP accuracy is near its prior gives a masked model
little to learn (the learning issue's finding for residual k-means levels 2-8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from data_pipeline import reader as reader_lib  # noqa: E402
from mert_jax import recipe  # noqa: E402
from mert_jax.config import ObjectiveConfig  # noqa: E402
from mert_jax.objective import targets  # noqa: E402
from mert_jax.objective.target_stats_file import log_floor  # noqa: E402

CONTEXT = (-5, -4, -3, 3, 4, 5)  # frames visible around a masked 5-frame span centred on t
SEMITONE_BINS = 4  # CQT bins averaged into one input (48 per octave -> 12)
FRAMES_PER_CROP = 16  # frames drawn from each crop


def frames_of(data, split, mcfg, ocfg, crops, crop_samples, seed):
  """(inputs (N, len(CONTEXT) * bins), codes (N, K)) of ``crops`` seeded crops of ``split``."""
  rcfg = reader_lib.ReaderConfig(
    crop_samples=crop_samples, batch_size=16, shuffle_window=64, seed=seed
  )
  it = iter(reader_lib.make_dataset(data, rcfg, split=split)[0])

  @jax.jit
  def view(audio, labels):
    cqt = targets.cqt_fn(mcfg, ocfg)(audio)
    codes = targets.codes(audio, cqt, labels, mcfg, ocfg)  # (B, T, K)
    logs = log_floor(cqt[:, : codes.shape[1]])
    b, t, bins = logs.shape
    return logs.reshape(b, t, bins // SEMITONE_BINS, SEMITONE_BINS).mean(-1), codes

  rng = np.random.default_rng(seed)
  xs, ys = [], []
  for _ in range(max(1, crops // 16)):
    batch = next(it)
    logs, codes = map(np.asarray, view(batch["audio"], batch["labels"]))
    t = codes.shape[1]
    for b in range(len(codes)):
      at = rng.choice(np.arange(max(CONTEXT), t - max(CONTEXT)), FRAMES_PER_CROP, replace=False)
      xs.append(np.concatenate([logs[b, at + d] for d in CONTEXT], axis=1))
      ys.append(codes[b, at])
  return np.concatenate(xs), np.concatenate(ys)


def ceilings(x_fit, y_fit, x_test, y_test, hidden: int, seed: int) -> list[dict]:
  """Per codebook: MLP and prior accuracy on the test frames, codes used."""
  from sklearn.neural_network import MLPClassifier  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

  scaler = StandardScaler().fit(x_fit)
  a, b = scaler.transform(x_fit), scaler.transform(x_test)
  rows = []
  for k in range(y_fit.shape[1]):
    prior = np.bincount(y_fit[:, k]).argmax()
    mlp = MLPClassifier(
      hidden_layer_sizes=(hidden,), max_iter=40, early_stopping=True, random_state=seed
    ).fit(a, y_fit[:, k])
    rows.append(
      {
        "codebook": k,
        "mlp_accuracy": float(mlp.score(b, y_test[:, k])),
        "prior_accuracy": float(np.mean(y_test[:, k] == prior)),
        "codes_used": int(len(np.unique(y_fit[:, k]))),
      }
    )
  return rows


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--data", required=True, help="a prepared folder with train and valid splits")
  p.add_argument("--config", default="configs/mert.py:small", help="recipe (model and objective)")
  p.add_argument("--targets", default=None, help="teacher or bestrq (default: the recipe's)")
  p.add_argument("--crops", type=int, default=256, help="crops per split")
  p.add_argument("--hidden", type=int, default=256, help="MLP width")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", default="", help="append the rows here")
  args, rest = p.parse_known_args(argv)
  config = recipe.load_config(args.config)
  overrides = recipe.parse_assignments([a.removeprefix("--config.") for a in rest])
  recipe.apply_overrides(config, overrides)
  if args.targets:
    config.objective.targets = args.targets
  mcfg = recipe.model_config_from(config)
  ocfg = ObjectiveConfig.from_dict(config.objective.to_dict())
  ocfg.validate(mcfg)
  manifest = reader_lib.load_manifest(args.data)
  if ocfg.targets == "teacher":  # the teacher's own shape
    mcfg = mcfg.replace(
      num_codebooks=manifest["num_codebooks"], codebook_size=manifest["codebook_size"]
    )
  common = dict(mcfg=mcfg, ocfg=ocfg, crops=args.crops, crop_samples=config.crop_samples)
  x_fit, y_fit = frames_of(args.data, "train", seed=args.seed, **common)
  x_test, y_test = frames_of(args.data, "valid", seed=args.seed, **common)
  rows = ceilings(x_fit, y_fit, x_test, y_test, args.hidden, args.seed)
  name = ocfg.targets if ocfg.targets == "bestrq" else manifest["teacher"].get("name", "teacher")
  print(f"{name}: {len(x_fit)} fit frames, {len(x_test)} held-out frames")
  print("| codebook | MLP from context | prior | codes used |")
  print("|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['codebook'] + 1} | {r['mlp_accuracy']:.3f} | {r['prior_accuracy']:.3f} | "
      f"{r['codes_used']} |"
    )
  if args.json:
    with open(args.json, "a") as f:
      for r in rows:
        f.write(json.dumps({"targets": name, "data": args.data, **r}) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
