"""What a command shows a person at a terminal: option help, one-line errors naming the closest
valid name, and progress lines.

The bottom layer: standard library only; ``data_pipeline`` and every ``mert_jax`` package build
on it.
"""
