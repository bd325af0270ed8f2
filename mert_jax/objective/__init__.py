"""MERT's masked-prediction objective: span masking, in-batch mixup, the CQT target, the loss."""
