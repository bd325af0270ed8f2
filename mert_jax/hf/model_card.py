"""The README.md model card of an export: ``gather`` collects the facts (model config, parameter
counts, and from a training workdir: the data manifest's teacher and hours, the steps and the last
logged losses, probe scores), ``render`` turns them into Markdown with Hub YAML front matter.

Facts that cannot be known (a model checkpoint holds no training history; a workdir whose data
folder is gone) are rendered as "unknown", never guessed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from etils import epath

from data_pipeline.default_corpus import corpus_dir
from data_pipeline.manifest import load_manifest
from mert_jax import workdir_files
from mert_jax.checkpointing import model_checkpoint
from mert_jax.hf.export_files import (
  HEADS_FILE,
  HF_WEIGHTS,
  MERT_CONFIG_FILE,
  PREPROCESSOR_FILE,
)
from mert_jax.hf.hub import HUB_ID
from mert_jax.model.mert import MERTModel, count_params

TAGS = ("music", "audio", "mert", "hubert", "self-supervised")
MAX_PROBE_ROWS = 40
# The logged training metrics the card reports, in this order (accuracy: mean over codebooks).
LOSS_KEYS = ("loss", "loss_codes", "loss_cqt", "accuracy")


@dataclasses.dataclass(frozen=True)
class CardInfo:
  """What the model card states. None / empty: unknown."""

  title: str
  load_id: str  # what the snippet passes to from_pretrained (Hub id or folder)
  hidden_size: int
  num_layers: int
  num_heads: int
  ffn_size: int
  layer_norm_first: bool
  conv_layers: int
  backbone_params: int
  head_params: int
  sample_rate: int
  frame_stride: int
  num_codebooks: int  # of the pretraining heads
  codebook_size: int
  teacher: str | None = None
  data: str | None = None  # where the facts below came from
  data_hours: float | None = None
  data_files: int | None = None
  steps: int | None = None
  losses: dict[str, float] = dataclasses.field(default_factory=dict)
  losses_step: int | None = None
  init_from: str | None = None
  probe: tuple[tuple[str, str], ...] = ()  # (task / metric, value)
  source: str | None = None  # the checkpoint or workdir exported
  notes: tuple[str, ...] = ()  # why a fact is unknown

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.frame_stride


def _human(n: int) -> str:
  for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
    if n >= div:
      return f"{n / div:.3g}{unit}"
  return str(n)


def _num(v: float) -> str:
  return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def render(info: CardInfo) -> str:
  """The model card (Markdown with YAML front matter) of ``info``; a pure function."""
  norm = "pre-LN" if info.layer_norm_first else "post-LN"
  fr = f"{info.frame_rate:g}"
  tags = "\n".join(f"- {t}" for t in TAGS)
  lines = [
    "---",
    "library_name: transformers",
    "# license: TODO set the license of these weights (and check the training data's terms),",
    "# e.g. `license: cc-by-nc-4.0` as the published MERT models; then uncomment.",
    "tags:",
    tags,
    "---",
    "",
    f"# {info.title}",
    "",
    "A MERT-style self-supervised music audio model (HuBERT architecture, masked prediction of "
    "acoustic-teacher codes plus CQT reconstruction), trained with mert_jax (JAX/Flax) and "
    "exported as a stock `transformers` `HubertModel`: no remote code is needed.",
    "",
    "## Model",
    "",
    "| | |",
    "|---|---|",
    f"| architecture | HubertModel: {info.conv_layers}-layer conv feature extractor (stride "
    f"{info.frame_stride}), {info.num_layers} transformer layers ({norm}), hidden "
    f"{info.hidden_size}, {info.num_heads} heads, FFN {info.ffn_size} |",
    f"| parameters | backbone {info.backbone_params:,} (`{HF_WEIGHTS}`); pretraining heads "
    f"{info.head_params:,} (`{HEADS_FILE}`) |",
    f"| sample rate | {info.sample_rate} Hz, mono |",
    f"| frame rate | {fr} Hz (one {info.hidden_size}-d vector per {info.frame_stride} samples) |",
    f"| hidden states | {info.num_layers + 1} (the encoder input + each layer's output) |",
    f"| pretraining heads | {info.num_codebooks} codebooks x {info.codebook_size} codes |",
    "",
    "## Training",
    "",
    "| | |",
    "|---|---|",
  ]
  unknown = "unknown"
  lines.append(f"| teacher | {info.teacher or unknown} |")
  if info.teacher:
    lines.append(f"| codebooks | {info.num_codebooks} x {info.codebook_size} |")
  else:
    heads = f"{info.num_codebooks} x {info.codebook_size}"
    lines.append(f"| codebooks | {unknown} (the heads predict {heads}) |")
  if info.data_hours is not None:
    files = f", {info.data_files} files" if info.data_files is not None else ""
    lines.append(f"| data | {info.data_hours:.2f} hours{files} (`{info.data}`) |")
  else:
    lines.append(f"| data | {unknown} |")
  lines.append(f"| steps trained | {info.steps if info.steps is not None else unknown} |")
  if info.init_from:
    lines.append(f"| initialised from | `{info.init_from}` |")
  if info.losses:
    terms = ", ".join(f"{k} {_num(v)}" for k, v in info.losses.items())
    lines.append(f"| last logged training metrics (step {info.losses_step}) | {terms} |")
  else:
    lines.append(f"| last logged training metrics | {unknown} |")
  if info.source:
    lines.append(f"| exported from | `{info.source}` |")
  for note in info.notes:
    lines += ["", f"Note: {note}"]
  if info.probe:
    lines += ["", "## Probe scores", "", "| task / metric | score |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.probe]
  lines += [
    "",
    "## How to use",
    "",
    "```python",
    "from transformers import AutoFeatureExtractor, AutoModel",
    "",
    f'processor = AutoFeatureExtractor.from_pretrained("{info.load_id}")',
    f'model = AutoModel.from_pretrained("{info.load_id}")',
    f'inputs = processor(audio, sampling_rate={info.sample_rate}, return_tensors="pt")',
    "hidden = model(**inputs, output_hidden_states=True).hidden_states",
    "```",
    "",
    f"`audio` is a mono float waveform at {info.sample_rate} Hz (resample first); `hidden` holds "
    f"{info.num_layers + 1} tensors of shape (batch, frames, {info.hidden_size}) at {fr} frames "
    "per second. Downstream probes usually pick or average layers.",
    "",
    "## Files",
    "",
    f"- `config.json`, `{HF_WEIGHTS}`: the backbone, a `transformers` `HubertModel`",
    f"- `{PREPROCESSOR_FILE}`: `Wav2Vec2FeatureExtractor` at {info.sample_rate} Hz, as in the "
    "published m-a-p/MERT-v1 models",
    f"- `{HEADS_FILE}`: the pretraining heads (final projection, label embeddings, CQT head), "
    "needed only to continue pretraining",
    f"- `{MERT_CONFIG_FILE}`: the full mert_jax model config; "
    "`python -m mert_jax.cli.convert hf-to-jax --hf=FOLDER --output=CKPT` restores the "
    "mert_jax model with its heads, and `--config.init_from=FOLDER` starts a run from it",
    "",
  ]
  return "\n".join(lines)


# --------------------------------------------------------------------------- gathering


def _read_json(path: epath.Path) -> Any:
  return json.loads(path.read_text())


def last_logged(metrics_file: str | os.PathLike, max_step: int | None = None) -> dict[str, Any]:
  """The last row of a metrics.jsonl that holds a training ``loss`` (at or before ``max_step``);
  {} when there is none. Unreadable lines (a torn last write) are skipped."""
  p = epath.Path(metrics_file)
  if not p.exists():
    return {}
  last: dict[str, Any] = {}
  for line in p.read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if not isinstance(row, dict) or "loss" not in row:
      continue
    if max_step is not None and int(row.get("step", 0)) > max_step:
      continue
    last = row
  return last


def _losses(row: dict[str, Any]) -> dict[str, float]:
  out = {}
  for k in LOSS_KEYS:
    v = row.get(k)
    if isinstance(v, list) and v:
      v = sum(v) / len(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
      out[k] = float(v)
  return out


def probe_rows(results: Any, prefix: str = "") -> list[tuple[str, str]]:
  """(name, value) rows of the numbers in a probe results.json, whatever its nesting: dicts
  of task -> score or task -> {metric: score}, or a list of rows naming their ``task``."""
  rows: list[tuple[str, str]] = []
  if isinstance(results, bool):
    return rows
  if isinstance(results, (int, float)):
    return [(prefix or "score", _num(float(results)))]
  if isinstance(results, dict):
    for k, v in results.items():
      rows += probe_rows(v, f"{prefix} / {k}" if prefix else str(k))
  elif isinstance(results, list):
    for i, item in enumerate(results):
      name = item.get("task", item.get("name")) if isinstance(item, dict) else None
      if isinstance(item, dict) and name is not None:
        item = {k: v for k, v in item.items() if k not in ("task", "name")}
      label = str(name) if name is not None else str(i)
      rows += probe_rows(item, f"{prefix} / {label}" if prefix else label)
  return rows[:MAX_PROBE_ROWS]


def _teacher(t: dict[str, Any]) -> str:
  parts = [str(t.get("name", "unknown"))]
  for key in ("source", "features"):
    if t.get(key):
      parts.append(str(t[key]))
  if t.get("bandwidth"):
    parts.append(f"{t['bandwidth']} kbps")
  return ", ".join(parts)


def _workdir_facts(
  workdir: str, model: MERTModel, step: int | None
) -> tuple[dict[str, Any], list[str]]:
  facts: dict[str, Any] = {}
  notes: list[str] = []
  wd = epath.Path(workdir)
  if step is None:
    try:
      step = int(model_checkpoint.workdir_state_path(workdir, None).parent.name)
    except (FileNotFoundError, ValueError):
      step = None
  facts["steps"] = step
  row = last_logged(wd / workdir_files.METRICS, step)
  if row:
    facts["losses"], facts["losses_step"] = _losses(row), row.get("step")
  # The data: config.json's data.dir, or the embedded corpus prepared under the workdir.
  try:
    config = _read_json(wd / workdir_files.CONFIG)
  except (OSError, ValueError):
    config = {}
  data_dir = (config.get("data") or {}).get("dir")
  if not data_dir:
    cfg = model.cfg
    root = os.path.join(workdir, workdir_files.DATA)
    data_dir = corpus_dir(root, cfg.num_codebooks, cfg.codebook_size)
  try:
    manifest = load_manifest(data_dir)
  except (OSError, ValueError) as e:
    notes.append(f"teacher and data unknown: the training data manifest could not be read ({e})")
  else:
    facts["teacher"] = _teacher(manifest.get("teacher") or {})
    facts["data"] = data_dir
    facts["data_hours"] = manifest.get("total_hours")
    facts["data_files"] = manifest.get("num_used_files")
  objective = config.get("objective") or {}
  if objective.get("targets") == "bestrq":  # the codes came from the step, not the data's teacher
    facts["teacher"] = (
      f"BEST-RQ (random-projection quantizer on {objective.get('bestrq_input', 'mel')}, "
      f"{objective.get('bestrq_norm', 'corpus')} statistics, seed {objective.get('bestrq_seed')})"
    )
  if objective.get("cqt_target", "raw") != "raw":
    facts["teacher"] = f"{facts.get('teacher', 'unknown')}; CQT target {objective['cqt_target']}"
  try:
    facts["init_from"] = _read_json(wd / workdir_files.INIT_FROM).get("source")
  except (OSError, ValueError, AttributeError):
    pass
  try:
    rows = probe_rows(_read_json(wd / workdir_files.PROBE_RESULTS))
  except (OSError, ValueError):
    rows = []
  facts["probe"] = tuple(rows)
  return facts, notes


def gather(
  model: MERTModel,
  *,
  checkpoint: str | os.PathLike | None = None,
  step: int | None = None,
  load_id: str | None = None,
  title: str | None = None,
) -> CardInfo:
  """The card facts of ``model``; a training workdir ``checkpoint`` (exported at ``step``, default
  its latest) adds the teacher, data, steps, last losses and probe scores. ``load_id``: what the
  usage snippet loads (a Hub id or the folder; default a placeholder); ``title``: default the
  Hub id, else "MERT" and the backbone size."""

  cfg = model.cfg
  backbone = count_params(model.backbone)
  if title is None:
    title = load_id if load_id and HUB_ID.match(load_id) else f"MERT {_human(backbone)}"
  facts: dict[str, Any] = {}
  notes: list[str] = []
  if checkpoint is not None and model_checkpoint.is_workdir(checkpoint):
    facts, notes = _workdir_facts(os.fspath(checkpoint), model, step)
  elif checkpoint is not None:
    notes.append("exported from a model checkpoint, which records no training history")
  return CardInfo(
    title=title,
    load_id=load_id or "path/to/this/folder",
    hidden_size=cfg.hidden_size,
    num_layers=cfg.num_layers,
    num_heads=cfg.num_heads,
    ffn_size=cfg.ffn_size,
    layer_norm_first=cfg.layer_norm_first,
    conv_layers=len(cfg.conv_layers),
    backbone_params=backbone,
    head_params=count_params(model.heads),
    sample_rate=cfg.sample_rate,
    frame_stride=cfg.frame_stride,
    num_codebooks=cfg.num_codebooks,
    codebook_size=cfg.codebook_size,
    source=os.fspath(checkpoint) if checkpoint is not None else None,
    notes=tuple(notes),
    **facts,
  )
