"""Checkpoints on disk, below the trainer: model checkpoints (``model``), the steps of a training
workdir (``steps``), their fingerprints, the one-line errors of a checkpoint that cannot be used,
and the orbax output those errors replace. The trainer's own save and restore are
``mert_jax/train/checkpoints.py``.
"""
