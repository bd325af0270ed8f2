"""Import of MERT fairseq checkpoints (mert_jax/hf/fairseq.py), heads included.

Files are written by tests/hf/fairseq_format.py from tiny JAX models (fairseq names via an
independent inverse mapping, a realistic cfg, task_state dictionaries, optimizer and extra state);
importing them must give back every parameter bit for bit. All tiny models share the encoder
shapes so XLA compiles their initialisers once.
"""

import os

import numpy as np
import pytest
from flax import nnx

from mert_jax.config import MERT_CONV_LAYERS, model_config
from mert_jax.hf import convert, fairseq
from mert_jax.model.mert import create_model

torch = pytest.importorskip("torch")
from tests.hf import fairseq_format as ff  # noqa: E402

pytestmark = pytest.mark.torch

# conv width 24 != model width 32, so fairseq has a post_extract_proj (as MERT's 512 -> 768).
CONV24 = ((24, 10, 5),) + ((24, 3, 2),) * 4 + ((24, 2, 2),) * 2
VARIANTS = {
  "95m_like": dict(conv_layers=CONV24),
  "layer_norm_extractor": dict(conv_layers=CONV24, extractor_mode="layer_norm", conv_bias=True),
  "330m_like_pre_ln": dict(
    conv_layers=CONV24,
    layer_norm_first=True,
    attention_relax=32.0,
    dropout=0.0,
    attention_dropout=0.0,
    dropout_input=0.0,
    layerdrop=0.0,
    feature_grad_mult=1.0,
  ),
}
REPORT = (
  "label_embs_concat: 8 codebooks x 1028 labels (1024 codes + 4 fairseq specials); "
  "final_proj 32->8x16; CQT head 336 bins"
)

_models = {}


def source_model(name: str = "95m_like", **extra):
  """A tiny float32 model (cached per config) whose LayerNorm/GroupNorm affines are perturbed so
  that no parameter equals its initial value."""
  key = (name, tuple(sorted(extra.items())))
  if key not in _models:
    cfg = model_config("tiny", dtype="float32", **VARIANTS.get(name, {}), **extra)
    model = create_model(cfg, seed=7)
    rng = np.random.default_rng(0)
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
      if any(str(p) in ("layer_norm", "final_layer_norm") for p in path):
        x = np.asarray(var.get_value())
        var.set_value(x + 0.1 * rng.standard_normal(x.shape).astype(np.float32))
    nnx.update(model, state)
    _models[key] = model
  return _models[key]


def flat_params(model) -> dict[str, np.ndarray]:
  return {
    ".".join(map(str, path)): np.asarray(var.get_value())
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
  }


def assert_same_params(a, b, *, skip: str | None = None):
  pa, pb = flat_params(a), flat_params(b)
  assert sorted(pa) == sorted(pb)
  for k in pa:
    if skip and k.startswith(skip):
      continue
    np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_import_is_bit_identical_heads_included(variant, tmp_path):
  src = source_model(variant)
  path = ff.write_fairseq_checkpoint(tmp_path / "checkpoint_best.pt", src)
  model, report = fairseq.import_fairseq(path, dtype="float32")
  assert model.cfg == src.cfg
  assert_same_params(model, src)
  assert report == REPORT


def test_identity_projection_when_widths_agree(tmp_path):
  """conv width == model width: fairseq has no post_extract_proj; the import uses the identity."""
  src = source_model("equal_widths")
  d = src.cfg.hidden_size
  src.backbone.feature_projection.projection.kernel.set_value(np.eye(d, dtype=np.float32))
  src.backbone.feature_projection.projection.bias.set_value(np.zeros(d, np.float32))
  path = ff.write_fairseq_checkpoint(tmp_path / "ckpt.pt", src)
  ckpt = fairseq.read_fairseq_checkpoint(path)
  assert not any(k.startswith("post_extract_proj") for k in ckpt.state)
  assert ckpt.dictionary_sizes == (1028,) * 8
  model, _ = fairseq.import_fairseq(path, dtype="float32")
  assert_same_params(model, src)


def test_without_cqt_head_the_head_is_fresh_and_reported(tmp_path):
  src = source_model()
  path = ff.write_fairseq_checkpoint(tmp_path / "ckpt.pt", src, cqt_head=False)
  model, report = fairseq.import_fairseq(path, seed=3, dtype="float32")
  assert "CQT head fresh (336 bins; audio_cqt_loss_m was off)" in report
  assert_same_params(model, src, skip="heads.cqt_head")
  fresh = create_model(model.cfg, seed=3)
  np.testing.assert_array_equal(
    np.asarray(model.heads.cqt_head.kernel[...]), np.asarray(fresh.heads.cqt_head.kernel[...])
  )


def test_legacy_args_namespace_and_per_codebook_projections(tmp_path):
  """Pre-hydra files keep the config in an argparse.Namespace; random_codebook runs keep one
  final_projs.k Linear per codebook, which concatenated are final_proj."""
  src = source_model()
  sd = ff.fairseq_model_state(src)
  w, b = sd["final_proj.weight"], sd["final_proj.bias"]
  fd = src.cfg.final_dim
  state = {"final_proj.weight": None, "final_proj.bias": None}
  for k in range(src.cfg.num_codebooks):
    state[f"final_projs.{k}.weight"] = w[k * fd : (k + 1) * fd].clone()
    state[f"final_projs.{k}.bias"] = b[k * fd : (k + 1) * fd].clone()
  path = ff.write_fairseq_checkpoint(
    tmp_path / "ckpt.pt", src, state=state, model_cfg={"random_codebook": 4}, legacy_args=True
  )
  model, report = fairseq.import_fairseq(path, dtype="float32")
  assert_same_params(model, src)
  assert report == REPORT


def test_fp16_weights_and_dropped_extras(tmp_path):
  """fp16 runs store float16 weights (widened exactly); the mel head and learnable temperatures
  have no counterpart here and are dropped, and the report says so."""
  src = source_model()
  state = {k: v.half() for k, v in ff.fairseq_model_state(src).items()}
  state["encoder_mel_model.fc.weight"] = torch.zeros(84, 32, dtype=torch.half)
  state["encoder_mel_model.fc.bias"] = torch.zeros(84, dtype=torch.half)
  state["logit_temp_list"] = torch.zeros(8, dtype=torch.half)
  path = ff.write_fairseq_checkpoint(tmp_path / "ckpt.pt", src, state=state)
  model, report = fairseq.import_fairseq(path, dtype="float32")
  assert report == (
    REPORT + "; mel head dropped; learnable logit temperatures dropped; "
    "file tensors float16, widened exactly to float32"
  )
  got, want = flat_params(model), flat_params(src)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k].astype(np.float16).astype(np.float32), k)


def test_backbone_only_checkpoint_gets_fresh_heads(tmp_path):
  src = source_model()
  drop = [k for k in ff.fairseq_model_state(src) if k.startswith(("final_proj", "label_embs"))]
  path = ff.write_fairseq_checkpoint(tmp_path / "ckpt.pt", src, state=dict.fromkeys(drop))
  model, report = fairseq.import_fairseq(path, dtype="float32")
  assert report.startswith("no pretraining heads in the file")
  assert_same_params(model, src, skip="heads")


class _RunsCode:
  """Unpickling this calls os.system: the classic malicious checkpoint."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused(tmp_path):
  src = source_model()
  # Sanity: the same construction really runs code when loaded naively.
  probe = tmp_path / "probe"
  ff.write_fairseq_checkpoint(
    tmp_path / "probe.pt", src, extra_state={"hook": _RunsCode(probe)}, task_dictionaries=False
  )
  torch.load(tmp_path / "probe.pt", weights_only=False)
  assert probe.exists()

  marker = tmp_path / "pwned"
  path = ff.write_fairseq_checkpoint(
    tmp_path / "evil.pt", src, extra_state={"hook": _RunsCode(marker)}
  )
  with pytest.raises(convert.UnsafeCheckpointError) as e:
    fairseq.import_fairseq(path)
  msg = str(e.value)
  assert "\n" not in msg and "evil.pt" in msg and f"{os.system.__module__}.system" in msg, msg
  assert not marker.exists()


def test_unreadable_files(tmp_path):
  p = tmp_path / "plain.pt"
  torch.save({"encoder.layer_norm.weight": torch.ones(3)}, p)
  with pytest.raises(ValueError, match=r"plain.pt: not a fairseq checkpoint: no 'model'"):
    fairseq.read_fairseq_checkpoint(p)
  torch.save([1, 2], p)
  with pytest.raises(ValueError, match=r"plain.pt: not a fairseq checkpoint.*found list"):
    fairseq.read_fairseq_checkpoint(p)
  torch.save({"model": {"mask_emb": torch.ones(3)}, "cfg": None, "args": None}, p)
  with pytest.raises(ValueError, match=r"plain.pt: fairseq checkpoint without a config"):
    fairseq.read_fairseq_checkpoint(p)
  (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
  with pytest.raises(convert.UnsafeCheckpointError, match="junk.pt: refused: torch's weights-only"):
    fairseq.read_fairseq_checkpoint(tmp_path / "junk.pt")


@pytest.mark.parametrize(
  "field,value",
  [
    ("deepnorm", True),
    ("feature_extractor_cqt", True),
    ("untie_final_proj", False),
    ("target_glu", True),
    ("activation_fn", "relu"),
    ("wav_normalize", True),
  ],
)
def test_unimplemented_options_are_refused(field, value, tmp_path):
  path = ff.write_fairseq_checkpoint(tmp_path / "ckpt.pt", source_model(), model_cfg={field: value})
  with pytest.raises(ValueError) as e:
    fairseq.import_fairseq(path)
  msg = str(e.value)
  assert "\n" not in msg and f"model.{field}={value!r}" in msg, msg
  assert "not implemented by mert_jax" in msg


def test_label_rows_not_divisible_by_codebooks(tmp_path):
  src = source_model()
  emb = ff.fairseq_model_state(src)["label_embs_concat"]
  path = ff.write_fairseq_checkpoint(
    tmp_path / "ckpt.pt",
    src,
    state={"label_embs_concat": emb[:-1].clone()},
    task_dictionaries=False,
  )
  with pytest.raises(ValueError, match=r"label_embs_concat has 8223 rows, not divisible by the 8 "):
    fairseq.import_fairseq(path)


def test_label_count_checks():
  src = source_model()
  sd = {k: v.numpy() for k, v in ff.fairseq_model_state(src).items()}
  cfg = ff.fairseq_cfg(src.cfg)
  ckpt = fairseq.FairseqCheckpoint(cfg["model"], cfg["task"], sd, (1000,) * 8)
  with pytest.raises(ValueError, match=r"dictionaries hold \[1000, .*1028 rows per codebook"):
    fairseq.model_config_from_fairseq(ckpt, source="x.pt")
  # 1030 rows per codebook: 1026 codes, said as found.
  sd["label_embs_concat"] = np.zeros((8 * 1030, src.cfg.final_dim), np.float32)
  ckpt = fairseq.FairseqCheckpoint(cfg["model"], cfg["task"], sd)
  got = fairseq.model_config_from_fairseq(ckpt, source="x.pt")
  assert (got.num_codebooks, got.codebook_size, got.num_labels) == (8, 1026, 1030)
  report = fairseq._report(ckpt, got, fairseq.fairseq_heads(sd))  # pylint: disable=protected-access
  assert "8 codebooks x 1030 labels (1026 codes + 4 fairseq specials)" in report
  assert "1026 is not a power of two" in report


def test_unknown_tensors_are_refused():
  sd = {k: v.numpy() for k, v in ff.fairseq_model_state(source_model()).items()}
  sd["encoder.layers.0.self_attn.in_proj_weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match=r"x.pt: tensors .*\['encoder.layers.0.self_attn.in_proj"):
    fairseq.fairseq_to_hf_backbone(sd, source="x.pt")


def test_conv_feature_layers_parser(tmp_path):
  parse = fairseq.parse_conv_feature_layers
  assert parse("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == MERT_CONV_LAYERS
  assert parse("[(512, 10, 5)] + 4 * [(512, 3, 2)] + [(512, 2, 2)] * 2") == MERT_CONV_LAYERS
  assert parse(ff.conv_layers_string(CONV24)) == CONV24
  marker = tmp_path / "pwned"
  for evil in [
    f"__import__('os').system('touch {marker}')",
    "[(512,10,5)] * 10**9",
    "[(1,1,1)] * 100000000",
    "[(512,10,5)] + eval('[]')",
    "[(c,10,5) for c in [512]]",
    "().__class__",
    "[(512,10,5.0)]",
    "[(512,10)]",
  ]:
    with pytest.raises(ValueError, match="conv_feature_layers=") as e:
      parse(evil, source="x.pt")
    assert "\n" not in str(e.value)
  assert not marker.exists()
  # And through a checkpoint config.
  src = source_model()
  cfg = ff.fairseq_cfg(src.cfg)
  cfg["model"]["conv_feature_layers"] = "__import__('os').getcwd()"
  sd = {k: v.numpy() for k, v in ff.fairseq_model_state(src).items()}
  with pytest.raises(ValueError, match=r"x.pt: conv_feature_layers=.*Call is not allowed"):
    fairseq.model_config_from_fairseq(
      fairseq.FairseqCheckpoint(cfg["model"], cfg["task"], sd), source="x.pt"
    )


def test_refusal_names_other_globals(tmp_path):
  """A global outside the allowlist that is not blocked outright (here collections.deque) is
  named too."""
  import collections

  p = tmp_path / "ckpt.pt"
  ff.write_fairseq_checkpoint(p, source_model(), extra_state={"q": collections.deque([1])})
  with pytest.raises(convert.UnsafeCheckpointError, match=r"'collections.deque'"):
    fairseq.read_fairseq_checkpoint(p)


def test_heads_survive_fairseq_to_jax_to_hf_folder_to_jax(tmp_path):
  """fairseq file -> JAX -> jax-to-hf folder -> JAX: every parameter, heads included, exact."""
  source = source_model()
  path = ff.write_fairseq_checkpoint(tmp_path / "mert_fairseq.pt", source)
  imported, _ = fairseq.import_fairseq(path)
  convert.export_hf(imported, tmp_path / "hf")
  back, heads_loaded = convert.import_hf(tmp_path / "hf")
  assert heads_loaded
  assert_same_params(back, source)
