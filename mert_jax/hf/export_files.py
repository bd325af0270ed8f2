"""The files of a Hugging Face export folder: one name each (``convert.export_hf`` writes them,
``convert.import_hf`` and the model card read them)."""

HF_CONFIG_FILE = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_BIN = "pytorch_model.bin"  # transformers' older weights format (read, never written)
HEADS_FILE = "mert_heads.safetensors"
MERT_CONFIG_FILE = "mert_jax_config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
README_FILE = "README.md"
