"""Command lines: python -m mert_jax.cli.{train,convert,extract,params,sweep,demo}."""
