"""``--config.init_from``: a run starts from pretrained weights (a published-format MERT folder, a
workdir), refuses a source of another architecture before compiling, and the round trip
published folder -> one update at learning rate 0 -> jax-to-hf -> stock AutoModel keeps every
hidden state."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from data_pipeline.example_audio import music_clip
from data_pipeline.prepare import main as prepare_main
from mert_jax import workdir_files
from mert_jax.checkpointing import model_checkpoint
from mert_jax.cli import convert as convert_cli
from mert_jax.config import model_config
from mert_jax.hf import convert
from mert_jax.model.mert import create_model
from mert_jax.recipe import model_config_from
from mert_jax.train import init_from, state
from mert_jax.train.loop import train
from tests.cli.helpers import python_m_error_line
from tests.documented import documented_commands
from tests.train.helpers import REPO_ROOT, cli_args, final_params, tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.hf.fairseq_format import write_fairseq_checkpoint  # noqa: E402
from tests.hf.published_format import hidden_states_of, write_published_folder  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.long]

DOC = os.path.join(REPO_ROOT, "docs", "continue_pretraining.md")
README = os.path.join(REPO_ROOT, "README.md")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
  """(folder, reference HubertModel): a tiny MERT folder in the published m-a-p layout."""
  folder = tmp_path_factory.mktemp("published") / "MERT-v1-tiny"
  hf = write_published_folder(folder, model_config("tiny", dtype="float32"), seed=7)
  return str(folder), hf


def _setup(config):
  return state.build(config), model_config_from(config)


def _pretrained(source, config, **kw):
  setup, mcfg = _setup(config)
  pre = init_from.load_pretrained(source, mcfg, seed=config.seed, **kw)
  return pre, mcfg, setup.abstract_state["params"]


def test_published_folder_is_accepted_backbone_only(published, data_dir):
  folder, hf = published
  pre, mcfg, abstract = _pretrained(folder, tiny(data_dir))
  assert pre.kind == "hf" and not pre.heads_loaded and "heads start fresh" in pre.note
  init_from.check_compatible(pre, mcfg, abstract)
  got = init_from.initial_params(pre, abstract)
  assert set(got) == {"backbone"}
  want = hf.state_dict()["encoder.layers.1.feed_forward.output_dense.weight"].numpy()
  np.testing.assert_array_equal(
    got["backbone"]["encoder"]["layers"][1]["feed_forward"]["output_dense"]["kernel"], want.T
  )


def test_other_width_names_the_parameter_and_both_shapes(published, data_dir):
  pre, mcfg, abstract = _pretrained(
    published[0], tiny(data_dir, **{"model.ffn_size": 48}), step=None
  )
  with pytest.raises(init_from.InitFromError) as e:
    init_from.check_compatible(pre, mcfg, abstract)
  msg = str(e.value)
  assert "\n" not in msg
  assert "intermediate_dense.bias has shape (64,) in the source but (48,) in this run" in msg
  assert "model.ffn_size 64 there vs 48 here" in msg


def test_other_depth_and_layer_norm_placement_are_refused(published, data_dir):
  pre, mcfg, abstract = _pretrained(published[0], tiny(data_dir, **{"model.num_layers": 3}))
  with pytest.raises(init_from.InitFromError, match=r"layers\.2\..* is not in the source"):
    init_from.check_compatible(pre, mcfg, abstract)
  # Same shapes, other computation: refused by the config comparison.
  pre, mcfg, abstract = _pretrained(
    published[0], tiny(data_dir, **{"model.layer_norm_first": True})
  )
  with pytest.raises(
    init_from.InitFromError, match="layer_norm_first False there vs True here.*"
  ) as e:
    init_from.check_compatible(pre, mcfg, abstract)
  assert "--config.model.layer_norm_first=False" in str(e.value)


@pytest.mark.parametrize("field", ["deepnorm", "feature_extractor_cqt"])
def test_options_this_model_lacks_are_refused(field, data_dir, tmp_path):
  write_published_folder(tmp_path, model_config("tiny", dtype="float32"), **{field: True})
  with pytest.raises(init_from.InitFromError, match=f"{field}=True .*not implemented by mert_jax"):
    _pretrained(str(tmp_path), tiny(data_dir))


def test_bad_sources_are_one_line(published, data_dir, tmp_path):
  hf_config = convert.hf_config_dict(model_config("tiny"))
  (tmp_path / "config.json").write_text(json.dumps(hf_config))
  with pytest.raises(init_from.InitFromError, match="no model.safetensors.*pytorch_model.bin"):
    _pretrained(str(tmp_path), tiny(data_dir))
  with pytest.raises(init_from.InitFromError, match="not a Hugging Face folder"):
    _pretrained(str(tmp_path / "nothing" / "here"), tiny(data_dir))
  with pytest.raises(init_from.InitFromError, match="init_from_step=3 applies to a training"):
    _pretrained(published[0], tiny(data_dir), step=3)


@pytest.fixture(scope="module")
def lr0_run(published, data_dir, tmp_path_factory):
  """(workdir, stdout) of one update at learning rate 0 from the published-format folder."""
  wd = tmp_path_factory.mktemp("init_from") / "run"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train(tiny(data_dir, total_steps=1, init_from=published[0], **{"optimizer.lr": 0.0}), str(wd))
  return wd, out.getvalue()


def test_published_folder_round_trip_through_training_and_export(
  published, lr0_run, tmp_path, music
):
  """published folder -> init_from -> one update at lr 0 -> jax-to-hf -> AutoModel +
  AutoFeatureExtractor: every hidden state within 1e-4 of the original model's."""
  _, hf = published
  wd, stdout = lr0_run
  assert "heads start fresh" in stdout
  record = json.loads((wd / workdir_files.INIT_FROM).read_text())
  assert record["kind"] == "hf" and record["heads_loaded"] is False
  assert final_params(wd)[0] == 1

  out = tmp_path / "hf"
  assert convert_cli.main(["jax-to-hf", f"--checkpoint={wd}", f"--output={out}"]) == 0
  model = transformers.AutoModel.from_pretrained(out).eval()
  assert type(model).__name__ == "HubertModel"
  extractor = transformers.AutoFeatureExtractor.from_pretrained(out)
  audio = music[:48000]
  inputs = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")
  with torch.no_grad():
    got = [h[0].numpy() for h in model(**inputs, output_hidden_states=True).hidden_states]
  want = hidden_states_of(hf, audio)
  errors = [float(np.max(np.abs(a - b))) for a, b in zip(got, want)]
  print("hidden-state max-abs per layer after the round trip:", errors)
  assert len(got) == len(want) and max(errors) < 1e-4
  # The PyTorch snippets of the README and docs/continue_pretraining.md, run as written.
  for doc in (README, DOC):
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", open(doc).read(), re.S)]
    scope = {"HF_DIR": str(out), "audio": audio}
    exec(snippet, scope)  # pylint: disable=exec-used
    np.testing.assert_allclose(scope["hidden_states"][-1][0].detach().numpy(), want[-1], atol=1e-4)


def test_workdir_source_brings_backbone_and_heads(lr0_run, data_dir):
  wd, _ = lr0_run
  pre, mcfg, abstract = _pretrained(str(wd), tiny(data_dir), step=1)
  assert pre.kind == "workdir" and pre.heads_loaded
  init_from.check_compatible(pre, mcfg, abstract)
  got = init_from.initial_params(pre, abstract)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(final_params(wd)[1])):
    np.testing.assert_array_equal(a, np.asarray(b))
  # Loaded heads must agree with the run's.
  pre, mcfg, abstract = _pretrained(str(wd), tiny(data_dir, **{"model.final_dim": 8}))
  with pytest.raises(
    init_from.InitFromError,
    match=r"heads\.final_proj\.bias has shape \(128,\) in the source but \(64,\)",
  ):
    init_from.check_compatible(pre, mcfg, abstract)


def test_a_started_run_resumes_instead(published, lr0_run, data_dir, capsys):
  wd, _ = lr0_run
  train(tiny(data_dir, total_steps=1, init_from=published[0], **{"optimizer.lr": 0.0}), str(wd))
  assert "resuming from checkpoint 1; init_from applies to a fresh run only" in (
    capsys.readouterr().out
  )


@pytest.mark.multiprocess
def test_command_line_refusal_is_one_line_before_compiling(published, data_dir, tmp_path):
  line = python_m_error_line(
    "mert_jax.cli.train",
    *cli_args(
      tmp_path / "run",
      data_dir,
      f"--config.init_from={published[0]}",
      "--config.model.layer_norm_first=True",
    ),
  )
  assert "layer_norm_first False there vs True here" in line
  assert not (tmp_path / "run" / "checkpoints" / "1").exists()


# fairseq has no post_extract_proj when the conv width equals the model width (tiny's 32), so the
# fairseq stand-ins are 48 wide, as MERT's 512-wide extractor feeds a 768-wide encoder.
WIDE = {"model.hidden_size": 48}


def test_fairseq_source_brings_backbone_and_heads(data_dir, tmp_path):
  config = tiny(data_dir, **WIDE)
  source = create_model(model_config_from(config), seed=5)
  path = write_fairseq_checkpoint(tmp_path / "MERT-v1-tiny_fairseq.pt", source)
  pre, mcfg, abstract = _pretrained(path, config)
  assert pre.kind == "fairseq" and pre.heads_loaded
  assert "8 codebooks x 68 labels (64 codes + 4 fairseq specials)" in pre.note
  init_from.check_compatible(pre, mcfg, abstract)
  got = init_from.initial_params(pre, abstract)
  want = nnx.to_pure_dict(nnx.state(source, nnx.Param))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, np.asarray(b))
  # The same weights as an hf-to-jax model checkpoint.
  model_checkpoint.save_model(tmp_path / "ckpt", source)
  pre, mcfg, abstract = _pretrained(str(tmp_path / "ckpt"), config)
  assert pre.kind == "model checkpoint" and pre.heads_loaded
  init_from.check_compatible(pre, mcfg, abstract)
  # Heads of another teacher (8 x 1024 codes) do not fit a run on 8 x 64.
  other = create_model(model_config_from(tiny(data_dir, **WIDE, **{"model.codebook_size": 1024})))
  path = write_fairseq_checkpoint(tmp_path / "encodec_fairseq.pt", other)
  pre, mcfg, abstract = _pretrained(path, config)
  with pytest.raises(
    init_from.InitFromError,
    match=r"heads\.label_embs has shape \(8224, 16\) in the source but \(544, 16\) in this "
    r"run \(model\.codebook_size 1024 there vs 64 here\)",
  ):
    init_from.check_compatible(pre, mcfg, abstract)


# --------------------------------------------------------------------- docs/continue_pretraining.md


def train_command(*args: str) -> str:
  """``python -m mert_jax.cli.train ARGS`` from the repo root; asserts exit 0, returns stdout."""
  cmd = [sys.executable, "-m", "mert_jax.cli.train", *args]
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.multiprocess
def test_documented_recipe_runs_on_a_tiny_stand_in(published, tmp_path, music):
  """Every command of docs/continue_pretraining.md, with tiny stand-ins for the model, the music,
  the EnCodec weights and the published checkpoints: prepare (EnCodec teacher) -> continue from a
  fairseq file for one step -> export; and the hub-folder variant through its first steps."""
  commands = [list(c.argv) for c in documented_commands(DOC)]
  # The README's init_from commands are the doc's, so this test runs them too.
  readme = [list(c.argv) for c in documented_commands(README)]
  readme_init_from = [c for c in readme if "init_from" in " ".join(c)]
  assert len(readme_init_from) == 2 and all(c in commands for c in readme_init_from)
  assert [c[2] for c in commands] == [
    "data_pipeline.prepare",
    "mert_jax.cli.train",
    "mert_jax.cli.convert",
    "mert_jax.cli.train",
  ]
  music_dir = tmp_path / "music"
  music_dir.mkdir()
  for i in range(4):  # 4 x 12 s of music
    sf.write(music_dir / f"{i}.wav", music_clip(12.0, offset_seconds=12.0 * i), 24000)
  tiny_1024 = tiny("unused", **WIDE, **{"model.codebook_size": 1024})  # EnCodec's 8 x 1024
  fairseq_pt = write_fairseq_checkpoint(
    tmp_path / "MERT-v1-95M_fairseq.pt", create_model(model_config_from(tiny_1024), seed=3)
  )
  stand_ins = {
    "MY_MUSIC": str(music_dir),
    "MY_DATA": str(tmp_path / "data"),
    "ENCODEC_24KHZ_DIR": "random-init",
    "MERT-v1-95M_fairseq.pt": fairseq_pt,
    "m-a-p/MERT-v1-95M": published[0],
    "runs/95m-mine": str(tmp_path / "run"),
    "MERT-95m-mine": str(tmp_path / "hf"),
    "configs/mert.py:95m": "configs/mert.py:tiny",
  }

  def stand_in(args: list[str], *extra: str) -> list[str]:
    out = []
    for a in args[3:]:
      for k, v in stand_ins.items():
        a = a.replace(k, v)
      out.append(a)
    return [*out, *extra]

  prepare_cmd, train_cmd, convert_cmd, hub_cmd = commands
  assert prepare_main(stand_in(prepare_cmd, "--workers=2")) == 0
  tiny_flags = (
    "--config.model.codebook_size=1024",
    "--config.model.hidden_size=48",
    "--config.log_every=1",
  )
  stdout = train_command(*stand_in(train_cmd, *tiny_flags), "--config.total_steps=1")
  assert "(fairseq): label_embs_concat: 8 codebooks x 1028 labels" in stdout
  assert final_params(tmp_path / "run")[0] == 1
  assert convert_cli.main(stand_in(convert_cmd)) == 0
  assert (tmp_path / "hf" / "preprocessor_config.json").exists()
  # The hub-folder variant (a local published-format folder stands in for the hub id), through
  # loading and checking the weights and initialising the state; no step is compiled.
  stdout = train_command(
    *stand_in(hub_cmd, tiny_flags[0], "--config.total_steps=0"), f"--workdir={tmp_path / 'run_hf'}"
  )
  assert "(hf): no heads in the folder: heads start fresh" in stdout
