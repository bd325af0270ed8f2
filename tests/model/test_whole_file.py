"""mert_jax/model/whole_file.py: the whole-file extractor equals transformers.HubertModel on the
whole clip when the front end runs in several chunks and attention in several blocks, for lengths
that end between frames; its buckets bound the padding and reuse compiled programs."""

from __future__ import annotations

import numpy as np
import pytest

from mert_jax.config import model_config
from mert_jax.hf import convert
from mert_jax.model.conv_extractor import num_frames
from mert_jax.model.features import hidden_states
from mert_jax.model.mert import create_model
from mert_jax.model.whole_file import BUCKET_STEPS, MIN_FRAMES, bucket_frames, whole_file_extractor

CHUNK = 64  # frames per front-end chunk here (the default is 750: 10 s)
BLOCK = 48  # attention block here (the default is 512)


def _model(mode: str):
  cfg = model_config(
    "tiny",
    dtype="float32",
    extractor_mode=mode,
    attention_impl="blockwise",
    attention_block=BLOCK,
  )
  return create_model(cfg, seed=3)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["default", "layer_norm"])
def test_whole_file_equals_hubert_model_across_chunks_and_blocks(mode, music):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  model = _model(mode)
  hf = transformers.HubertModel(transformers.HubertConfig(**convert.hf_config_dict(model.cfg)))
  sd = convert.backbone_to_hf_state_dict(model)
  missing, unexpected = hf.load_state_dict(
    {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=False
  )
  assert not unexpected and all("masked_spec_embed" in k for k in missing), (missing, unexpected)
  hf.eval()
  extract = whole_file_extractor(model.backbone, chunk_frames=CHUNK)
  # 4.3 s: 322 frames, padded to a 6-chunk bucket (384 frames: attention in 8 blocks); samples
  # after the last whole frame, whose first-layer outputs count in the GroupNorm
  audio = music[: 4 * 24000 + 7331]
  got = extract(audio)
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio[None]), output_hidden_states=True).hidden_states
  ref = np.stack([h[0].numpy() for h in ref])
  frames = num_frames(len(audio), model.cfg.conv_layers)
  assert got.shape == ref.shape == (model.cfg.num_layers + 1, frames, model.cfg.hidden_size)
  assert bucket_frames(frames, CHUNK) == 6 * CHUNK
  err = np.abs(got - ref).max()
  assert err < 1e-4, err


@pytest.mark.parametrize("length", [401, 24000 * 2 + 5, 24000 * 3 + 319, 24000 * 3 + 320])
def test_whole_file_equals_one_pass_at_any_length(length, music):
  """Against the one eager pass (itself equal to HubertModel: tests/cli/test_extract.py), at
  lengths below one chunk, between buckets and one sample either side of a frame boundary."""
  model = _model("default")
  extract = whole_file_extractor(model.backbone, chunk_frames=CHUNK, layers=(0, 2))
  got = extract(music[:length])
  want = hidden_states(model.backbone, music[:length])[[0, 2]]
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_buckets_bound_the_padding_and_reuse_programs(music):
  frames = np.arange(1, 200 * CHUNK)
  buckets = np.array([bucket_frames(int(f), CHUNK) for f in frames])
  assert (buckets >= frames).all()
  above = frames > CHUNK
  # padding: under one chunk, or under 25 % of the file once that is more
  assert ((buckets - frames)[above] <= np.maximum(CHUNK, 0.25 * frames[above])).all()
  assert bucket_frames(1, CHUNK) == MIN_FRAMES and bucket_frames(CHUNK, CHUNK) == CHUNK
  assert len(set(buckets[above])) <= len(BUCKET_STEPS) * 8  # a few per octave
  extract = whole_file_extractor(_model("default").backbone, chunk_frames=CHUNK, layers=(1,))
  for seconds in (2.0, 2.1, 2.2):  # 149-164 frames: one bucket of 3 chunks
    extract(music[: int(seconds * 24000)])
  assert extract.compiled_programs() == 1
  extract(music[:24000])  # 74 frames: another bucket
  assert extract.compiled_programs() == 2
