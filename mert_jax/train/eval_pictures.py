"""Pictures of a fixed validation clip for TensorBoard: what the model has learned, at a glance.

At each evaluation, ``EvalPictures.log(tb_writer, params, step)`` runs the model on the same
clip(s), the first ``clips`` crops of the valid split (the crops evaluation reads first), masked
and mixed with one fixed key, and writes

  image     cqt/clip{i}            CQT target (clean audio) over the CQT head's prediction, in dB on
                                   one colour scale, above the strip of masked frames
  image     codes/usage            per codebook: counts of the predicted (argmax) and teacher codes
                                   on the masked frames
  histogram codes/predicted/k{k}   predicted codes of codebook k on the masked frames
  histogram codes/teacher/k{k}     the teacher's codes there (fixed: the reference)

With one clip (the default) mixup is a no-op: it draws noise from the other clips of the batch.
Predicted codes are ``argmax - num_special_labels`` over all of a codebook's labels, as the
accuracy metric counts them: a negative code is a special label (always wrong).

The computation is one ``jax.jit`` over the run's sharded parameters (``setup.param_shardings``)
with the clip replicated on the mesh: it runs on every process (SPMD; the parameters may live on
other hosts, so no process can gather them) and returns replicated arrays that every process can
read. Only the process holding a writer (process 0) writes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data_pipeline import reader as reader_lib
from mert_jax.config import ModelConfig, ObjectiveConfig
from mert_jax.model.mert import MERTModel
from mert_jax.objective.loss import cosine_logits, masked_forward
from mert_jax.train.evaluate import EVAL_KEY_OFFSET, EVAL_SEED
from mert_jax.train.state import TrainSetup
from mert_jax.train.step import bind

DEFAULT_CLIPS = 1  # clips pictured at every evaluation (one forward pass of this many clips)
PICTURES_KEY = EVAL_KEY_OFFSET  # masking / mixup key: the one of evaluation batch 0

# Rendering: magnitudes in dB, 20 log10(max(x, AMIN)) (a negative prediction shows as silence),
# shown DYNAMIC_RANGE_DB below the target's peak (the prediction on the target's scale).
AMIN = 1e-5
DYNAMIC_RANGE_DB = 80.0
DB_PER_AMPLITUDE = 20.0
FIG_WIDTH_IN = 10.0
CQT_PANEL_HEIGHT_IN = 2.8
MASK_PANEL_HEIGHT_IN = 0.6
USAGE_PANEL_HEIGHT_IN = 1.3
FIG_DPI = 100
CQT_CMAP = "magma"
MASK_CMAP = "gray_r"  # black = masked
TEACHER_COLOR = "tab:blue"
PREDICTED_COLOR = "tab:red"

CQT_TAG = "cqt/clip{}"
USAGE_TAG = "codes/usage"
PREDICTED_HIST_TAG = "codes/predicted/k{}"
TEACHER_HIST_TAG = "codes/teacher/k{}"


@dataclasses.dataclass
class Pictures:
  """Host arrays of one pictured batch: B clips, T frames, F CQT bins, K codebooks."""

  cqt_target: np.ndarray  # (B, T, F) float32 CQT magnitudes of the clean audio
  cqt_pred: np.ndarray  # (B, T, F) float32 CQT head output
  mask: np.ndarray  # (B, T) bool, True = masked frame
  pred_codes: np.ndarray  # (B, T, K) int32, argmax label - num_special_labels (< 0: a special)
  teacher_codes: np.ndarray  # (B, T, K) int32 in [0, codebook_size)
  num_special_labels: int
  codebook_size: int


@dataclasses.dataclass
class CodeUsage:
  """One codebook's codes on the masked frames of a batch."""

  predicted: np.ndarray  # (S + C,) int64 counts of codes -S .. C - 1 (S specials, C codes)
  teacher: np.ndarray  # (C,) int64 counts of codes 0 .. C - 1
  accuracy: float  # fraction of masked frames whose predicted code is the teacher's


def fixed_clips(
  data_dir: str, rcfg: reader_lib.ReaderConfig, n: int = DEFAULT_CLIPS
) -> dict[str, np.ndarray]:
  """The first ``n`` crops of the valid split, at evaluation's fixed positions (seed EVAL_SEED, no
  shuffle), read in full by every process: {"audio": (n, L) float32, "labels": (n, K, T_lab)}."""
  cfg = dataclasses.replace(rcfg, shuffle_window=1, seed=EVAL_SEED, batch_size=n)
  return next(iter(reader_lib.make_dataset(data_dir, cfg, split="valid")[0]))


def compute_pictures(
  model: MERTModel, batch: dict[str, jax.Array], key: jax.Array, ocfg: ObjectiveConfig
) -> dict[str, jax.Array]:
  """The pictured arrays of ``batch`` (audio (B, L), labels (B, K, T_lab)): the objective's own
  ``masked_forward`` (as ``pretraining_loss`` sees the batch), deterministic; jittable. Keys as the
  fields of ``Pictures``."""
  mcfg: ModelConfig = model.cfg
  fwd = masked_forward(
    model, batch["audio"], key, cfg=ocfg, deterministic=True, labels=batch["labels"]
  )
  x = fwd.out.last_hidden_state  # (B, T, D)
  z = model.heads.codebook_projections(x)  # (B, T, K, d)
  logits = jax.vmap(
    lambda zk, ek: cosine_logits(zk, ek, ocfg.logit_temp), in_axes=(2, 0), out_axes=2
  )(z, model.heads.label_embeddings())  # (B, T, K, C_k)
  return {
    "cqt_target": fwd.cqt,
    "cqt_pred": model.heads.cqt(x),
    "mask": fwd.mask,
    "pred_codes": jnp.argmax(logits, axis=-1).astype(jnp.int32) - mcfg.num_special_labels,
    "teacher_codes": fwd.codes,
  }


def to_db(x: np.ndarray) -> np.ndarray:
  """Magnitudes -> dB, 20 log10(max(x, AMIN)); same shape, float32."""
  return (DB_PER_AMPLITUDE * np.log10(np.maximum(x, AMIN))).astype(np.float32)


def figure_to_rgb(fig: Figure) -> np.ndarray:
  """Renders a matplotlib figure with Agg: (H, W, 3) uint8."""
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.array(canvas.buffer_rgba())[..., :3]


def render_cqt_figure(target: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """One clip: target (T, F) and pred (T, F) magnitudes, mask (T,) bool -> (H, W, 3) uint8 image:
  target and prediction (time across, bins up, dB on the target's scale) over the mask strip."""
  t = target.shape[0]
  masked = mask.astype(bool)
  mse = float(np.mean(np.square(pred[masked] - target[masked]))) if masked.any() else float("nan")
  target_db, pred_db = to_db(target), to_db(pred)
  vmax = float(target_db.max())
  scale = dict(vmin=vmax - DYNAMIC_RANGE_DB, vmax=vmax, cmap=CQT_CMAP)
  fig = Figure(
    figsize=(FIG_WIDTH_IN, 2 * CQT_PANEL_HEIGHT_IN + MASK_PANEL_HEIGHT_IN),
    dpi=FIG_DPI,
    layout="constrained",
  )
  axes = fig.subplots(
    3,
    1,
    sharex=True,
    gridspec_kw=dict(height_ratios=[CQT_PANEL_HEIGHT_IN] * 2 + [MASK_PANEL_HEIGHT_IN]),
  )
  show = dict(origin="lower", aspect="auto", interpolation="nearest")
  image = axes[0].imshow(target_db.T, **show, **scale)
  axes[0].set_title("CQT target (clean audio)")
  axes[1].imshow(pred_db.T, **show, **scale)
  axes[1].set_title(f"CQT head prediction (masked-frame MSE {mse:.4g})")
  for ax in axes[:2]:
    ax.set_ylabel("bin")
  fig.colorbar(image, ax=list(axes[:2]), label="dB")
  axes[2].imshow(masked[None, :].astype(np.float32), vmin=0.0, vmax=1.0, cmap=MASK_CMAP, **show)
  axes[2].set_title(f"mask: {int(masked.sum())} of {t} frames (black)")
  axes[2].set_yticks([])
  axes[2].set_xlabel("frame")
  return figure_to_rgb(fig)


def code_usage(pictures: Pictures) -> list[CodeUsage]:
  """Per codebook (K entries): code counts over the masked frames of every pictured clip."""
  s, c = pictures.num_special_labels, pictures.codebook_size
  pred = pictures.pred_codes[pictures.mask]  # (M, K)
  teacher = pictures.teacher_codes[pictures.mask]
  return [
    CodeUsage(
      predicted=np.bincount(pred[:, k] + s, minlength=s + c),
      teacher=np.bincount(teacher[:, k], minlength=c),
      accuracy=float(np.mean(pred[:, k] == teacher[:, k])) if len(pred) else float("nan"),
    )
    for k in range(pred.shape[1])
  ]


def render_code_usage(usages: list[CodeUsage], num_special_labels: int) -> np.ndarray:
  """One panel per codebook: teacher (filled) and predicted (line) code counts over the codes
  -S .. C - 1 -> (H, W, 3) uint8 image."""
  s = num_special_labels
  fig = Figure(
    figsize=(FIG_WIDTH_IN, USAGE_PANEL_HEIGHT_IN * len(usages)), dpi=FIG_DPI, layout="constrained"
  )
  axes = np.atleast_1d(fig.subplots(len(usages), 1, sharex=True))
  for k, (ax, u) in enumerate(zip(axes, usages)):
    codes = np.arange(-s, len(u.teacher))
    teacher = np.concatenate([np.zeros(s, u.teacher.dtype), u.teacher])
    ax.fill_between(codes, teacher, step="mid", color=TEACHER_COLOR, alpha=0.5, label="teacher")
    ax.step(codes, u.predicted, where="mid", color=PREDICTED_COLOR, lw=0.8, label="predicted")
    ax.set_title(
      f"codebook {k}: accuracy {u.accuracy:.3f}, codes used "
      f"{int(np.count_nonzero(u.predicted))} predicted / {int(np.count_nonzero(u.teacher))} "
      "teacher",
      fontsize="small",
    )
    ax.set_ylabel("frames")
  axes[0].legend(loc="upper right", fontsize="small")
  axes[-1].set_xlabel(f"code (masked frames; < 0: one of the {s} special labels)")
  return figure_to_rgb(fig)


def log_pictures(tb_writer: Any, step: int, pictures: Pictures) -> None:
  """Writes the images and histograms (module docstring) to a tensorboardX ``SummaryWriter``."""
  for i in range(pictures.mask.shape[0]):
    img = render_cqt_figure(pictures.cqt_target[i], pictures.cqt_pred[i], pictures.mask[i])
    tb_writer.add_image(CQT_TAG.format(i), img, step, dataformats="HWC")
  usages = code_usage(pictures)
  img = render_code_usage(usages, pictures.num_special_labels)
  tb_writer.add_image(USAGE_TAG, img, step, dataformats="HWC")
  # Unit bins centred on the integer codes.
  edges = np.arange(-pictures.num_special_labels, pictures.codebook_size + 1) - 0.5
  pred = pictures.pred_codes[pictures.mask]
  teacher = pictures.teacher_codes[pictures.mask]
  for k in range(pred.shape[1]):
    tb_writer.add_histogram(PREDICTED_HIST_TAG.format(k), pred[:, k], step, bins=edges)
    tb_writer.add_histogram(TEACHER_HIST_TAG.format(k), teacher[:, k], step, bins=edges)
  tb_writer.flush()


class EvalPictures:
  """The pictures of a run: loads the fixed clip(s) once, compiles the computation once (at the
  first call); call ``log`` on every process at each evaluation step."""

  def __init__(
    self,
    setup: TrainSetup,
    data_dir: str,
    manifest: dict[str, Any],
    rcfg: reader_lib.ReaderConfig,
    clips: int = DEFAULT_CLIPS,
  ):
    if "valid" not in manifest["splits"]:
      raise ValueError(f"{data_dir}: no valid split to picture")
    self.setup = setup
    host = fixed_clips(data_dir, rcfg, clips)
    replicated = NamedSharding(setup.mesh, PartitionSpec())
    # Every process holds the whole (identical) clip: each supplies its devices' replicas.
    self.batch = {
      k: jax.make_array_from_callback(v.shape, replicated, lambda idx, v=v: v[idx])
      for k, v in host.items()
    }
    self.key = jax.random.key(PICTURES_KEY)
    graphdef, template, ocfg = setup.graphdef, setup.template, setup.ocfg
    self._fn = jax.jit(
      lambda params, batch, key: compute_pictures(
        bind(graphdef, template, params), batch, key, ocfg
      ),
      in_shardings=(setup.param_shardings, replicated, replicated),
      out_shardings=replicated,
    )

  def compute(self, params: Any) -> Pictures:
    """The pictured arrays for ``params`` (the train state's sharded parameters), on the host."""
    out = jax.device_get(self._fn(params, self.batch, self.key))
    mcfg = self.setup.mcfg
    return Pictures(
      **{k: np.asarray(v) for k, v in out.items()},
      num_special_labels=mcfg.num_special_labels,
      codebook_size=mcfg.codebook_size,
    )

  def log(self, tb_writer: Any | None, params: Any, step: int) -> Pictures:
    """Computes (on every process: the parameters are sharded over all of them) and writes to
    ``tb_writer`` when one is given (process 0)."""
    pictures = self.compute(params)
    if tb_writer is not None:
      log_pictures(tb_writer, step, pictures)
    return pictures

  @property
  def compiles(self) -> int:
    """Times the computation was compiled (1 after any number of calls)."""
    return self._fn._cache_size()  # pylint: disable=protected-access


__all__ = [
  "CodeUsage",
  "EvalPictures",
  "Pictures",
  "code_usage",
  "compute_pictures",
  "fixed_clips",
  "log_pictures",
  "render_code_usage",
  "render_cqt_figure",
]
