"""Shared checks of the command lines' process boundary."""

import subprocess
import sys


def python_m_error_line(module: str, *args: str) -> str:
  """Runs ``python -m module args`` and asserts it fails with exit 1 and exactly one
  ``error: ...`` line on stderr, no traceback; returns that line."""
  proc = subprocess.run(
    [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  return lines[0]
