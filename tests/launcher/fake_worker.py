"""The tools a simulated TPU worker (tests/launcher/fake_gcloud.py) has in place of the real
ones: ``uv`` (worker_uv/uv) and ``curl`` (worker_bin/curl). Each records its argv, the worker and
its home as a JSON line in FAKE_GCLOUD_STATE/worker_calls.jsonl.

* ``uv venv [--python V] DIR``: a light virtualenv whose python is this machine's base interpreter
  and whose site-packages reads the test environment's packages (one path line in a .pth, so no
  other .pth of that environment applies: the project installed there is not importable).
* ``uv pip install --python DIR/bin/python -e PATH[EXTRAS]``: what an editable install leaves,
  a .pth with PATH, so the trainer imports the copy that was shipped to the worker; PATH must
  have a pyproject.toml declaring the extras.
* ``curl -LsSf https://astral.sh/uv/install.sh``: uv's installer, installing this fake uv in
  UV_INSTALL_DIR (default ~/.local/bin); any other address fails as offline.
"""

from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
UV_INSTALLER = "https://astral.sh/uv/install.sh"


def record(tool: str, argv: list[str]) -> None:
  with open(os.path.join(os.environ["FAKE_GCLOUD_STATE"], "worker_calls.jsonl"), "a") as f:
    entry = {"tool": tool, "argv": argv, "worker": os.environ.get("TPU_WORKER_ID")}
    f.write(json.dumps({**entry, "home": os.environ.get("HOME")}) + "\n")


def fail(tool: str, message: str, code: int = 2) -> int:
  print(f"{tool}: error: {message}", file=sys.stderr)
  return code


def site_packages(venv: str) -> str:
  return os.path.join(
    venv, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"
  )


def uv_venv(args: list[str]) -> int:
  python, rest = None, []
  it = iter(args)
  for a in it:
    if a == "--python":
      python = next(it)
    elif a.startswith("--python="):
      python = a.split("=", 1)[1]
    elif a in ("-q", "--quiet"):
      pass
    elif a.startswith("-"):
      return fail("uv", f"unexpected argument '{a}' (not simulated)")
    else:
      rest.append(a)
  if len(rest) != 1:
    return fail("uv", "uv venv takes one folder here")
  if python and not re.fullmatch(r"3\.\d+", python):
    return fail("uv", f"--python {python}: not simulated (give MAJOR.MINOR)")
  venv = os.path.expanduser(rest[0])
  if os.path.exists(venv):
    return fail("uv", f"{venv} exists (the launcher removes a venv it replaces)")
  base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
  os.makedirs(os.path.join(venv, "bin"))
  os.makedirs(site_packages(venv))
  version = ".".join(map(str, sys.version_info[:3]))
  with open(os.path.join(venv, "pyvenv.cfg"), "w") as f:
    f.write(f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\n")
    f.write(f"version = {version}\nuv = fake\n")
  for exe in ("python", "python3"):
    os.symlink(base, os.path.join(venv, "bin", exe))
  with open(os.path.join(site_packages(venv), "_fake_uv_stack.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")  # the test environment's packages
  asked = python or "any"
  print(f"Using CPython {version} (fake uv; asked for {asked})", file=sys.stderr)
  return 0


def uv_pip_install(args: list[str]) -> int:
  python, editable = None, None
  it = iter(args)
  for a in it:
    if a == "--python":
      python = next(it)
    elif a == "-e":
      editable = next(it)
    elif a in ("-q", "--quiet"):
      pass
    else:
      return fail("uv", f"unexpected argument '{a}' (not simulated)")
  if python is None or editable is None:
    return fail("uv", "uv pip install --python PY -e PATH[EXTRAS] only")
  venv = os.path.dirname(os.path.dirname(python))
  if not os.path.exists(os.path.join(venv, "pyvenv.cfg")):
    return fail("uv", f"{python} is not the python of a virtual environment")
  m = re.fullmatch(r"(.*?)(?:\[([\w,-]+)\])?", editable)
  path, extras = m.group(1), (m.group(2) or "").split(",") if m.group(2) else []
  try:
    with open(os.path.join(path, "pyproject.toml"), "rb") as f:
      project = tomllib.load(f)["project"]
  except FileNotFoundError:
    return fail("uv", f"{path} does not appear to be a Python project (no pyproject.toml)")
  missing = [e for e in extras if e not in project.get("optional-dependencies", {})]
  if missing:
    return fail("uv", f"{project['name']} has no extra named {missing[0]}")
  with open(os.path.join(site_packages(venv), f"_editable_{project['name']}.pth"), "w") as f:
    f.write(os.path.abspath(path) + "\n")
  print(f"Installed 1 package (fake uv): {project['name']} @ file://{path}", file=sys.stderr)
  return 0


def uv(args: list[str]) -> int:
  if args == ["--version"]:
    print("uv 0.0.0 (fake)")
    return 0
  if args[:1] == ["venv"]:
    return uv_venv(args[1:])
  if args[:2] == ["pip", "install"]:
    return uv_pip_install(args[2:])
  return fail("uv", f"uv {' '.join(args[:2])} is not simulated")


def curl(args: list[str]) -> int:
  if UV_INSTALLER not in args:
    return fail("curl", "(6) Could not resolve host (the simulated worker is offline)", 6)
  shim = os.path.join(HERE, "worker_uv", "uv")
  print(f'd="${{UV_INSTALL_DIR:-$HOME/.local/bin}}"; mkdir -p "$d" && cp "{shim}" "$d/uv"')
  print('echo "installing to $d (fake uv installer)"')
  return 0


def main() -> int:
  tool, args = sys.argv[1], sys.argv[2:]
  record(tool, args)
  return {"uv": uv, "curl": curl}[tool](args)


if __name__ == "__main__":
  sys.exit(main())
