"""Self-attention: the XLA, manual and blockwise paths agree, the 330M relaxation is the identity,
padded keys do not leak into real frames, and ``auto`` picks by length and platform."""

import jax
import jax.numpy as jnp
import numpy as np

from mert_jax.config import model_config
from mert_jax.model import mert as model_lib
from mert_jax.model.conv_extractor import num_frames


def test_attention_paths_agree_and_relaxation_is_identity(music: np.ndarray) -> None:
  audio = jnp.asarray(music[: 2 * 6000].reshape(2, 6000))
  pad = np.zeros((2, 6000), bool)
  pad[1, 4000:] = True
  outs = {}
  runs = [("xla", -1.0, 512), ("manual", -1.0, 512), ("manual", 32.0, 512), ("blockwise", -1.0, 4)]
  for impl, relax, block in runs:  # 18 frames: blocks of 4 do not divide them
    cfg = model_config(
      "tiny", dtype="float32", attention_impl=impl, attention_relax=relax, attention_block=block
    )
    with jax.default_matmul_precision("highest"):
      model = model_lib.create_model(cfg)
      out = model(audio, padding_mask=jnp.asarray(pad)).last_hidden_state
      outs[(impl, relax, block)] = np.asarray(out)
  base = outs[("xla", -1.0, 512)]
  for k, v in outs.items():
    np.testing.assert_allclose(v, base, atol=2e-6, err_msg=str(k))


def test_padding_does_not_leak_into_real_frames(music: np.ndarray) -> None:
  """Padded keys are excluded from attention: a padded clip's real frames ignore the padding's
  content (up to the extractor GroupNorm, which sees the whole clip; use layer_norm mode here)."""
  cfg = model_config("tiny", dtype="float32", extractor_mode="layer_norm")
  m = model_lib.create_model(cfg)
  a = np.array(music[:8000])
  b = a.copy()
  b[6000:] = np.random.RandomState(0).randn(2000) * 0.3
  pad = np.zeros((2, 8000), bool)
  pad[:, 6000:] = True
  out = m(jnp.asarray(np.stack([a, b])), padding_mask=jnp.asarray(pad)).last_hidden_state
  out = np.asarray(out)
  # frames whose receptive fields and pos-conv stay clear of padding
  real = num_frames(6000 - 400, cfg.conv_layers) - 64
  np.testing.assert_allclose(out[0, :real], out[1, :real], atol=1e-5)


def test_auto_goes_blockwise_from_its_length_on_this_platform() -> None:
  from mert_jax.model.attention import choose_impl

  assert jax.default_backend() == "cpu"
  assert choose_impl("auto", 4096, 4096, "float32", False) == "blockwise"
  assert choose_impl("auto", 4096, 4096, "bfloat16", True) == "blockwise"
  assert choose_impl("auto", 4095, 4096, "float32", False) == "manual"
  assert choose_impl("auto", 100, 4096, "float32", True) == "manual"
  assert choose_impl("xla", 10**6, 4096, "float32", False) == "xla"
