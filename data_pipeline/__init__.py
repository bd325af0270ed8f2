"""Audio corpus -> 24 kHz mono -> teacher tokens -> CRC-checked TFRecord shards -> grain reader.

Nothing here imports ``mert_jax``: the model and trainer depend on the data pipeline, not back.
"""
