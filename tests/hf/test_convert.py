"""Parity with transformers.HubertModel, both directions, layer by layer, in float32.

A randomly initialised HF model (LayerNorm affine terms perturbed so they are not the identity)
is imported into JAX, and a JAX-initialised model is exported and reloaded by
``HubertModel.from_pretrained`` / ``AutoModel.from_pretrained``. Every ``hidden_states`` entry and
``last_hidden_state`` must agree to max-abs 1e-4 (achieved: about 5e-6 for tiny; printed).
"""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mert_jax.config import model_config
from mert_jax.hf import convert, export_files
from mert_jax.model.features import hidden_states
from mert_jax.model.mert import abstract_model, count_params, create_model
from tests.expected import BACKBONE_PARAMS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
AutoModel, HubertConfig, HubertModel = (
  transformers.AutoModel,
  transformers.HubertConfig,
  transformers.HubertModel,
)

pytestmark = [pytest.mark.torch, pytest.mark.long]

TOL = 1e-4


def random_hf_model(cfg, seed=0) -> HubertModel:
  torch.manual_seed(seed)
  hf = HubertModel(HubertConfig(**convert.hf_config_dict(cfg))).eval()
  with torch.no_grad():
    for name, p in hf.named_parameters():
      if "layer_norm" in name or name.endswith("original0") or "masked_spec" in name:
        p.add_(0.1 * torch.randn_like(p))
  return hf


def numpy_state_dict(hf: HubertModel) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in hf.state_dict().items()}


def hf_hidden_states(hf: HubertModel, audio: np.ndarray):
  with torch.no_grad():
    out = hf(torch.from_numpy(audio[None]), output_hidden_states=True)
  return [h[0].numpy() for h in out.hidden_states], out.last_hidden_state[0].numpy()


def jax_states(model, audio):
  with jax.default_matmul_precision("highest"):
    hs = hidden_states(model.backbone, audio)
    last = model.backbone(jnp.asarray(audio[None])).last_hidden_state[0]
  return hs, np.asarray(last)


def max_errors(jax_hs, jax_last, hf_hs, hf_last):
  assert len(jax_hs) == len(hf_hs)
  per_layer = [float(np.max(np.abs(a - b))) for a, b in zip(jax_hs, hf_hs)]
  return per_layer, float(np.max(np.abs(jax_last - hf_last)))


CASES = [
  ("tiny", dict(layer_norm_first=False)),
  ("tiny", dict(layer_norm_first=True)),
  ("tiny", dict(extractor_mode="layer_norm")),
  ("tiny", dict(extractor_mode="layer_norm", layer_norm_first=True)),
]


@pytest.mark.parametrize("size,overrides", CASES)
def test_import_from_hf(size, overrides, music):
  cfg = model_config(size, dtype="float32", **overrides)
  hf = random_hf_model(cfg)
  model = create_model(cfg, seed=1)
  convert.load_backbone_state_dict(model, numpy_state_dict(hf), source="hf")
  audio = music[:36000]
  per_layer, last = max_errors(*jax_states(model, audio), *hf_hidden_states(hf, audio))
  print(f"{size} {overrides}: hidden_states max-abs {max(per_layer):.2e}, last {last:.2e}")
  assert max(per_layer) < TOL and last < TOL


@pytest.mark.parametrize("size,overrides", CASES)
def test_export_to_hf(size, overrides, music, tmp_path):
  cfg = model_config(size, dtype="float32", **overrides)
  model = create_model(cfg, seed=3)
  convert.export_hf(model, tmp_path)
  hf, info = HubertModel.from_pretrained(tmp_path, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  auto = AutoModel.from_pretrained(tmp_path)
  assert type(auto).__name__ == "HubertModel"
  audio = music[24000:60000]
  per_layer, last = max_errors(*jax_states(model, audio), *hf_hidden_states(hf.eval(), audio))
  print(f"{size} {overrides}: hidden_states max-abs {max(per_layer):.2e}, last {last:.2e}")
  assert max(per_layer) < TOL and last < TOL
  # And back: HF folder -> JAX gives bit-identical parameters, heads included.
  back, heads_loaded = convert.import_hf(tmp_path)
  assert heads_loaded
  for a, b in zip(
    jax.tree.leaves(jax.tree.map(np.asarray, _params(model))),
    jax.tree.leaves(jax.tree.map(np.asarray, _params(back))),
  ):
    np.testing.assert_array_equal(a, b)


def _params(model):
  from flax import nnx

  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["95m", "330m"])
def test_full_size_parity_both_directions(size, music, tmp_path):
  cfg = model_config(size, dtype="float32")
  audio = music[:24000]  # one second keeps the CPU cost small
  hf = random_hf_model(cfg)
  hf_hs, hf_last = hf_hidden_states(hf, audio)
  model = create_model(cfg, seed=1)
  convert.load_backbone_state_dict(model, numpy_state_dict(hf), source="hf")
  per_layer, last = max_errors(*jax_states(model, audio), hf_hs, hf_last)
  print(f"{size} HF->JAX: hidden_states max-abs {max(per_layer):.2e}, last {last:.2e}")
  assert max(per_layer) < TOL and last < TOL
  del hf
  convert.export_hf(model, tmp_path)  # JAX -> HF with the same weights
  hf2 = HubertModel.from_pretrained(tmp_path).eval()
  per_layer, last = max_errors(*jax_states(model, audio), *hf_hidden_states(hf2, audio))
  print(f"{size} JAX->HF: hidden_states max-abs {max(per_layer):.2e}, last {last:.2e}")
  assert max(per_layer) < TOL and last < TOL


@pytest.mark.parametrize("size", ["95m", "330m", "1b"])
def test_backbone_count_equals_hubert(size):
  cfg = model_config(size)
  with torch.device("meta"):
    hf = HubertModel(HubertConfig(**convert.hf_config_dict(cfg)))
  hf_count = sum(p.numel() for p in hf.parameters())
  model_count = count_params(abstract_model(cfg).backbone)
  assert model_count == hf_count == BACKBONE_PARAMS[size]


def test_published_bin_with_legacy_names_imports(tmp_path, music):
  """MERT's published checkpoints are pytorch_model.bin with weight_g/weight_v names."""
  cfg = model_config("tiny", dtype="float32")
  hf = random_hf_model(cfg, seed=5)
  sd = {}
  for k, v in hf.state_dict().items():
    k = k.replace("parametrizations.weight.original0", "weight_g")
    k = k.replace("parametrizations.weight.original1", "weight_v")
    sd[k] = v.clone()
  torch.save(sd, tmp_path / "pytorch_model.bin")
  (tmp_path / "config.json").write_text(hf.config.to_json_string())
  model, heads_loaded = convert.import_hf(tmp_path, dtype="float32")
  assert not heads_loaded
  audio = music[:30000]
  per_layer, last = max_errors(*jax_states(model, audio), *hf_hidden_states(hf, audio))
  assert max(per_layer) < TOL and last < TOL


class _RunsCode:
  """Unpickling this calls os.system: the classic malicious checkpoint."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
  cfg = model_config("tiny")
  marker = tmp_path / "pwned"
  payload = {"feature_extractor.conv_layers.0.conv.weight": torch.zeros(1), "x": _RunsCode(marker)}
  with open(tmp_path / "pytorch_model.bin", "wb") as f:
    pickle.dump(payload, f)
  hf_config = HubertConfig(**convert.hf_config_dict(cfg))
  (tmp_path / "config.json").write_text(hf_config.to_json_string())
  # Sanity: the file really runs code when unpickled naively.
  probe = tmp_path / "probe"
  with open(tmp_path / "probe.bin", "wb") as f:
    pickle.dump(_RunsCode(probe), f)
  with open(tmp_path / "probe.bin", "rb") as f:
    pickle.load(f)
  assert probe.exists()
  with pytest.raises(convert.UnsafeCheckpointError, match="refused"):
    convert.import_hf(tmp_path)
  assert not marker.exists()


def test_import_rejects_mismatched_weights(tmp_path):
  cfg = model_config("tiny", dtype="float32")
  hf = random_hf_model(cfg)
  sd = numpy_state_dict(hf)
  old_name = "encoder.layers.1.fc2.bias"
  del sd[old_name if old_name in sd else "encoder.layers.1.feed_forward.output_dense.bias"]
  sd["encoder.extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(
    ValueError, match="missing keys.*output_dense.bias.*unexpected keys.*encoder.extra"
  ):
    convert.load_backbone_state_dict(create_model(cfg), sd, source="test")


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
  model = create_model(model_config("tiny", dtype="float32"), seed=2)
  convert.export_hf(model, tmp_path / "hf")
  sd = convert.read_weights(tmp_path / "hf" / export_files.HF_WEIGHTS)
  key = "encoder.layers.1.attention.k_proj.weight"
  sd[key][3, 5] = np.nan
  import safetensors.numpy

  (tmp_path / "hf" / export_files.HF_WEIGHTS).write_bytes(safetensors.numpy.save(sd))
  with pytest.raises(ValueError, match=f"{key} holds 1 non-finite value"):
    convert.import_hf(tmp_path / "hf")
  heads = convert.read_weights(tmp_path / "hf" / export_files.HEADS_FILE)
  heads["cqt_head.bias"][0] = np.inf
  sd[key][3, 5] = 0.0
  (tmp_path / "hf" / export_files.HF_WEIGHTS).write_bytes(safetensors.numpy.save(sd))
  (tmp_path / "hf" / export_files.HEADS_FILE).write_bytes(safetensors.numpy.save(heads))
  with pytest.raises(ValueError, match="cqt_head.bias holds 1 non-finite value"):
    convert.import_hf(tmp_path / "hf")


def test_truncated_safetensors_names_the_file(tmp_path):
  convert.export_hf(create_model(model_config("tiny"), seed=2), tmp_path / "hf")
  weights = tmp_path / "hf" / export_files.HF_WEIGHTS
  weights.write_bytes(weights.read_bytes()[:100])
  with pytest.raises(ValueError, match=f"{weights}: not a readable safetensors file"):
    convert.import_hf(tmp_path / "hf")
