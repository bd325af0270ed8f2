"""Parameter counts of a MERT size, per module and in total.

python -m mert_jax.cli.params --size=95m        # tiny | 95m | 330m | 1b
"""

from __future__ import annotations

import argparse

from mert_jax.config import MODEL_SIZES, model_config
from mert_jax.model.mert import param_table
from mert_jax.terminal.cli_help import ArgumentParser, prog


def build_parser() -> argparse.ArgumentParser:
  """The command line."""
  parser = ArgumentParser(prog=prog("mert_jax.cli.params"), description=__doc__)
  parser.add_argument(
    "--size", default="95m", choices=list(MODEL_SIZES), help="the model size (mert_jax/config.py)"
  )
  return parser


def main(argv: list[str] | None = None) -> None:
  """Prints the table."""
  args = build_parser().parse_args(argv)
  cfg = model_config(args.size)
  print(
    f"MERT {args.size}: D={cfg.hidden_size} N={cfg.num_layers} H={cfg.num_heads} F={cfg.ffn_size} "
    f"{'pre' if cfg.layer_norm_first else 'post'}-LN, "
    f"K={cfg.num_codebooks} x {cfg.num_labels} labels, "
    f"final_dim={cfg.final_dim}, cqt_bins={cfg.cqt_bins}"
  )
  for name, n in param_table(cfg):
    print(f"  {name:<60s} {n:>14,d}")


if __name__ == "__main__":
  main()
