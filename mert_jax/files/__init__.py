"""Where files live (local paths and gs:// buckets alike) and how a write is made whole-or-nothing.

The bottom layer: standard library and fsspec only; ``data_pipeline`` and every ``mert_jax`` package
build on it.
"""
