"""Parameter counts, pinned once for every test that checks them.

``BACKBONE_PARAMS`` is the backbone (= ``transformers.HubertModel`` with the same config, checked in
tests/hf/test_convert.py); ``TOTAL_PARAMS`` adds the pretraining heads of ``model_config(size)``
(1024 codes per codebook). The tiny recipe (configs/mert.py:tiny) uses 64 codes per codebook:
``TINY_RECIPE_TOTAL_PARAMS``; the small recipe 256: ``SMALL_RECIPE_TOTAL_PARAMS`` (the 3.94M of
docs/probing.md).
"""

BACKBONE_PARAMS: dict[str, int] = {
  "tiny": 39_216,
  "small": 3_588_128,
  "95m": 94_371_712,
  "330m": 315_428_992,
  "1b": 962_487_680,
}

TOTAL_PARAMS: dict[str, int] = {
  "tiny": 186_112,
  "small": 4_332_400,
  "95m": 95_550_160,
  "330m": 317_875_664,
  "1b": 965_282_512,
}

TINY_RECIPE_TOTAL_PARAMS = 63_232
SMALL_RECIPE_TOTAL_PARAMS = 3_939_184
