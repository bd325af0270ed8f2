"""A stand-in for the Google Cloud CLI's TPU commands, for launch_tpu.sh's tests (run as
tests/launcher/bin/gcloud, first on PATH). It answers what the launcher uses the way the real CLI
does and records every call (argv, one JSON line each, in STATE/calls.jsonl):

  gcloud compute tpus tpu-vm create|describe|delete|scp|ssh NAME ...
  gcloud compute tpus queued-resources create|describe|delete NAME ...

State lives in the folder FAKE_GCLOUD_STATE. A slice of type v4-N has N/8 workers (at least one;
FAKE_GCLOUD_WORKERS overrides), each a folder of its own (its home: scp copies into it, ssh runs
``bash -c COMMAND`` there with HOME set to it, all workers in parallel for --worker=all, and what
ssh starts in the background keeps running after ssh returns, as on a VM). In place of the TPU
metadata through which jax.distributed finds the other workers, ssh exports
JAX_COORDINATOR_ADDRESS (a free local port per call), JAX_NUM_PROCESSES, JAX_PROCESS_ID,
TPU_WORKER_ID, and CPU devices (JAX_PLATFORMS=cpu, FAKE_GCLOUD_DEVICES per worker, default 2), so
the workers train as one multi-process JAX job on this machine. Their PATH is the system's
(python3 there is not the project's), with tests/launcher/worker_bin (a fake curl) and, unless
FAKE_GCLOUD_WORKER_UV=0, tests/launcher/worker_uv (a fake uv; see fake_worker.py) in front.

States: tpu-vm create makes a VM READY (FAKE_GCLOUD_NODE_STATES, e.g. "CREATING,READY", makes
successive describes walk through them); queued-resources create walks successive describes
through FAKE_GCLOUD_QR_STATES (default ACCEPTED, WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE), and
the VM (node id) exists READY from ACTIVE on. ``preempt`` (for tests) kills a slice's processes
and marks it PREEMPTED (its queued resource SUSPENDED); delete kills them too (the VMs go away).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER_BIN = os.path.join(HERE, "worker_bin")
WORKER_UV = os.path.join(HERE, "worker_uv")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QR_STATES = "ACCEPTED,WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE"

# Flags each command accepts besides --project, --zone, --quiet, --format (True: takes a value).
FLAGS = {
  ("tpu-vm", "create"): {"accelerator-type": True, "version": True, "spot": False},
  ("tpu-vm", "describe"): {},
  ("tpu-vm", "delete"): {},
  ("tpu-vm", "scp"): {"worker": True},
  ("tpu-vm", "ssh"): {"worker": True, "command": True},
  ("queued-resources", "create"): {
    "node-id": True,
    "accelerator-type": True,
    "runtime-version": True,
    "spot": False,
  },
  ("queued-resources", "describe"): {},
  ("queued-resources", "delete"): {"force": False},
}


class Error(Exception):
  """A gcloud error: ``ERROR: (gcloud.GROUP.VERB) MESSAGE`` on stderr, exit status ``code``."""

  def __init__(self, message: str, code: int = 1):
    super().__init__(message)
    self.code = code


# ----------------------------------------------------------------------------- state


def _state_dir() -> str:
  d = os.environ.get("FAKE_GCLOUD_STATE")
  if not d:
    raise Error("FAKE_GCLOUD_STATE is not set (the fake gcloud keeps its state there)")
  return d


def _path(state: str, kind: str, name: str) -> str:
  return os.path.join(state, kind, name + ".json")


def _load(state: str, kind: str, name: str) -> dict | None:
  try:
    with open(_path(state, kind, name)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _save(state: str, kind: str, name: str, res: dict) -> None:
  os.makedirs(os.path.join(state, kind), exist_ok=True)
  tmp = _path(state, kind, name) + ".tmp"
  with open(tmp, "w") as f:
    json.dump(res, f)
  os.replace(tmp, _path(state, kind, name))


def homes_of(state: str, name: str) -> str:
  """The folder holding slice ``name``'s worker homes (worker-0, worker-1, ...)."""
  return os.path.join(state, "vms", name)


def home_of(state: str, name: str, worker: int) -> str:
  return os.path.join(homes_of(state, name), f"worker-{worker}")


def _workers(accelerator_type: str) -> int:
  if os.environ.get("FAKE_GCLOUD_WORKERS"):
    return int(os.environ["FAKE_GCLOUD_WORKERS"])
  try:
    return max(1, int(accelerator_type.rsplit("-", 1)[1]) // 8)  # v4: 4 chips (8 cores) a host
  except (IndexError, ValueError):
    raise Error(f"INVALID_ARGUMENT: accelerator type '{accelerator_type}' is not valid") from None


def _make_node(state: str, project: str, zone: str, name: str, spec: dict, seq: list[str]) -> None:
  accel, runtime, spot = spec["acceleratorType"], spec["runtime"], spec["spot"]
  node = {
    "name": f"projects/{project}/locations/{zone}/nodes/{name}",
    "acceleratorType": accel,
    "runtimeVersion": runtime,
    "schedulingConfig": {"spot": bool(spot)},
    "state": seq[0],
    "upcoming": seq[1:],
    "workers": _workers(accel),
  }
  shutil.rmtree(homes_of(state, name), ignore_errors=True)  # a new VM has fresh disks
  for w in range(node["workers"]):
    os.makedirs(home_of(state, name, w))
  _save(state, "nodes", name, node)


def kill_workers(state: str, name: str | None = None) -> list[int]:
  """SIGKILLs every process started on slice ``name``'s workers (every slice's when None), found
  by the variables ssh gave them (FAKE_GCLOUD_VM, FAKE_GCLOUD_STATE): this fake's processes only;
  returns their pids."""
  if name is None:
    marker = f"FAKE_GCLOUD_STATE={state}".encode()
  else:
    marker = f"FAKE_GCLOUD_VM={homes_of(state, name)}".encode()
  killed = []
  for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if marker not in f.read().split(b"\0"):
          continue
      os.kill(int(pid), signal.SIGKILL)
      killed.append(int(pid))
    except (OSError, ProcessLookupError):
      pass
  return killed


def preempt(state: str, name: str) -> None:
  """What a Spot preemption does: the workers' processes die, the VM is PREEMPTED and its queued
  resource (if any) SUSPENDED."""
  kill_workers(state, name)
  node = _load(state, "nodes", name)
  assert node is not None, f"no slice {name}"
  node.update(state="PREEMPTED", upcoming=[])
  _save(state, "nodes", name, node)
  qr = _load(state, "qrs", name)
  if qr is not None:
    qr.update(state={"state": "SUSPENDED"}, upcoming=[])
    _save(state, "qrs", name, qr)


def calls(state: str) -> list[list[str]]:
  """Every recorded call's argv (without the leading ``gcloud``), in order."""
  path = os.path.join(state, "calls.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["argv"] for line in f]


# ----------------------------------------------------------------------------- commands


def _not_found(kind: str, project: str, zone: str, name: str) -> Error:
  what = "nodes" if kind == "nodes" else "queuedResources"
  return Error(
    f"NOT_FOUND: Resource 'projects/{project}/locations/{zone}/{what}/{name}' was not found"
  )


def _advance(state: str, kind: str, name: str, res: dict) -> dict:
  """A describe sees the current state; the next one sees the next state of the walk."""
  shown = json.loads(json.dumps(res))
  if res.get("upcoming"):
    nxt = res["upcoming"].pop(0)
    if kind == "qrs":
      res["state"] = {"state": nxt}
    else:
      res["state"] = nxt
    _save(state, kind, name, res)
  return shown


def _activate(state: str, qr: dict, project: str, zone: str) -> None:
  """A queued resource that turned ACTIVE has its VM, READY."""
  if qr["state"]["state"] == "ACTIVE" and _load(state, "nodes", qr["nodeId"]) is None:
    _make_node(state, project, zone, qr["nodeId"], qr["spec"], ["READY"])


def _value(res: dict, fmt: str | None) -> str:
  """``--format=value(a.b)`` as gcloud prints it; no format: a YAML-ish dump."""
  if not fmt:
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in res.items() if k != "upcoming")
  if not (fmt.startswith("value(") and fmt.endswith(")")):
    raise Error(f"fake gcloud: format {fmt!r} is not simulated")
  out = []
  for field in fmt[len("value(") : -1].split(","):
    v: object = res
    for part in field.strip().split("."):
      v = v.get(part, "") if isinstance(v, dict) else ""
    out.append("" if v is None else str(v))
  return "\t".join(out) + "\n"


def _workers_of(node: dict, worker: str) -> list[int]:
  if worker == "all":
    return list(range(node["workers"]))
  if not worker.isdigit() or int(worker) >= node["workers"]:
    raise Error(f"INVALID_ARGUMENT: --worker={worker}: the slice has {node['workers']} workers")
  return [int(worker)]


def _worker_env(state: str, name: str, node: dict, w: int, port: int) -> dict:
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("FAKE_GCLOUD_")
  }
  path = [WORKER_BIN] + ([WORKER_UV] if os.environ.get("FAKE_GCLOUD_WORKER_UV", "1") != "0" else [])
  devices = os.environ.get("FAKE_GCLOUD_DEVICES", "2")
  env.update(
    HOME=home_of(state, name, w),
    PATH=":".join(path + [SYSTEM_PATH]),
    TPU_WORKER_ID=str(w),
    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
    JAX_NUM_PROCESSES=str(node["workers"]),
    JAX_PROCESS_ID=str(w),
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    FAKE_GCLOUD_STATE=state,
    FAKE_GCLOUD_VM=homes_of(state, name),
    FAKE_GCLOUD_PYTHON=sys.executable,
    FAKE_GCLOUD_TOOLS=HERE,
  )
  return env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _remote(state: str, name: str, arg: str) -> str:
  """``NAME:PATH`` -> the path on a worker, relative to its home ("~/" allowed)."""
  node_name, _, path = arg.partition(":")
  if node_name != name:
    raise Error(f"fake gcloud: scp to {node_name!r} but the command names {name!r}")
  return path[2:] if path.startswith("~/") else path


def _parse(argv: list[str]) -> tuple[tuple[str, str], list[str], dict[str, str | bool]]:
  if argv[:2] != ["compute", "tpus"] or len(argv) < 4:
    raise Error(f"fake gcloud: {' '.join(argv[:4])} is not simulated", 2)
  group, verb = argv[2], argv[3]
  if (group, verb) not in FLAGS:
    raise Error(f"fake gcloud: compute tpus {group} {verb} is not simulated", 2)
  allowed = {"project": True, "zone": True, "quiet": False, "format": True, **FLAGS[group, verb]}
  positional, flags = [], {}
  for a in argv[4:]:
    if not a.startswith("--"):
      positional.append(a)
      continue
    key, eq, value = a[2:].partition("=")
    if key not in allowed or allowed[key] != bool(eq):
      raise Error(f"unrecognized arguments: {a}", 2)
    flags[key] = value if eq else True
  for key in ("project", "zone"):
    if key not in flags:
      raise Error(f"--{key} is required here (the launcher always names it)", 2)
  return (group, verb), positional, flags


def gcloud(argv: list[str]) -> int:
  state = _state_dir()
  os.makedirs(state, exist_ok=True)
  with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": argv, "time": time.time()}) + "\n")
  (group, verb), pos, flags = _parse(argv)
  project, zone, fmt = flags["project"], flags["zone"], flags.get("format")
  if not pos:
    raise Error("argument NAME: Must be specified.", 2)
  name = pos[0] if verb != "scp" else pos[-1].partition(":")[0]  # scp SRC NAME:DEST
  node = _load(state, "nodes", name)
  qr = _load(state, "qrs", name)

  if group == "queued-resources":
    if verb == "create":
      if qr is not None or node is not None:
        raise Error(f"ALREADY_EXISTS: Resource '{name}' already exists")
      seq = os.environ.get("FAKE_GCLOUD_QR_STATES", QR_STATES).split(",")
      qr = {
        "name": f"projects/{project}/locations/{zone}/queuedResources/{name}",
        "nodeId": flags["node-id"],
        "state": {"state": seq[0]},
        "upcoming": seq[1:],
        "spec": {
          "acceleratorType": flags["accelerator-type"],
          "runtime": flags["runtime-version"],
          "spot": bool(flags.get("spot")),
        },
      }
      _save(state, "qrs", name, qr)
      _activate(state, qr, project, zone)
      print(f"Create request issued for: [{name}]", file=sys.stderr)
      return 0
    if qr is None:
      raise _not_found("qrs", project, zone, name)
    if verb == "describe":
      shown = _advance(state, "qrs", name, qr)
      _activate(state, qr, project, zone)
      sys.stdout.write(_value(shown, fmt))
      return 0
    # delete
    if node is not None and not flags.get("force"):
      raise Error("FAILED_PRECONDITION: the queued resource has a node; delete it with --force")
    if node is not None:
      kill_workers(state, name)
      os.remove(_path(state, "nodes", qr["nodeId"]))
      shutil.rmtree(homes_of(state, qr["nodeId"]), ignore_errors=True)
    os.remove(_path(state, "qrs", name))
    print(f"Deleted queued resource [{name}].", file=sys.stderr)
    return 0

  if verb == "create":
    if node is not None:
      raise Error(f"ALREADY_EXISTS: Resource '{name}' already exists")
    spec = {
      "acceleratorType": flags["accelerator-type"],
      "runtime": flags["version"],
      "spot": bool(flags.get("spot")),
    }
    seq = os.environ.get("FAKE_GCLOUD_NODE_STATES", "READY").split(",")
    _make_node(state, project, zone, name, spec, seq)
    print(f"Created tpu [{name}].", file=sys.stderr)
    return 0
  if node is None:
    raise _not_found("nodes", project, zone, name)
  if verb == "describe":
    sys.stdout.write(_value(_advance(state, "nodes", name, node), fmt))
    return 0
  if verb == "delete":
    if qr is not None:
      raise Error("FAILED_PRECONDITION: the node belongs to a queued resource; delete that")
    kill_workers(state, name)
    os.remove(_path(state, "nodes", name))
    shutil.rmtree(homes_of(state, name), ignore_errors=True)
    print(f"Deleted tpu [{name}].", file=sys.stderr)
    return 0
  if node["state"] != "READY":
    raise Error(f"FAILED_PRECONDITION: the TPU VM is {node['state']}, not READY (ssh/scp fail)")
  workers = _workers_of(node, str(flags.get("worker", "0")))
  if verb == "scp":
    if len(pos) != 2:
      raise Error("fake gcloud: scp SRC NAME:DEST only", 2)
    for w in workers:
      dest = os.path.join(home_of(state, name, w), _remote(state, name, pos[1]))
      shutil.copyfile(pos[0], dest)
    return 0
  # ssh
  if len(pos) != 1 or "command" not in flags:
    raise Error("fake gcloud: ssh NAME --command=... only (no interactive session)", 2)
  port = _free_port()
  procs = [
    subprocess.Popen(
      ["bash", "-c", flags["command"]],
      cwd=home_of(state, name, w),
      env=_worker_env(state, name, node, w, port),
      stdin=subprocess.DEVNULL,
      start_new_session=True,  # what ssh starts in the background outlives this call
    )
    for w in workers
  ]
  codes = [p.wait() for p in procs]
  bad = [(w, c) for w, c in zip(workers, codes) if c]
  if bad:
    w, c = bad[0]
    print(f"ERROR: (gcloud.compute.tpus.tpu-vm.ssh) [worker {w}] exited with {c}", file=sys.stderr)
    return c
  return 0


def main() -> int:
  argv = sys.argv[1:]
  try:
    return gcloud(argv)
  except Error as err:
    where = ".".join(["gcloud", *[a for a in argv[:4] if not a.startswith("-")]])
    print(f"ERROR: ({where}) {err}", file=sys.stderr)
    return err.code


if __name__ == "__main__":
  sys.exit(main())
