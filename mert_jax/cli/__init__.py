"""Command lines, one module each: python -m mert_jax.cli.NAME (installed as mert-NAME) for NAME in
train, convert, extract, probe, params, sweep, demo and compile_check; the rest are their parts
(extract_files, extract_beam, config_help)."""
