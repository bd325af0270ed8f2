"""Starting several cooperating test processes (distributed JAX, several readers)."""

import subprocess


def run_together(argvs: list[list[str]], env: dict[str, str], timeout: float) -> None:
  """Starts one process per argv at once (they wait for each other) and asserts each exits 0."""
  procs = [
    subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for argv in argvs
  ]
  for p in procs:
    _, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
