"""Convert between mert_jax checkpoints and Hugging Face folders (mert_jax/hf/convert.py).

python -m mert_jax.cli.convert jax-to-hf --checkpoint=CKPT_DIR --output=HF_DIR
python -m mert_jax.cli.convert hf-to-jax --hf=HF_DIR --output=CKPT_DIR
"""

from __future__ import annotations

import argparse
import sys

from mert_jax.hf.convert import HEADS_FILE, HF_WEIGHTS, MERT_CONFIG_FILE, export_hf, import_hf
from mert_jax.train import checkpoints


def main(argv: list[str] | None = None) -> int:
  """Runs the command; a bad input is one ``error: ...`` line on stderr and exit status 1."""
  parser = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  sub = parser.add_subparsers(dest="cmd", required=True)
  a = sub.add_parser("hf-to-jax", help="HF Hubert/MERT folder -> mert_jax checkpoint")
  a.add_argument("--hf", required=True)
  a.add_argument("--output", required=True)
  a.add_argument("--seed", type=int, default=0, help="init seed for heads absent from the folder")
  b = sub.add_parser("jax-to-hf", help="mert_jax checkpoint -> HF folder")
  b.add_argument("--checkpoint", required=True, help="model checkpoint or training workdir")
  b.add_argument(
    "--step", type=int, default=None, help="workdir step (default: the latest complete one)"
  )
  b.add_argument("--output", required=True)
  args = parser.parse_args(argv)
  try:
    if args.cmd == "hf-to-jax":
      model, heads = import_hf(args.hf, seed=args.seed)
      checkpoints.save_model(args.output, model)
      what = f"heads from {HEADS_FILE}" if heads else "backbone imported; heads freshly initialised"
      print(f"wrote {args.output} ({what})")
    else:
      model = checkpoints.load_model(args.checkpoint, step=args.step)
      export_hf(model, args.output)
      print(
        f"wrote {args.output}: config.json, {HF_WEIGHTS} (HubertModel), {HEADS_FILE}, "
        f"{MERT_CONFIG_FILE}"
      )
  except (ValueError, FileNotFoundError, ImportError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
