#!/usr/bin/env bash
# TPU v4 pod launcher: not built yet (issue 6). It exits with an error rather than pretending.
echo "launch_tpu.sh: not implemented yet (tracked as issue 6: configs, sweeps, launch_tpu.sh)." >&2
exit 2
