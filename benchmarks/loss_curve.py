"""The 200-step tiny training curve that guards every performance change against numerical drift.

  python benchmarks/loss_curve.py --out=tests/data/tiny_loss_curve_200.json [--data=DIR]

Trains the ``tiny`` variant (bf16 compute, its defaults) for 200 steps on the embedded default
corpus (real music, 8 x 64 k-means codes; prepared under --data when missing) and writes the
logged losses every 10 steps, with the corpus's ``content_hash`` (data_pipeline/manifest.py: a
sha256 over the teacher and every shard) so a comparison is only ever made on the same corpus. The
file committed under tests/data was written by the code *before* the issue-7 optimisations (git
5bb8aa4), run as ``PYTHONPATH=<checkout of 5bb8aa4> python benchmarks/loss_curve.py`` on the
singularity-music corpus; tests/train/test_loss_curve.py trains the same run with today's code and
compares when its corpus has the recorded hash (on any other corpus it checks that the loss falls).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

STEPS = 200
LOG_EVERY = 10


def curve_config(data_dir: str):
  """The curve's training config (tiny variant, short warm-up, one log row per 10 steps)."""
  from mert_jax import recipe

  c = recipe.load_config(f"{recipe.DEFAULT_RECIPE}:tiny")
  c.data.dir = data_dir
  c.data.shuffle_window = 16
  c.total_steps, c.log_every, c.eval_every, c.checkpoint_every = STEPS, LOG_EVERY, 0, 10_000
  c.optimizer.warmup_steps = 20
  return c


def corpus_hash(data_dir: str) -> str:
  """The prepared corpus's content hash (teacher config and every shard's sha256)."""
  from data_pipeline.manifest import load_manifest

  return load_manifest(data_dir)["content_hash"]


def run_curve(data_dir: str, workdir: str) -> dict[str, dict[str, float]]:
  """Train and return {step: {loss, loss_codes, loss_cqt}} from the logged rows."""
  from mert_jax.train.loop import train

  train(curve_config(data_dir), workdir)
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {
    str(r["step"]): {k: r[k] for k in ("loss", "loss_codes", "loss_cqt")}
    for r in rows
    if "loss" in r
  }


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "mert_jax_curve_data"))
  args = p.parse_args()
  # The same 8 fake CPU devices as tests/conftest.py, so the test reproduces this run's sharding.
  os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax

  import mert_jax
  from data_pipeline import default_corpus

  assert jax.device_count() == 8, jax.devices()
  data = default_corpus.ensure_default_corpus(
    args.data, num_codebooks=8, codebook_size=64, minutes=6.0
  )
  with tempfile.TemporaryDirectory() as wd:
    curve = run_curve(data, wd)
  out = {
    "code": os.path.dirname(os.path.dirname(os.path.abspath(mert_jax.__file__))),
    "jax": jax.__version__,
    "steps": STEPS,
    "corpus_content_hash": corpus_hash(data),
    "curve": curve,
  }
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(json.dumps(curve[str(STEPS)]))


if __name__ == "__main__":
  main()
