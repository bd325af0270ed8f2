"""Has pretraining collapsed the features, and is a task's information gone or only hard for the
probe head to reach? For a checkpoint and the same architecture with random weights, per layer of
the note set's clip-averaged features: the effective rank (sum of singular values, squared, over
the sum of their squares) and the share of the first direction, and the test accuracy of a
standardised scikit-learn logistic regression (train split -> test split) on pitch and instrument.

  python benchmarks/feature_collapse.py --checkpoint=runs/small --set=full --cache-dir=.probe_cache
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from data_pipeline.records import from_int16
from mert_jax.checkpointing import model_checkpoint
from mert_jax.model.mert import create_model
from mert_jax.probe import features, note_set


def effective_rank(x: np.ndarray) -> tuple[float, float]:
  """(effective rank, share of the first direction) of the centred rows of ``x`` (N, D)."""
  sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
  return float(sv.sum() ** 2 / (sv**2).sum()), float(sv[0] ** 2 / (sv**2).sum())


def linear_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray) -> float:
  """Test accuracy of a standardised logistic regression fitted on the train split."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

  train, test = split == 0, split == 2
  scaler = StandardScaler().fit(x[train])
  clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x[train]), y[train])
  return float(clf.score(scaler.transform(x[test]), y[test]))


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--checkpoint", required=True, help="model checkpoint or training workdir")
  p.add_argument("--step", type=int, default=None, help="workdir step (default: latest)")
  p.add_argument("--set", default="full", choices=tuple(note_set.PRESETS), help="note set size")
  p.add_argument("--cache-dir", default=".probe_cache", help="rendered sets")
  p.add_argument("--seed", type=int, default=0, help="the set and the random-weights twin")
  args = p.parse_args(argv)
  notes = note_set.build(
    dataclasses.replace(note_set.PRESETS[args.set], seed=args.seed), args.cache_dir
  )
  clips = from_int16(notes.audio)
  trained = model_checkpoint.load_model(args.checkpoint, step=args.step, dtype="float32").backbone
  random = create_model(trained.cfg, seed=args.seed).backbone
  print(
    "| weights | layer | effective rank | first direction | pitch (linear) | instrument (linear) |"
  )
  print("|---|---|---|---|---|---|")
  for name, backbone in (("pretrained", trained), ("random", random)):
    feats = features.model_layers(backbone)(clips, "mean")  # (N, L + 1, D)
    for layer in range(feats.shape[1]):
      x = feats[:, layer]
      rank, first = effective_rank(x)
      scores = [linear_probe(x, notes.labels(t)[0], notes.split) for t in ("pitch", "instrument")]
      print(f"| {name} | {layer} | {rank:.1f} | {first:.2f} | {scores[0]:.3f} | {scores[1]:.3f} |")


if __name__ == "__main__":
  main()
