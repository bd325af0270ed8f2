"""Probing frozen features (MARBLE v1): the head, its training, the tasks' metrics."""
