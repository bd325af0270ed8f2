"""Pictures of the fixed validation clip (mert_jax/train/eval_pictures.py): the arrays against the
objective's own functions, their determinism, the rendered images, and the TensorBoard events."""

from __future__ import annotations

import glob
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

from data_pipeline import reader as reader_lib
from data_pipeline.tfrecord import read_records
from mert_jax.model.conv_extractor import num_frames
from mert_jax.objective.loss import cqt_target_fn, pretraining_loss
from mert_jax.objective.masking import compute_mask
from mert_jax.train import eval_pictures as ep
from mert_jax.train import input as input_lib
from mert_jax.train import state as state_lib
from mert_jax.train.step import bind
from tests.train.helpers import tiny

# fp32 compute (the pictures are compared with the loss's metrics) on a mesh that shards the
# parameters (fsdp and tensor axes): the clip is replicated over all 8 devices.
SHARDED = {"model.dtype": "float32", "mesh": [2, 2, 2]}
LOG_STEP = 7


@pytest.fixture(scope="module")
def run(data_dir: str) -> dict[str, Any]:
  """A tiny setup, its initial (sharded) parameters, EvalPictures and one computation."""
  c = tiny(data_dir, **SHARDED)
  setup = state_lib.build(c)
  params = setup.init()["params"]
  rcfg = input_lib.reader_config(c, 1)
  pics = ep.EvalPictures(setup, data_dir, reader_lib.load_manifest(data_dir), rcfg)
  return {
    "config": c,
    "setup": setup,
    "params": params,
    "rcfg": rcfg,
    "eval_pictures": pics,
    "pictures": pics.compute(params),
  }


def test_the_clip_is_the_first_evaluation_crop(run, data_dir):
  """fixed_clips = the first crop evaluate.py reads (valid split, seed 0, no shuffle), whatever the
  batch size."""
  c = run["config"]
  clip = ep.fixed_clips(data_dir, run["rcfg"], 1)
  ecfg = reader_lib.ReaderConfig(
    crop_samples=c.crop_samples, batch_size=c.batch_size, shuffle_window=1, seed=0
  )
  first = next(iter(reader_lib.make_dataset(data_dir, ecfg, split="valid")[0]))
  assert clip["audio"].shape == (1, c.crop_samples)
  np.testing.assert_array_equal(clip["audio"][0], first["audio"][0])
  np.testing.assert_array_equal(clip["labels"][0], first["labels"][0])


def test_arrays_are_the_objectives(run, data_dir):
  """Shapes; the mask is compute_mask's for the key; the target is the configured CQT of the clean
  clip; the teacher codes are the labels; and the predicted codes and CQT give the accuracy and
  CQT MSE of pretraining_loss (same key, deterministic) computed on one device from host params."""
  setup, p = run["setup"], run["pictures"]
  mcfg, ocfg = setup.mcfg, setup.ocfg
  clip = ep.fixed_clips(data_dir, run["rcfg"], 1)
  t = num_frames(run["config"].crop_samples, mcfg.conv_layers)
  k = mcfg.num_codebooks
  assert p.cqt_target.shape == p.cqt_pred.shape == (1, t, mcfg.cqt_bins)
  assert p.mask.shape == (1, t) and p.mask.dtype == bool
  assert p.pred_codes.shape == p.teacher_codes.shape == (1, t, k)
  assert 0 < p.mask.sum() < t
  assert p.pred_codes.min() >= -mcfg.num_special_labels
  assert p.pred_codes.max() < mcfg.codebook_size

  key = jax.random.key(ep.PICTURES_KEY)
  k_mask = jax.random.split(key, 3)[0]
  want_mask = compute_mask(
    k_mask, 1, t, mask_prob=ocfg.mask_prob, mask_length=ocfg.mask_length, min_masks=ocfg.min_masks
  )
  np.testing.assert_array_equal(p.mask, np.asarray(want_mask))
  want_cqt = np.asarray(cqt_target_fn(mcfg, ocfg)(clip["audio"]))[:, :t]
  np.testing.assert_allclose(p.cqt_target, want_cqt, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(p.teacher_codes, np.moveaxis(clip["labels"][:, :, :t], 1, 2))

  host_params = jax.device_get(run["params"])
  metrics = jax.jit(
    lambda params, batch: pretraining_loss(
      bind(setup.graphdef, setup.template, params), batch, key, cfg=ocfg, deterministic=True
    )[1]
  )(host_params, jax.tree.map(jnp.asarray, clip))
  metrics = jax.device_get(metrics)
  m = p.mask[0]
  assert metrics["num_masked"] == m.sum()
  correct = np.sum(p.pred_codes[0][m] == p.teacher_codes[0][m], axis=0)
  np.testing.assert_array_equal(correct, metrics["correct"])
  cqt_mse = np.mean(np.square(p.cqt_pred[0][m] - p.cqt_target[0][m]))
  np.testing.assert_allclose(cqt_mse, metrics["cqt_mse"], rtol=1e-4)


def test_deterministic_and_compiled_once(run):
  again = run["eval_pictures"].compute(run["params"])
  for name in ("cqt_target", "cqt_pred", "mask", "pred_codes", "teacher_codes"):
    np.testing.assert_array_equal(getattr(again, name), getattr(run["pictures"], name), name)
  assert run["eval_pictures"].compiles == 1


def test_code_usage_counts_masked_frames_only():
  """Hand-made codes: 2 specials, 3 codes, one codebook; the unmasked frame is not counted."""
  pictures = ep.Pictures(
    cqt_target=np.zeros((1, 4, 2), np.float32),
    cqt_pred=np.zeros((1, 4, 2), np.float32),
    mask=np.array([[True, True, True, False]]),
    pred_codes=np.array([[[-1], [2], [2], [0]]], np.int32),
    teacher_codes=np.array([[[0], [2], [1], [0]]], np.int32),
    num_special_labels=2,
    codebook_size=3,
  )
  (usage,) = ep.code_usage(pictures)
  np.testing.assert_array_equal(usage.predicted, [0, 1, 0, 0, 2])  # codes -2, -1, 0, 1, 2
  np.testing.assert_array_equal(usage.teacher, [1, 1, 1])
  assert usage.accuracy == pytest.approx(1 / 3)


def test_rendered_images(run):
  p = run["pictures"]
  for img in (
    ep.render_cqt_figure(p.cqt_target[0], p.cqt_pred[0], p.mask[0]),
    ep.render_code_usage(ep.code_usage(p), p.num_special_labels),
  ):
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 10  # not a blank canvas


def events(logdir: str) -> list[event_pb2.Event]:
  """Every event of the TensorBoard event files under ``logdir`` (TFRecord-framed protos)."""
  out = []
  for path in sorted(glob.glob(f"{logdir}/events.out.tfevents.*")):
    for payload in read_records(path):
      out.append(event_pb2.Event.FromString(payload))
  return out


def test_log_writes_images_and_histograms(run, tmp_path):
  pics, setup = run["eval_pictures"], run["setup"]
  assert pics.log(None, run["params"], LOG_STEP).mask.shape[0] == ep.DEFAULT_CLIPS  # no writer
  writer = SummaryWriter(str(tmp_path))
  p = pics.log(writer, run["params"], LOG_STEP)
  writer.close()
  values = {v.tag: v for e in events(str(tmp_path)) if e.step == LOG_STEP for v in e.summary.value}
  k = setup.mcfg.num_codebooks
  images = {ep.CQT_TAG.format(0), ep.USAGE_TAG}
  histograms = {ep.PREDICTED_HIST_TAG.format(i) for i in range(k)} | {
    ep.TEACHER_HIST_TAG.format(i) for i in range(k)
  }
  assert set(values) == images | histograms
  for tag in images:
    assert values[tag].HasField("image") and values[tag].image.colorspace == 3
  cqt_img = ep.render_cqt_figure(p.cqt_target[0], p.cqt_pred[0], p.mask[0])
  assert (values[ep.CQT_TAG.format(0)].image.height, values[ep.CQT_TAG.format(0)].image.width) == (
    cqt_img.shape[:2]
  )
  masked = int(p.mask.sum())
  for i in range(k):
    pred = values[ep.PREDICTED_HIST_TAG.format(i)].histo
    teacher = values[ep.TEACHER_HIST_TAG.format(i)].histo
    assert pred.num == teacher.num == masked
    assert teacher.sum == pytest.approx(float(p.teacher_codes[0][p.mask[0], i].sum()))


def test_no_valid_split_is_refused(run, data_dir):
  with pytest.raises(ValueError, match="no valid split"):
    ep.EvalPictures(run["setup"], data_dir, {"splits": {"train": {}}}, run["rcfg"])
