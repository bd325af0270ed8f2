"""The main job on the embedded default, end to end on CPU:

  python -m mert_jax.cli.demo --workdir=runs/demo [--steps=300]

1. prepares the embedded default corpus (real music from the Debian soundtrack packages, or
   synthesised music) with a k-means teacher (data_pipeline/default_corpus.py);
2. trains the tiny MERT model on it with the real trainer (mert_jax/train/loop.py: checkpoints,
   TensorBoard events, metrics.jsonl, evaluation on the held-out split);
3. exports the trained workdir to a Hugging Face folder, reloads it with
   ``transformers.AutoModel`` (when the torch extra is installed) and compares every hidden state
   with JAX;
4. extracts every layer's features of a music file to .npy.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from absl import logging

from data_pipeline import example_audio
from data_pipeline.audio import load_audio
from data_pipeline.audio_format import SAMPLE_RATE
from mert_jax import plot, recipe
from mert_jax.checkpointing import model_checkpoint
from mert_jax.files.atomic import atomic_save_npy
from mert_jax.hf.convert import export_hf
from mert_jax.model.features import hidden_states, windowed_hidden_states
from mert_jax.terminal.cli_help import ArgumentParser, prog
from mert_jax.train.loop import train


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  p = ArgumentParser(prog=prog("mert_jax.cli.demo"), description=__doc__)
  p.add_argument(
    "--workdir",
    default="runs/demo",
    metavar="DIR",
    help="where the data, checkpoints, metrics, HF folder and features go",
  )
  p.add_argument("--steps", type=int, default=300, metavar="N", help="training steps")
  p.add_argument("--seed", type=int, default=0, metavar="N", help="the training run's seed")
  return p


def main(argv: list[str] | None = None) -> None:
  """Runs the four stages, printing where each output went."""
  args = build_parser().parse_args(argv)
  logging.set_verbosity(logging.WARNING)
  t_start = time.time()
  workdir = os.path.abspath(args.workdir)
  files = example_audio.real_music_files()
  print(
    f"[1/4] corpus: "
    f"{files[0] if files else 'synthesised music (no Debian music package installed)'} ..."
  )

  config = recipe.load_config(f"{recipe.DEFAULT_RECIPE}:tiny")
  config.total_steps, config.seed = args.steps, args.seed
  config.log_every, config.eval_every, config.checkpoint_every = 25, 100, 100
  print(
    f"[2/4] training tiny MERT for {args.steps} steps (batch {config.batch_size} x "
    f"{config.crop_samples / SAMPLE_RATE:g} s) in {workdir}"
  )
  metrics = train(config, workdir)["metrics"]
  print(
    f"      last step {metrics['step']}: loss {metrics['loss']:.3f} "
    f"(codes {metrics['loss_codes']:.3f}, "
    f"CQT {metrics['loss_cqt']:.3f}), {metrics['clips_per_s']:.1f} clips/s"
  )
  print(f"      curves: {plot.plot_workdir(workdir)} (python -m mert_jax.plot WORKDIR)")

  hf_dir = os.path.join(workdir, "hf")
  model = model_checkpoint.load_model(workdir, dtype="float32")
  export_hf(model, hf_dir)
  print(f"[3/4] Hugging Face folder: {hf_dir}")
  clip = example_audio.music_clip(seconds=4.0)
  ref = hidden_states(model.backbone, clip)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import AutoModel  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("      (torch extra not installed: skipped the PyTorch reload check)")
  else:
    hf = AutoModel.from_pretrained(hf_dir).eval()
    with torch.no_grad():
      hs = hf(torch.from_numpy(clip[None]), output_hidden_states=True).hidden_states
    err = max(float(np.abs(h[0].numpy() - r).max()) for h, r in zip(hs, ref))
    print(
      f"      transformers.{type(hf).__name__} reloaded it: "
      f"max |JAX - PyTorch| over {len(hs)} hidden "
      f"states = {err:.2e}"
    )
    if err > 1e-4:
      raise SystemExit(f"parity check failed: {err:.2e} > 1e-4")

  feat_path = os.path.join(workdir, "features.npy")
  audio_file = example_audio.music_file(workdir)
  feats = windowed_hidden_states(model.backbone, load_audio(audio_file)[: 60 * SAMPLE_RATE], 30.0)
  atomic_save_npy(feat_path, feats)
  print(f"[4/4] features of {audio_file} (first 60 s, 30 s windows): {feat_path} {feats.shape}")
  print(
    f"done in {time.time() - t_start:.0f} s. Checkpoints: {workdir}/checkpoints, "
    f"TensorBoard: {workdir}/tb, "
    f"metrics: {workdir}/metrics.jsonl"
  )


if __name__ == "__main__":
  main()
