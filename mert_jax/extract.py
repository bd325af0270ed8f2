"""Frame-level features of every layer, for downstream probes.

  python -m mert_jax.extract --checkpoint=CKPT_DIR --audio=FILE --output=OUT.npy
  python -m mert_jax.extract --hf=HF_DIR --audio=FILE --output=OUT.npy

Decodes the file, downmixes and resamples to the model's rate (24 kHz), runs the backbone in
float32 and saves (num_layers + 1, frames, hidden) float32: entry for entry the quantities of
``transformers.HubertModel(..., output_hidden_states=True).hidden_states`` (spec §5.5). The whole
file is one input (the extractor's GroupNorm normalises over the whole clip, as the reference
does for a batch of one).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mert_jax.audio_io import load_audio
from mert_jax.model import Backbone, check_audio, check_finite


def hidden_states(backbone: Backbone, audio: np.ndarray) -> np.ndarray:
  """(samples,) float audio -> (N + 1, T, D) float32 hidden states (deterministic, no masking)."""
  audio = np.asarray(audio)
  batch = audio[None] if audio.ndim == 1 else audio
  check_audio(batch, backbone.cfg)
  check_finite(batch)
  out = backbone(jnp.asarray(batch, jnp.float32), output_hidden_states=True)
  return np.stack([np.asarray(h[0], np.float32) for h in out.hidden_states])


def save_npy_atomic(path: str, array: np.ndarray) -> None:
  """np.save to ``path`` via a temporary file, so a crash never leaves a truncated .npy."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.save(f, array)
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
  from mert_jax import checkpoint_io, convert  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description="Save every layer's frame-level features of an audio file.")
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--checkpoint", help="mert_jax model checkpoint directory")
  src.add_argument("--hf", help="Hugging Face Hubert/MERT folder")
  parser.add_argument("--audio", required=True, help="audio file (wav, flac, ogg, opus, mp3, ...)")
  parser.add_argument("--output", required=True, help="output .npy path")
  args = parser.parse_args(argv)
  if args.checkpoint:
    model = checkpoint_io.load_model(args.checkpoint, dtype="float32")
  else:
    model, _ = convert.import_hf(args.hf, dtype="float32")
  audio = load_audio(args.audio, model.cfg.sample_rate)
  try:
    with jax.default_matmul_precision("highest"):
      feats = hidden_states(model.backbone, audio)
  except ValueError as e:
    raise ValueError(f"{args.audio}: {e}") from e
  save_npy_atomic(args.output, feats)
  print(f"wrote {args.output}: {feats.shape} (layers+1, frames, hidden) float32 "
        f"from {len(audio) / model.cfg.sample_rate:.2f} s of audio")


if __name__ == "__main__":
  try:
    main()
  except (ValueError, FileNotFoundError) as err:
    sys.exit(f"error: {err}")
