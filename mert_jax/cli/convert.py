"""Convert between mert_jax checkpoints and Hugging Face folders (mert_jax/hf/convert.py).

python -m mert_jax.cli.convert jax-to-hf --checkpoint=CKPT_OR_WORKDIR [--step=N] --output=HF_DIR
    [--overwrite] [--push-to-hub=OWNER/NAME [--private] [--commit-message=MSG]]
python -m mert_jax.cli.convert hf-to-jax --hf=HF_DIR_OR_HUB_ID [--revision=REV] --output=CKPT_DIR
python -m mert_jax.cli.convert hf-to-jax --fairseq=MERT-v1-95M_fairseq.pt --output=CKPT_DIR

jax-to-hf writes config.json + model.safetensors (transformers HubertModel, no remote code),
preprocessor_config.json (as in the published m-a-p/MERT-v1 folders), a README.md model card
(from a training workdir: teacher, data hours, steps, last losses, probe scores),
mert_heads.safetensors and mert_jax_config.json. The folder is built beside HF_DIR and renamed
into place when complete; an existing non-empty HF_DIR is refused unless --overwrite (which only
replaces a model folder, and only once the new one is whole). --push-to-hub uploads the finished
folder. hf-to-jax reads a local folder or a Hub id such as m-a-p/MERT-v1-95M (downloading only
configs and weights, never remote code). Checkpoints, workdirs, folders and outputs may be in a
bucket (gs://BUCKET/PATH, the gcs extra): an export there is built locally and uploaded,
config.json last; an output bucket that does not exist or refuses writes is refused first.
"""

from __future__ import annotations

import argparse
import sys

from mert_jax.checkpointing import model_checkpoint
from mert_jax.files import storage
from mert_jax.hf import hub, model_card
from mert_jax.hf.convert import (
  HEADS_FILE,
  HF_WEIGHTS,
  MERT_CONFIG_FILE,
  PREPROCESSOR_FILE,
  README_FILE,
  check_export_output,
  export_hf,
  import_hf,
)
from mert_jax.hf.fairseq import import_fairseq
from mert_jax.terminal.cli_help import ArgumentParser, HelpFormatter, RawHelpFormatter, prog
from mert_jax.terminal.progress import stage


def build_parser() -> argparse.ArgumentParser:
  """The command line of both directions."""
  parser = ArgumentParser(
    prog=prog("mert_jax.cli.convert"), description=__doc__, formatter_class=RawHelpFormatter
  )
  sub = parser.add_subparsers(
    dest="cmd",
    required=True,
    metavar="{hf-to-jax,jax-to-hf}",
    help="the direction; COMMAND --help lists its options",
  )
  a = sub.add_parser(
    "hf-to-jax",
    help="HF Hubert/MERT folder, Hub id or MERT fairseq checkpoint -> mert_jax model checkpoint",
    description="Import a Hugging Face Hubert/MERT model (local folder or Hub id) or a MERT "
    "fairseq checkpoint as a mert_jax model checkpoint (model_config.json + params/).",
    formatter_class=HelpFormatter,
  )
  source = a.add_mutually_exclusive_group(required=True)
  source.add_argument(
    "--hf",
    metavar="DIR_OR_HUB_ID",
    help="a Hugging Face model folder (config.json + model.safetensors or pytorch_model.bin), "
    "or a Hub id such as m-a-p/MERT-v1-95M (downloaded to the Hugging Face cache; configs and "
    "weights only, never remote code; offline, a cached copy is used)",
  )
  source.add_argument(
    "--fairseq",
    metavar="FILE.pt",
    help="a MERT fairseq checkpoint (e.g. MERT-v1-95M_fairseq.pt): backbone and pretraining heads, "
    "read without running pickled code",
  )
  a.add_argument(
    "--revision",
    default=None,
    metavar="REV",
    help="branch, tag or commit of a Hub id (default: the repository's main branch)",
  )
  a.add_argument(
    "--output", required=True, metavar="DIR", help="the mert_jax model checkpoint folder to write"
  )
  a.add_argument(
    "--overwrite", action="store_true", help="replace the parameters of an existing checkpoint"
  )
  a.add_argument(
    "--seed", type=int, default=0, metavar="N", help="init seed for heads absent from the folder"
  )
  b = sub.add_parser(
    "jax-to-hf",
    help="mert_jax checkpoint or training workdir -> HF folder (+ model card, optional upload)",
    description="Export a mert_jax model to a Hugging Face folder that transformers' AutoModel "
    "and AutoFeatureExtractor load, with a README.md model card; optionally upload it.",
    formatter_class=HelpFormatter,
  )
  b.add_argument(
    "--checkpoint",
    required=True,
    metavar="DIR",
    help="a model checkpoint (hf-to-jax or save_model output) or a training workdir; a "
    "workdir's card also reports its data, steps, last losses and probe scores",
  )
  b.add_argument(
    "--step",
    type=int,
    default=None,
    metavar="N",
    help="workdir step (default: the latest complete one)",
  )
  b.add_argument(
    "--output",
    required=True,
    metavar="DIR",
    help="the folder to write; it must not exist or be empty, unless --overwrite",
  )
  b.add_argument(
    "--overwrite",
    action="store_true",
    help="replace an existing model folder at --output (one holding config.json), once the new "
    "export is complete",
  )
  b.add_argument(
    "--push-to-hub",
    metavar="OWNER/NAME",
    default=None,
    help="after writing --output, create this Hub model repository if needed and upload the "
    "folder (needs huggingface_hub and a token: `hf auth login` or HF_TOKEN)",
  )
  b.add_argument(
    "--private",
    action="store_true",
    help="with --push-to-hub: create the repository private (an existing one keeps its setting)",
  )
  b.add_argument(
    "--commit-message",
    default=None,
    metavar="MSG",
    help=f"with --push-to-hub: the commit message (default: {hub.DEFAULT_COMMIT_MESSAGE!r})",
  )
  return parser


def _refuse_non_empty(path: str, overwrite: bool) -> None:
  if storage.list_names(path) and not overwrite:
    raise FileExistsError(f"{path} exists and is not empty; pass --overwrite to replace it")


def _check_remote_output(path: str) -> None:
  """A bucket output that does not exist or refuses writes, refused before anything is read."""
  if storage.is_remote(path):
    storage.check_writable_folder(path, "--output")


def _hf_to_jax(args: argparse.Namespace) -> None:
  if args.fairseq and not storage.isfile(args.fairseq):  # before torch is imported
    raise FileNotFoundError(f"--fairseq={args.fairseq}: no such file")
  _refuse_non_empty(args.output, args.overwrite)
  _check_remote_output(args.output)
  if args.fairseq:
    with stage(f"reading {args.fairseq}", sys.stdout):
      model, what = import_fairseq(args.fairseq, seed=args.seed)
  else:
    source = hub.resolve_hf_dir(args.hf, args.revision)
    with stage(f"reading {source}", sys.stdout):
      model, heads = import_hf(source, seed=args.seed)
    what = f"heads from {HEADS_FILE}" if heads else "backbone imported; heads freshly initialised"
  with stage(f"writing {args.output}", sys.stdout):
    model_checkpoint.save_model(args.output, model, overwrite=args.overwrite)
  print(f"wrote {args.output} ({what})")


def _jax_to_hf(args: argparse.Namespace) -> None:
  if not args.push_to_hub and (args.private or args.commit_message is not None):
    raise ValueError("--private and --commit-message apply only with --push-to-hub")
  api = None
  if args.push_to_hub:  # a bad id or a missing huggingface_hub fails before the export
    hub.check_repo_id(args.push_to_hub)
    api = hub.make_api()
  check_export_output(args.output, overwrite=args.overwrite)
  _check_remote_output(args.output)
  with stage(f"reading {args.checkpoint}", sys.stdout):
    model = model_checkpoint.load_model(args.checkpoint, step=args.step)
  info = model_card.gather(
    model, checkpoint=args.checkpoint, step=args.step, load_id=args.push_to_hub or args.output
  )
  with stage(f"writing {args.output}", sys.stdout):
    export_hf(model, args.output, overwrite=args.overwrite, card=model_card.render(info))
  print(
    f"wrote {args.output}: config.json, {HF_WEIGHTS} (HubertModel), {PREPROCESSOR_FILE}, "
    f"{README_FILE}, {HEADS_FILE}, {MERT_CONFIG_FILE}"
  )
  if args.push_to_hub:
    url = hub.push_folder(
      args.output,
      args.push_to_hub,
      private=args.private,
      commit_message=args.commit_message,
      api=api,
    )
    print(f"pushed {args.output} to {url}")


def main(argv: list[str] | None = None) -> int:
  """Runs the command; a bad input is one ``error: ...`` line on stderr and exit status 1."""
  args = build_parser().parse_args(argv)
  try:
    if args.cmd == "hf-to-jax":
      _hf_to_jax(args)
    else:
      _jax_to_hf(args)
  except (ValueError, OSError, ImportError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
