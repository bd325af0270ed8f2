"""mert-jax: MERT pretraining in JAX/Flax (see README.md for the tree)."""
