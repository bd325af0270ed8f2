"""The loss: a hand-computed cross-entropy case, the loss assembly, gradients reaching every
parameter with the extractor's scaled by feature_grad_mult, and clear errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mert_jax.config import ObjectiveConfig, model_config
from mert_jax.model.mert import create_model
from mert_jax.objective.loss import (
  check_label_values,
  codebook_losses,
  masked_forward,
  pretraining_loss,
)

OBJ = ObjectiveConfig(mixup_min_len=1000, mixup_max_len=3000)


def frame_cqt(audio, bins=336):
  """A stand-in CQT (the real one is tested in test_cqt.py): |rFFT| of 320-sample frames, tiled."""
  b, length = audio.shape
  frames = audio[:, : length // 320 * 320].reshape(b, -1, 320)
  spec = jnp.abs(jnp.fft.rfft(jnp.tile(frames, (1, 1, 3)), axis=-1))[..., :bins]
  return jnp.pad(spec, ((0, 0), (0, 2), (0, 0)))


def fairseq_ce(z, emb, target, temp):
  """HuBERT's compute_logits: positive first, negatives = all labels, the duplicate set to -inf."""
  cos = lambda a, b: a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8)
  pos = cos(z, emb[target]) / temp
  negs = np.array([cos(z, e) / temp for e in emb])
  negs[np.all(emb == emb[target], axis=-1)] = -np.inf
  logits = np.concatenate([[pos], negs])
  m = logits.max()
  return -(pos - m - np.log(np.exp(logits - m).sum()))


def test_codebook_ce_matches_hand_computed_fairseq_construction():
  rng = np.random.RandomState(0)
  b, t, k, c, d = 2, 3, 2, 6, 4
  z = rng.randn(b, t, k, d).astype(np.float32)
  emb = rng.rand(k, c, d).astype(np.float32)
  targets = rng.randint(0, c, (b, t, k))
  weights = np.array([[1, 0, 1], [0, 1, 1]], np.float32)
  ce, correct = codebook_losses(
    jnp.asarray(z), jnp.asarray(emb), jnp.asarray(targets), jnp.asarray(weights), 0.1
  )
  for kk in range(k):
    want = sum(
      fairseq_ce(z[i, j, kk], emb[kk], targets[i, j, kk], 0.1)
      for i in range(b)
      for j in range(t)
      if weights[i, j]
    )
    np.testing.assert_allclose(float(ce[kk]), want, rtol=1e-5)
    cos = np.einsum(
      "btd,cd->btc",
      z[:, :, kk] / np.linalg.norm(z[:, :, kk], axis=-1, keepdims=True),
      emb[kk] / np.linalg.norm(emb[kk], axis=-1, keepdims=True),
    )
    assert float(correct[kk]) == ((cos.argmax(-1) == targets[:, :, kk]) * weights).sum()
  # One number by hand: z parallel to the target row, orthogonal to the only other row.
  z1 = jnp.array([[[[1.0, 0.0]]]])
  e1 = jnp.array([[[2.0, 0.0], [0.0, 3.0]]])
  ce1, _ = codebook_losses(z1, e1, jnp.array([[[0]]]), jnp.ones((1, 1)), 0.5)
  # -log(e^2 / (e^2 + e^0))
  np.testing.assert_allclose(float(ce1[0]), np.log1p(np.exp(-2.0)), rtol=1e-6)


def _batch(music, cfg, b=4, seconds=1.0):
  length = int(seconds * 24000)
  audio = jnp.asarray(music[: b * length].reshape(b, length))
  t_lab = round(length / 320)
  codes = np.random.RandomState(1).randint(0, cfg.codebook_size, (b, cfg.num_codebooks, t_lab))
  labels = jnp.asarray(codes)
  return {"audio": audio, "labels": labels}


def test_loss_assembly(music):
  cfg = model_config("tiny", dtype="float32")
  model = create_model(cfg)
  loss, m = pretraining_loss(
    model, _batch(music, cfg), jax.random.key(0), cqt_fn=frame_cqt, cfg=OBJ
  )
  want = float(jnp.sum(m["ce"])) + 10.0 * float(m["features_pen"]) + float(m["cqt_mse"])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert 0.4 < float(m["mask_fraction"]) < 0.7
  assert np.all(np.asarray(m["ce"]) > 0) and np.isfinite(float(loss))


def _grads(model, batch, key, deterministic):
  graphdef, state = nnx.split(model)

  def f(state):
    return pretraining_loss(
      nnx.merge(graphdef, state), batch, key, cqt_fn=frame_cqt, cfg=OBJ, deterministic=deterministic
    )[0]

  return jax.jit(jax.grad(f))(state)


def test_grad_reaches_every_parameter(music):
  cfg = model_config("tiny")  # bf16 compute, dropout and layerdrop on
  model = create_model(cfg)
  grads = _grads(model, _batch(music, cfg), jax.random.key(0), deterministic=False)
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
  dead = [jax.tree_util.keystr(p) for p, g in leaves if not np.any(np.asarray(g) != 0)]
  assert not dead, f"no gradient reaches {dead}"


def test_feature_grad_mult_scales_only_the_extractor(music):
  base = model_config("tiny", dtype="float32", feature_grad_mult=1.0)
  batch = _batch(music, base)
  g1 = _grads(create_model(base, seed=7), batch, jax.random.key(0), deterministic=True)
  g01 = _grads(
    create_model(base.replace(feature_grad_mult=0.1), seed=7),
    batch,
    jax.random.key(0),
    deterministic=True,
  )
  for (path, a), (_, b) in zip(
    jax.tree_util.tree_leaves_with_path(g1), jax.tree_util.tree_leaves_with_path(g01)
  ):
    name = jax.tree_util.keystr(path)
    a, b = np.asarray(a), np.asarray(b)
    scale = 0.1 if "feature_extractor" in name else 1.0
    # Summation-order noise only: tolerance relative to the tensor's largest gradient.
    np.testing.assert_allclose(
      b, scale * a, rtol=1e-4, atol=1e-5 * scale * np.abs(a).max(), err_msg=name
    )


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny():
  return create_model(model_config("tiny", dtype="float32"))


def _loss(model, audio, labels, cqt_fn=frame_cqt):
  fn = jax.jit(
    lambda a, l: pretraining_loss(
      model, {"audio": a, "labels": l}, jax.random.key(0), cqt_fn=cqt_fn, cfg=OBJ
    )[0]
  )
  return fn(audio, labels)


@pytest.mark.parametrize(
  "audio_shape,dtype,match",
  [
    ((24000,), jnp.float32, r"must be a \(batch, samples\) array"),
    ((2, 1, 24000), jnp.float32, r"must be a \(batch, samples\) array"),
    ((2, 24000), jnp.int16, "must be floating point"),
    ((2, 300), jnp.float32, "has 300 samples; the model needs at least 400"),
  ],
)
def test_bad_audio_is_named(tiny, audio_shape, dtype, match):
  labels = jnp.zeros((2, 8, 75), jnp.int32)
  with pytest.raises(ValueError, match=match):
    _loss(tiny, jnp.zeros(audio_shape, dtype), labels)


@pytest.mark.parametrize(
  "label_shape,dtype,match",
  [
    ((2, 8, 60), jnp.int32, "labels have 60 frames but 24000 audio samples give 74 model frames"),
    ((2, 8, 80), jnp.int32, "labels have 80 frames"),
    ((2, 4, 75), jnp.int32, r"labels must have shape \(batch=2, codebooks=8, frames\)"),
    ((3, 8, 75), jnp.int32, r"labels must have shape \(batch=2"),
    ((2, 8, 75), jnp.float32, "labels must be integer codes"),
  ],
)
def test_bad_labels_are_named(tiny, label_shape, dtype, match):
  with pytest.raises(ValueError, match=match):
    _loss(tiny, jnp.zeros((2, 24000)), jnp.zeros(label_shape, dtype))


def test_bad_cqt_shape_is_named(tiny):
  with pytest.raises(ValueError, match=r"cqt_fn returned shape \(2, 10, 336\)"):
    _loss(
      tiny,
      jnp.zeros((2, 24000)),
      jnp.zeros((2, 8, 75), jnp.int32),
      cqt_fn=lambda a: jnp.zeros((a.shape[0], 10, 336)),
    )


def test_label_range_host_check():
  cfg = model_config("tiny")
  with pytest.raises(ValueError, match=r"codes in \[0, 1024\]; expected \[0, 1024\)"):
    check_label_values(np.array([[0, 1024]]), cfg)


def test_codebook_weights_weight_each_codebooks_cross_entropy(music):
  """objective.codebook_weights w: the loss holds sum_k w_k CE_k; the reported per-codebook CE
  and accuracy stay unweighted."""
  cfg = model_config("tiny", dtype="float32")
  model = create_model(cfg)
  batch, key = _batch(music, cfg), jax.random.key(0)
  _, base = pretraining_loss(model, batch, key, cqt_fn=frame_cqt, cfg=OBJ)
  w = (1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0)
  loss, m = pretraining_loss(
    model, batch, key, cqt_fn=frame_cqt, cfg=OBJ.replace(codebook_weights=w)
  )
  np.testing.assert_allclose(np.asarray(m["ce"]), np.asarray(base["ce"]), rtol=1e-6)
  want = float(np.dot(w, np.asarray(m["ce"]))) + 10.0 * float(m["features_pen"])
  np.testing.assert_allclose(float(loss), want + float(m["cqt_mse"]), rtol=1e-5)


def test_cqt_unmasked_weight_adds_the_visible_frames_cqt_error(music):
  """objective.cqt_unmasked_weight w_u: the loss gains w_u x the CQT squared error summed over the
  visible frames and bins / bins / masked count (fairseq's pred_nomask_weight, by hand); the
  masked terms and the reported metrics are unchanged; w_u = 0 is MERT's loss."""
  cfg = model_config("tiny", dtype="float32")
  model = create_model(cfg)
  batch, key = _batch(music, cfg), jax.random.key(0)
  base_loss, base = pretraining_loss(model, batch, key, cqt_fn=frame_cqt, cfg=OBJ)
  ocfg = OBJ.replace(cqt_unmasked_weight=3.0)
  loss, m = pretraining_loss(model, batch, key, cqt_fn=frame_cqt, cfg=ocfg)
  fwd = masked_forward(
    model, batch["audio"], key, cfg=ocfg, cqt_fn=frame_cqt, labels=batch["labels"]
  )
  pred = np.asarray(model.heads.cqt(fwd.out.last_hidden_state), np.float64)
  visible = ~np.asarray(fwd.mask)
  assert 0 < visible.sum() < visible.size
  err = np.square(pred - np.asarray(fwd.cqt, np.float64)).sum(axis=-1)[visible].sum()
  want = float(base_loss) + 3.0 * err / cfg.cqt_bins / float(m["num_masked"])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  for name in ("ce", "cqt_mse", "features_pen", "num_masked"):
    np.testing.assert_allclose(np.asarray(m[name]), np.asarray(base[name]), rtol=1e-6)
  with pytest.raises(ValueError, match=r"objective.cqt_unmasked_weight=-1.0: must be >= 0"):
    OBJ.replace(cqt_unmasked_weight=-1.0).validate(cfg)


def test_code_counts_are_the_target_codes_on_masked_frames(music):
  cfg = model_config("tiny", dtype="float32")
  batch = _batch(music, cfg)
  _, m = pretraining_loss(create_model(cfg), batch, jax.random.key(0), cqt_fn=frame_cqt, cfg=OBJ)
  counts = np.asarray(m["code_counts"])
  assert counts.shape == (cfg.num_codebooks, cfg.codebook_size)
  np.testing.assert_allclose(counts.sum(axis=1), float(m["num_masked"]))
  # only codes that occur in the labels are counted
  for k in range(cfg.num_codebooks):
    present = np.unique(np.asarray(batch["labels"])[:, k])
    assert set(np.flatnonzero(counts[k])) <= set(present.tolist())


def test_bestrq_targets_ignore_the_labels(music):
  """objective.targets=bestrq: the codes come from the audio; any labels (even of another
  teacher's shape) are not read."""
  cfg = model_config("tiny", dtype="float32")
  model, key = create_model(cfg), jax.random.key(0)
  batch = _batch(music, cfg, seconds=1.5)
  ocfg = OBJ.replace(targets="bestrq", bestrq_norm="clip")
  loss, m = pretraining_loss(model, batch, key, cqt_fn=frame_cqt, cfg=ocfg)
  other = {"audio": batch["audio"], "labels": batch["labels"][:, :1] * 0}
  loss2, _ = pretraining_loss(model, other, key, cqt_fn=frame_cqt, cfg=ocfg)
  assert float(loss) == float(loss2) and np.isfinite(float(loss))
  _, with_labels = pretraining_loss(model, batch, key, cqt_fn=frame_cqt, cfg=OBJ)
  assert not np.allclose(np.asarray(m["ce"]), np.asarray(with_labels["ce"]))
