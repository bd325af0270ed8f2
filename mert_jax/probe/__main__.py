"""``python -m mert_jax.probe``: mert_jax/cli/probe.py."""

import sys

from mert_jax.cli.probe import main

sys.exit(main())
