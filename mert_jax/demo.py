"""The embedded-default main job (until the trainer lands): everything that exists, end to end.

  python -m mert_jax.demo --workdir=runs/demo

1. finds real music (Debian soundtrack packages) or synthesises music-like audio;
2. builds the tiny MERT model and prints its parameter table;
3. evaluates the pretraining objective and its gradient on crops of that music (masking,
   mixup, CQT targets, 8-codebook cosine CE, CQT regression). The RVQ teacher is
   the data pipeline's job, so the demo's labels are random codes — the loss is real, the
   targets are not;
4. saves an orbax model checkpoint, exports it to a Hugging Face folder, reloads that folder
   with ``transformers.AutoModel`` (when the torch extra is installed) and compares every
   hidden state with the JAX model;
5. extracts every layer's features of a music file to .npy.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mert_jax import checkpoint_io, convert, example_audio, extract
from mert_jax.audio_io import load_audio
from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.model import create_model, param_table
from mert_jax.objective import pretraining_loss


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description="Run the embedded-default MERT demo on CPU.")
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  t_start = time.time()

  files = example_audio.real_music_files()
  src = files[0] if files else "synthesised music (no Debian music package installed)"
  print(f"[1/5] audio: {src}")
  music = example_audio.music_clip(seconds=16.0)

  cfg = model_config("tiny")
  print("[2/5] model: tiny")
  for name, n in param_table(cfg):
    print(f"      {name:<58s} {n:>10,d}")
  model = create_model(cfg, seed=args.seed)

  batch_size, crop = 8, 48000
  audio = jnp.asarray(music[:batch_size * crop].reshape(batch_size, crop))
  rng = np.random.RandomState(args.seed)
  labels = jnp.asarray(rng.randint(0, cfg.codebook_size, (batch_size, cfg.num_codebooks, round(crop / 320))))
  obj = ObjectiveConfig(mixup_min_len=2400, mixup_max_len=4800)
  graphdef, state = nnx.split(model)

  @jax.jit
  def loss_and_grad(state, key):
    f = lambda s: pretraining_loss(nnx.merge(graphdef, s), {"audio": audio, "labels": labels}, key, cfg=obj)
    return jax.value_and_grad(f, has_aux=True)(state)
  (loss, metrics), grads = loss_and_grad(state, jax.random.key(args.seed))
  gnorm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))
  print(f"[3/5] objective on {batch_size} x {crop // 24000} s crops (CQT target: mert_jax.cqt, {obj.cqt_method}; labels: random codes): "
        f"loss {float(loss):.3f} = CE {float(jnp.sum(metrics['ce'])):.3f} + 10*pen "
        f"{10 * float(metrics['features_pen']):.4f} + CQT MSE {float(metrics['cqt_mse']):.3f}; "
        f"masked {float(metrics['mask_fraction']):.2f} of frames; grad norm {gnorm:.3f}")

  ckpt = os.path.join(args.workdir, "checkpoint")
  hf_dir = os.path.join(args.workdir, "hf")
  checkpoint_io.save_model(ckpt, model, overwrite=True)
  convert.export_hf(model, hf_dir)
  print(f"[4/5] checkpoint: {ckpt}\n      Hugging Face folder: {hf_dir}")
  clip = music[:4 * 24000]
  ref = extract.hidden_states(checkpoint_io.load_model(ckpt, dtype="float32").backbone, clip)
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
    print(f"      transformers.{type(hf).__name__} reloaded it: max |JAX - PyTorch| over "
          f"{len(hs)} hidden states = {err:.2e}")
    if err > 1e-4:
      raise SystemExit(f"parity check failed: {err:.2e} > 1e-4")

  feat_path = os.path.join(args.workdir, "features.npy")
  audio_file = example_audio.music_file(args.workdir)
  feats = extract.hidden_states(checkpoint_io.load_model(ckpt, dtype="float32").backbone,
                                load_audio(audio_file)[:30 * 24000])
  extract.save_npy_atomic(feat_path, feats)
  print(f"[5/5] features of {audio_file} (first 30 s): {feat_path} {feats.shape}")
  print(f"done in {time.time() - t_start:.0f} s; outputs under {os.path.abspath(args.workdir)}")


if __name__ == "__main__":
  main()
