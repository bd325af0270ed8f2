#!/usr/bin/env bash
# Launch MERT pretraining on a Cloud TPU slice (all workers), or as N local processes.
#
#   ./launch_tpu.sh --project=P --zone=us-central2-b --accelerator-type=v4-32 --name=mert-95m \
#     --config=configs/mert.py:95m --workdir=gs://BUCKET/runs/95m [--spot] [--queued] [--dry-run] \
#     [--config.FIELD=VALUE ...]
#   ./launch_tpu.sh --name=mert-95m --project=P --zone=Z --logs [--worker=N|all] [--follow]
#   ./launch_tpu.sh --name=mert-95m --project=P --zone=Z --stop     # stop training, keep the slice
#   ./launch_tpu.sh --name=mert-95m --project=P --zone=Z --delete   # give the slice back
#   ./launch_tpu.sh --local=2 --config=configs/mert.py:tiny --workdir=/tmp/run [--local-devices=4]
#
# A launch prints each command before it runs it (--dry-run only prints):
#   1. the fit check: python -m mert_jax.compile_check compiles the train step for the slice's
#      topology here and refuses a config that does not fit (--skip-compile-check: no check);
#   2. the code: this checkout's working tree (tracked files plus untracked ones that git does not
#      ignore: uncommitted edits run too, with a warning), packed here;
#   3. the slice: created when absent (tpu-vm create, or a queued resource with --queued, polled
#      until ACTIVE), reused when READY; a PREEMPTED slice (Spot) or a SUSPENDED/FAILED queued
#      resource is deleted and created again;
#   4. on every worker, stop what runs: the trainer this launcher started (SIGTERM, so it saves a
#      checkpoint; SIGKILL after 180 s), any other process holding the TPU (/dev/accel*,
#      /dev/vfio/N), libtpu's lock file /tmp/libtpu_lockfile; then copy the code there;
#   5. set up every worker (idempotent): uv (installed with its official installer when missing)
#      makes ~/mert-venv with Python 3.11 and installs the copy with the [tpu] extra. The TPU
#      image's own python3 is 3.10, older than the project needs (>= 3.11), so its venv + pip
#      cannot resolve the stack; uv fetches a managed 3.11 and resolves in seconds;
#   6. start the trainer on all workers at once, in the background (~/mert-train.log on each
#      worker, its pid in ~/mert-train.pid); jax.distributed finds the other workers itself.
# Restart = run the same launch command again: the same steps on the existing slice (a running
# trainer is stopped at step 4, with its checkpoint), and the trainer resumes from WORKDIR's latest
# checkpoint. After a Spot preemption the same command re-creates the slice, then resumes.
# --local=N runs N processes here on CPU devices with a loopback coordinator, through the same
# trainer flags, so the multi-host path is testable anywhere (no gcloud).
#
# Options:
#   --project=P             Google Cloud project of the slice
#   --zone=Z                zone of the slice (TPU v4: us-central2-b)
#   --accelerator-type=T    slice type: v4-8, v4-32, ... (default: v4-8)
#   --name=N                the slice's name (its tpu-vm and queued-resource id)
#   --config=RECIPE         the trainer's --config (configs/mert.py:95m, mert:95m or 95m)
#   --workdir=DIR           the trainer's --workdir (gs://BUCKET/... on a slice)
#   --runtime-version=V     TPU VM image (default: tpu-ubuntu2204-base)
#   --spot                  create a Spot slice (can be preempted; cheaper)
#   --queued                create the slice through a queued resource, not tpu-vm create
#   --wait-timeout=S        seconds to wait for the slice to be ACTIVE / READY (default: 3600);
#                           a queued resource stays queued after it: re-run to wait again
#   --poll-interval=S       seconds between state checks while waiting (default: 30)
#   --skip-compile-check    launch without the fit check (python -m mert_jax.compile_check)
#   --watch                 after the start, stay and watch the workers (every --poll-interval s):
#                           when a trainer exits with an error (status 1, 3 or 4: its own error, a
#                           failed or a lost peer; or it vanished), launch again (the trainer
#                           resumes from the newest checkpoint that verifies); status 5 (another
#                           trainer took the workdir over) is never restarted; ends when every
#                           worker's trainer exited 0
#   --max-restarts=N        with --watch: restarts before giving up (default: 3)
#   --dry-run               print every command without running any
#   --logs                  print the end of a worker's training log on an existing slice
#   --worker=N              with --logs: worker N (default: 0), or all (lines tagged by worker)
#   --follow                with --logs: keep following the log (Ctrl-C ends)
#   --stop                  stop training on every worker (checkpoint first); keep the slice
#   --delete                delete the slice (its queued resource too, if it has one)
#   --local=N               run N trainer processes on this machine instead of a slice
#   --local-devices=N       with --local: fake CPU devices per process (default: 4)
#   --config.FIELD=VALUE    a recipe field, passed to the trainer on every worker
#   -h, --help              this text
#
# Environment: PYTHON, the local python for the fit check and --local (default: python3).
set -euo pipefail

PROJECT="" ZONE="" ACCEL="v4-8" NAME="" CONFIG="" WORKDIR="" RUNTIME="tpu-ubuntu2204-base"
SPOT=0 QUEUED=0 DRY=0 LOCAL=0 LOCAL_DEVICES=4 DELETE=0 LOGS=0 STOP=0 FOLLOW=0 WORKER=""
WAIT_TIMEOUT=3600 POLL=30 COMPILE_CHECK=1 WATCH=0 MAX_RESTARTS=3
RESTART="${MERT_LAUNCH_RESTART:-0}"  # how many times --watch has launched again
PASS=()
ARGS=("$@")
for arg in "$@"; do
  case "$arg" in
    --project=*) PROJECT="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --accelerator-type=*) ACCEL="${arg#*=}" ;;
    --name=*) NAME="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --runtime-version=*) RUNTIME="${arg#*=}" ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --wait-timeout=*) WAIT_TIMEOUT="${arg#*=}" ;;
    --poll-interval=*) POLL="${arg#*=}" ;;
    --skip-compile-check) COMPILE_CHECK=0 ;;
    --watch) WATCH=1 ;;
    --max-restarts=*) MAX_RESTARTS="${arg#*=}" ;;
    --dry-run) DRY=1 ;;
    --logs) LOGS=1 ;;
    --worker=*) WORKER="${arg#*=}" ;;
    --follow) FOLLOW=1 ;;
    --stop) STOP=1 ;;
    --delete) DELETE=1 ;;
    --local=*) LOCAL="${arg#*=}" ;;
    --local-devices=*) LOCAL_DEVICES="${arg#*=}" ;;
    --config.*) PASS+=("$arg") ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "launch_tpu.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "$0")" && pwd)"  # the checkout that is shipped and whose code runs
PY="${PYTHON:-python3}"

die() {  # die MESSAGE...: one line on stderr (the words joined), then exit with $EXIT (default 1)
  echo "launch_tpu.sh: $*" >&2
  exit "${EXIT:-1}"
}

run() {  # print a command (shell-quoted), then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY" = 0 ]; then "$@"; fi
}

need() {  # each named variable must be set by its option
  for v in "$@"; do
    [ -n "${!v}" ] || EXIT=2 die "--$(echo "$v" | tr 'A-Z_' 'a-z-') is required (see --help)"
  done
}

count() {  # count NAME VALUE: VALUE must be a whole number of (seconds, processes, ...)
  [[ "$2" =~ ^[0-9]+$ ]] || EXIT=2 die "$1 must be a whole number, not '$2'"
}

# Checks of the options, before anything runs.
count --wait-timeout "$WAIT_TIMEOUT"
count --poll-interval "$POLL"
count --local "$LOCAL"
count --local-devices "$LOCAL_DEVICES"
count --max-restarts "$MAX_RESTARTS"
[ $((LOGS + STOP + DELETE + (LOCAL > 0))) -le 1 ] ||
  EXIT=2 die "--logs, --stop, --delete and --local are one action each: give one"
[ -z "$WORKER" ] || [ "$LOGS" = 1 ] || EXIT=2 die "--worker applies to --logs only"
[ "$FOLLOW" = 0 ] || [ "$LOGS" = 1 ] || EXIT=2 die "--follow applies to --logs only"
WORKER="${WORKER:-0}"
[ "$WORKER" = all ] || [[ "$WORKER" =~ ^[0-9]+$ ]] ||
  EXIT=2 die "--worker must be a worker number or all, not '$WORKER'"

# ---------------------------------------------------------------------------- N local processes
if [ "$LOCAL" != 0 ]; then
  need CONFIG WORKDIR
  PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pids=()
  for ((i = 0; i < LOCAL; i++)); do
    cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$LOCAL_DEVICES"
         "$PY" -m mert_jax.cli.train --config="$CONFIG" --workdir="$WORKDIR"
         --coordinator_address="127.0.0.1:$PORT" --num_processes="$LOCAL" --process_id="$i"
         "${PASS[@]+"${PASS[@]}"}")
    printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
    if [ "$DRY" = 0 ]; then "${cmd[@]}" > "$WORKDIR.process$i.log" 2>&1 & pids+=($!); fi
  done
  status=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "launch_tpu.sh: process $i failed; see $WORKDIR.process$i.log" >&2; status=1
    fi
  done
  exit $status
fi

# ---------------------------------------------------------------------------- a Cloud TPU slice
need NAME PROJECT ZONE
if [ "$DRY" = 0 ] && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud is not on PATH: install the Google Cloud CLI" \
    "(https://cloud.google.com/sdk/docs/install), run 'gcloud auth login', then run this again"
fi
G=(--project="$PROJECT" --zone="$ZONE")
SELF="$0 --name=$NAME --project=$PROJECT --zone=$ZONE"

# What runs on the workers (bash over gcloud ssh, in the worker's home). Each script first sets
# w, the worker's label in its messages: TPU_WORKER_ID where set, else the hostname (...-w-N).
WHO='w=$(if [ -n "${TPU_WORKER_ID:-}" ]; then echo "worker $TPU_WORKER_ID"; else hostname; fi)'

# Stop training and free the TPU. SIGTERM makes the trainer save a checkpoint at a step all
# workers agree on and exit 0; 180 s later it is killed. Processes still holding the TPU devices
# (a trainer of an earlier launch, a notebook) are killed, with sudo where the user is not root;
# lsof or else fuser finds them; absent devices or tools are skipped.
read -r -d '' CLEAN <<EOF || true
$WHO
alive() { s=\$(ps -o stat= -p "\$1" 2>/dev/null) && [ "\${s#Z}" = "\$s" ]; }
if [ -f ~/mert-train.pid ]; then
  pid=\$(cat ~/mert-train.pid)
  if alive "\$pid" && grep -q mert_jax.cli.train "/proc/\$pid/cmdline" 2>/dev/null; then
    echo "\$w: stopping the trainer (pid \$pid; it saves a checkpoint first)"
    kill -TERM "\$pid" 2>/dev/null || true
    for _ in \$(seq 900); do alive "\$pid" || break; sleep 0.2; done
    if alive "\$pid"; then
      echo "\$w: the trainer did not stop in 180 s; killing it"
      kill -KILL "\$pid" 2>/dev/null || true
    fi
  fi
  rm -f ~/mert-train.pid
fi
SUDO=""
if [ "\$(id -u)" != 0 ] && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
devs=\$(ls -d /dev/accel* /dev/vfio/[0-9]* 2>/dev/null || true)
holders=""
if [ -n "\$devs" ]; then
  if command -v lsof >/dev/null; then
    holders=\$(\$SUDO lsof -t \$devs 2>/dev/null | sort -u | tr '\n' ' ' || true)
  elif command -v fuser >/dev/null; then holders=\$(\$SUDO fuser \$devs 2>/dev/null || true)
  fi
fi
if [ -n "\${holders// /}" ]; then
  echo "\$w: killing processes holding the TPU: \$holders"
  \$SUDO kill -KILL \$holders 2>/dev/null || true
fi
\$SUDO rm -f /tmp/libtpu_lockfile
EOF

# Set up (idempotent): the shipped tree replaces the previous copy whole; uv from its official
# installer when missing; ~/mert-venv with Python 3.11 unless it already has >= 3.11; the copy
# installed editable with the [tpu] extra (the trainer imports the shipped code).
read -r -d '' SETUP <<'EOF' || true
set -e
rm -rf ~/mert-jax.new && mkdir ~/mert-jax.new && tar xzf ~/mert-jax.tar.gz -C ~/mert-jax.new
rm -rf ~/mert-jax && mv ~/mert-jax.new ~/mert-jax && rm -f ~/mert-jax.tar.gz
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null; then
  url=https://astral.sh/uv/install.sh
  if command -v curl >/dev/null; then curl -LsSf "$url"; else wget -qO- "$url"; fi |
    env UV_INSTALL_DIR="$HOME/.local/bin" UV_NO_MODIFY_PATH=1 sh
fi
if ! ~/mert-venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  rm -rf ~/mert-venv && uv venv --python 3.11 ~/mert-venv
fi
uv pip install -q --python ~/mert-venv/bin/python -e "$HOME/mert-jax[tpu]"
EOF

# Start the trainer in the background (one line: a dry run prints the flags readably). A
# subshell that ignores the end of the ssh session waits for it and writes its exit status to
# ~/mert-train.status, which --watch reads.
train_args() { printf '%q ' --config="$CONFIG" --workdir="$WORKDIR" "${PASS[@]+"${PASS[@]}"}"; }
START="cd ~/mert-jax && echo \"=== launch_tpu.sh: start \$(date -u +%FT%TZ) ===\" >> ~/mert-train.log"
START+=" && rm -f ~/mert-train.status && { ( trap '' HUP; nohup ~/mert-venv/bin/python -m"
START+=" mert_jax.cli.train $(train_args)>> ~/mert-train.log 2>&1 < /dev/null & p=\$!;"
START+=" echo \$p > ~/mert-train.pid; wait \$p; echo \$? > ~/mert-train.status )"
START+=" > /dev/null 2>&1 < /dev/null & }"

# --watch: each worker's trainer, one line: "LABEL: running", "LABEL: exited N" or "LABEL: gone"
# (no trainer and no status: the VM restarted, or the trainer was never started).
read -r -d '' STATE <<'EOF' || true
if [ -f ~/mert-train.status ]; then echo "$w: exited $(cat ~/mert-train.status)"
elif [ -f ~/mert-train.pid ] && kill -0 "$(cat ~/mert-train.pid)" 2>/dev/null; then echo "$w: running"
else echo "$w: gone"; fi
EOF
STATE="$WHO"$'\n'"$STATE"

ssh_all() {  # ssh_all COMMAND [WORKER]: run COMMAND on every worker (or one)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${G[@]}" --worker="${2:-all}" --command="$1"
}

describe_cmd() {  # describe_cmd qr|node: DESCRIBE = gcloud's describe of the state of the queued
  local what=(tpu-vm describe "$NAME" "${G[@]}" --format='value(state)')  # resource / TPU VM
  [ "$1" = node ] || what=(queued-resources describe "$NAME" "${G[@]}" --format='value(state.state)')
  DESCRIBE=(gcloud compute tpus "${what[@]}")
}

state_of() {  # state_of qr|node: the queued resource's / TPU VM's state, "" when there is none
  local out err
  err=$(mktemp)
  describe_cmd "$1"
  out=$("${DESCRIBE[@]}" 2>"$err") || out="?"
  if [ "$out" = "?" ]; then
    if grep -qi 'not_found\|not found' "$err"; then out=""
    else rm -f "$err"; die "gcloud cannot describe $NAME: $(grep -v '^\s*$' "$err" | tail -n 1)"; fi
  fi
  rm -f "$err"
  echo "$out"
}

wait_for() {  # wait_for qr|node WANT: poll the state until WANT; a dead end or the timeout exits
  local what state last="" start=$SECONDS
  if [ "$1" = qr ]; then what="queued resource $NAME"; else what="TPU VM $NAME"; fi
  if [ "$DRY" = 1 ]; then
    describe_cmd "$1"
    run "${DESCRIBE[@]}"
    echo "  (repeated every ${POLL} s until $2, at most ${WAIT_TIMEOUT} s)"
    return 0
  fi
  while :; do
    state=$(state_of "$1")
    [ "$state" = "$2" ] && { echo "$what is $2"; return 0; }
    case "$state" in
      "") die "$what disappeared while waiting for $2; run this again to create it" ;;
      FAILED|SUSPENDING|SUSPENDED|PREEMPTED|TERMINATED)
        die "$what is $state (not granted, or preempted) while waiting for $2; run this again to" \
          "delete and re-create it, or --delete" ;;
    esac
    [ "$state" = "$last" ] || echo "$what is $state; waiting for $2 ($((SECONDS - start)) s)"
    last=$state
    if [ $((SECONDS - start)) -ge "$WAIT_TIMEOUT" ]; then
      if [ "$1" = qr ]; then
        die "$what is still $state after ${WAIT_TIMEOUT} s (--wait-timeout); it stays queued:" \
          "run this again to keep waiting, or --delete to withdraw it"
      fi
      die "$what is still $state after ${WAIT_TIMEOUT} s (--wait-timeout); run this again to" \
        "keep waiting, or --delete"
    fi
    sleep "$POLL"
  done
}

delete_slice() {  # the queued resource (--force: its TPU VM too) when there is one, else the VM
  if [ "$1" = qr ]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${G[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${G[@]}" --quiet
  fi
}

need_slice() {  # --logs / --stop: the TPU VM must exist
  [ "$DRY" = 1 ] && return 0
  local state
  state=$(state_of node)
  [ -n "$state" ] || die "there is no TPU VM $NAME in $PROJECT/$ZONE (launch it first: see --help)"
  [ "$state" = READY ] ||
    die "TPU VM $NAME is $state, not READY; run the launch command again to re-create or wait for it"
}

# ---------------------------------------------------------------------------- --delete
if [ "$DELETE" = 1 ]; then
  kind=node
  if [ "$DRY" = 1 ]; then
    [ "$QUEUED" = 0 ] || kind=qr
  else  # what there is decides, whatever --queued says
    qr=$(state_of qr)
    node=$(state_of node)
    if [ -n "$qr" ]; then
      kind=qr
    elif [ -z "$node" ]; then
      echo "launch_tpu.sh: there is no TPU VM or queued resource $NAME in $PROJECT/$ZONE; nothing to delete" >&2
      exit 0
    fi
  fi
  delete_slice "$kind"
  exit 0
fi

# ---------------------------------------------------------------------------- --logs, --stop
if [ "$LOGS" = 1 ]; then
  need_slice
  TAIL="tail -n 100 ~/mert-train.log"
  [ "$FOLLOW" = 0 ] || TAIL="tail -n 100 -F ~/mert-train.log"
  if [ "$WORKER" = all ]; then TAIL="$TAIL | sed -u \"s/^/[\$w] /\""; fi
  HAVE="test -f ~/mert-train.log || { echo \"\$w: no training log (~/mert-train.log) yet\" >&2; exit 1; }"
  ssh_all "$WHO; $HAVE; $TAIL" "$WORKER" ||
    die "reading the log of worker $WORKER failed (above)"
  exit 0
fi
if [ "$STOP" = 1 ]; then
  need_slice
  ssh_all "$CLEAN" || die "stopping the workers of $NAME failed (above)"
  [ "$DRY" = 0 ] || exit 0
  echo "stopped training on $NAME; the slice keeps running (and billing): $SELF --delete gives it back"
  exit 0
fi

# ---------------------------------------------------------------------------- launch
need CONFIG WORKDIR

# 1. The fit check, here, before any slice is paid for.
if [ "$COMPILE_CHECK" = 1 ]; then
  check=("$PY" -m mert_jax.compile_check --config="$CONFIG" --topology="$ACCEL"
         "${PASS[@]+"${PASS[@]}"}")
  printf '+'; printf ' %q' "${check[@]}"; printf '\n'
  if [ "$DRY" = 0 ]; then
    err=$(mktemp)
    status=0
    (cd "$HERE" && "${check[@]}") 2>"$err" || status=$?
    if [ "$status" != 0 ]; then
      grep . "$err" | sed '$d' >&2 || true  # all but its last line (a traceback, say)
      why=$(grep . "$err" | tail -n 1 || true)
      rm -f "$err"
      EXIT="$status" die "the compile check refused $CONFIG on $ACCEL: ${why:-it exited $status};" \
        "fix the config, or --skip-compile-check to launch anyway"
    fi
    cat "$err" >&2
    rm -f "$err"
  fi
fi

# 2. The code: the working tree, not HEAD (uncommitted edits run too, so say so), packed here
#    before any slice is paid for.
ARCHIVE="$(mktemp -d)/mert-jax.tar.gz"
trap 'rm -rf "$(dirname "$ARCHIVE")"' EXIT
git -C "$HERE" rev-parse --git-dir >/dev/null 2>&1 ||
  die "$HERE is not a git checkout: the launcher ships the files git lists there"
changes=$(git -C "$HERE" status --porcelain | wc -l)
if [ "$changes" != 0 ]; then
  echo "launch_tpu.sh: warning: shipping the working tree with $changes uncommitted change(s)" \
    "(git status): the workers run them, HEAD alone does not have them" >&2
fi
echo "+ git ls-files -co --exclude-standard | tar -czf $ARCHIVE -T -"
if [ "$DRY" = 0 ]; then
  # Tracked files still present (a deleted one is not shipped) plus untracked, not ignored ones.
  (cd "$HERE" && git ls-files -z -co --exclude-standard --deduplicate |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done |
    COPYFILE_DISABLE=1 tar -czf "$ARCHIVE" --null -T -)
fi
# 3. The slice: reused when READY; created when absent; re-created after a preemption.
SPOT_FLAG=()
[ "$SPOT" = 0 ] || SPOT_FLAG=(--spot)
create_slice() {
  if [ "$1" = qr ]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${G[@]}" \
      --accelerator-type="$ACCEL" --runtime-version="$RUNTIME" "${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}"
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${G[@]}" --accelerator-type="$ACCEL" \
      --version="$RUNTIME" "${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}"
  fi
}
kind=node state=""
[ "$QUEUED" = 0 ] || kind=qr
if [ "$DRY" = 0 ]; then  # what exists decides, whatever --queued says
  state=$(state_of qr)  # a slice made from a queued resource is managed through it
  if [ -n "$state" ]; then
    kind=qr
  else
    state=$(state_of node)
    [ -z "$state" ] || kind=node
  fi
fi
case "$state" in
  "") create_slice "$kind" ;;
  FAILED|SUSPENDING|SUSPENDED|PREEMPTED|TERMINATED)
    echo "slice $NAME is $state (preempted or not granted): deleting it and creating it again"
    delete_slice "$kind"
    create_slice "$kind" ;;
  *) echo "slice $NAME exists ($state): using it" ;;
esac
[ "$kind" = node ] || wait_for qr ACTIVE
wait_for node READY

# 4. Stop whatever runs there and free the TPU; copy the code to every worker.
ssh_all "$CLEAN" || die "stopping the previous run on the workers of $NAME failed (above)"

run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:mert-jax.tar.gz" "${G[@]}" --worker=all ||
  die "copying the code to the workers of $NAME failed (above)"

# 5. Set up every worker.
ssh_all "$SETUP" ||
  die "setting up the workers of $NAME failed (above); fix it and run this again (setup is idempotent)"

# 6. Train on all workers.
ssh_all "$START" || die "starting the trainer on the workers of $NAME failed (above)"
[ "$DRY" = 0 ] || { echo "(dry run: nothing ran)"; exit 0; }
echo "started training on $NAME; it resumes from $WORKDIR's latest checkpoint if there is one"
echo "  logs:    $SELF --logs [--worker=N|all] [--follow]"
echo "  stop:    $SELF --stop      (restart: this launch command again)"
echo "  delete:  $SELF --delete"
[ "$WATCH" = 1 ] || exit 0

# 7. --watch: poll the workers; launch again (all steps: a preempted slice is re-created) when a
#    trainer failed, up to --max-restarts times, each restart logged.
echo "watching the workers every $POLL s (restarts so far: $RESTART of $MAX_RESTARTS)"
while true; do
  sleep "$POLL"
  states=$(gcloud compute tpus tpu-vm ssh "$NAME" "${G[@]}" --worker=all --command="$STATE" 2>&1) ||
    states="$states"$'\n'"slice: gone"  # the slice itself is gone (preempted): launch again
  failed=$(echo "$states" | grep -E ': (exited [1-9][0-9]*|gone)$' || true)
  if [ -z "$failed" ]; then
    if ! echo "$states" | grep -q ': running$'; then
      echo "training finished: every worker's trainer exited 0"
      exit 0
    fi
    continue
  fi
  failed=$(echo "$failed" | tr '\n' ';' | sed 's/;$//; s/;/; /g')
  if echo "$failed" | grep -q 'exited 5$\|exited 5;'; then
    EXIT=5 die "$failed: another trainer took $WORKDIR over; not restarting (see $SELF --logs)"
  fi
  if [ "$RESTART" -ge "$MAX_RESTARTS" ]; then
    die "$failed; gave up after $RESTART restart(s) (--max-restarts=$MAX_RESTARTS); see" \
      "$SELF --logs --worker=all"
  fi
  echo "launch_tpu.sh: $failed; restart $((RESTART + 1)) of $MAX_RESTARTS: launching again" \
    "(the trainer resumes from the newest checkpoint that verifies)"
  exec env MERT_LAUNCH_RESTART=$((RESTART + 1)) "$0" "${ARGS[@]}" --skip-compile-check
done
