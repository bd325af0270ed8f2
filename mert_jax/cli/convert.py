"""Convert between mert_jax checkpoints and Hugging Face folders (mert_jax/hf/convert.py).

  python -m mert_jax.cli.convert jax-to-hf --checkpoint=CKPT_DIR --output=HF_DIR
  python -m mert_jax.cli.convert hf-to-jax --hf=HF_DIR --output=CKPT_DIR
"""

from __future__ import annotations

import argparse
import sys

from mert_jax.hf.convert import HEADS_FILE, HF_WEIGHTS, MERT_CONFIG_FILE, export_hf, import_hf
from mert_jax.train import checkpoints


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("hf-to-jax", help="HF Hubert/MERT folder -> mert_jax checkpoint")
  a.add_argument("--hf", required=True)
  a.add_argument("--output", required=True)
  a.add_argument("--seed", type=int, default=0, help="init seed for heads absent from the folder")
  b = sub.add_parser("jax-to-hf", help="mert_jax checkpoint -> HF folder")
  b.add_argument("--checkpoint", required=True, help="model checkpoint or training workdir")
  b.add_argument("--step", type=int, default=None, help="workdir step (default: the latest complete one)")
  b.add_argument("--output", required=True)
  args = parser.parse_args(argv)
  if args.cmd == "hf-to-jax":
    model, heads = import_hf(args.hf, seed=args.seed)
    checkpoints.save_model(args.output, model)
    print(f"wrote {args.output} ({'heads from ' + HEADS_FILE if heads else 'backbone imported; heads freshly initialised'})")
  else:
    model = checkpoints.load_model(args.checkpoint, step=args.step)
    export_hf(model, args.output)
    print(f"wrote {args.output}: config.json, {HF_WEIGHTS} (HubertModel), {HEADS_FILE}, {MERT_CONFIG_FILE}")


if __name__ == "__main__":
  try:
    main()
  except (ValueError, FileNotFoundError, ImportError) as err:
    sys.exit(f"error: {err}")
