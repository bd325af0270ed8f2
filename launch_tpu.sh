#!/usr/bin/env bash
# Launch MERT pretraining on a Cloud TPU v4 slice (all workers), or as N local processes.
#
#   ./launch_tpu.sh --project=P --zone=us-central2-b --accelerator-type=v4-32 --name=mert-95m \
#       --config=configs/mert.py:95m --workdir=gs://BUCKET/runs/95m [--runtime-version=tpu-ubuntu2204-base] \
#       [--spot] [--queued] [--dry-run] [--config.FIELD=VALUE ...]
#   ./launch_tpu.sh --name=mert-95m --project=P --zone=Z --logs       # stream worker 0's log
#   ./launch_tpu.sh --name=mert-95m --project=P --zone=Z --delete     # delete the slice
#   ./launch_tpu.sh --local=2 --config=configs/mert.py:tiny --workdir=/tmp/run [--local-devices=4]
#
# Steps (each printed before it runs; --dry-run only prints): create the slice (tpu-vm create, or a
# queued resource with --queued) unless it exists; copy this checkout (git archive of HEAD) to every
# worker; install it with the TPU extra in a venv on every worker (idempotent); start training on all
# workers at once in the background (one log per worker, ~/mert-train.log). jax.distributed
# finds the other workers by itself on TPU VMs. --local=N runs N processes here on CPU devices with a
# loopback coordinator, through the same trainer flags, so the multi-host path is testable anywhere.
#
# Options:
#   --project=P             Google Cloud project of the slice
#   --zone=Z                zone of the slice (TPU v4: us-central2-b)
#   --accelerator-type=T    slice type: v4-8, v4-32, ... (default: v4-8)
#   --name=N                the slice's name (its tpu-vm or queued-resource id)
#   --config=RECIPE         the trainer's --config (configs/mert.py:95m, mert:95m or 95m)
#   --workdir=DIR           the trainer's --workdir (gs://BUCKET/... on a slice)
#   --runtime-version=V     TPU VM image (default: tpu-ubuntu2204-base)
#   --spot                  create a Spot slice (can be preempted; cheaper)
#   --queued                create the slice through a queued resource, not tpu-vm create
#   --dry-run               print every command without running any
#   --logs                  follow worker 0's training log on an existing slice
#   --delete                delete the slice
#   --local=N               run N trainer processes on this machine instead of a slice
#   --local-devices=N       with --local: fake CPU devices per process (default: 4)
#   --config.FIELD=VALUE    a recipe field, passed to the trainer on every worker
#   -h, --help              this text
set -euo pipefail

PROJECT="" ZONE="" ACCEL="v4-8" NAME="" CONFIG="" WORKDIR="" RUNTIME="tpu-ubuntu2204-base"
SPOT=0 QUEUED=0 DRY=0 LOCAL=0 LOCAL_DEVICES=4 DELETE=0 LOGS=0
PASS=()
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
    --dry-run) DRY=1 ;;
    --local=*) LOCAL="${arg#*=}" ;;
    --local-devices=*) LOCAL_DEVICES="${arg#*=}" ;;
    --delete) DELETE=1 ;;
    --logs) LOGS=1 ;;
    --config.*) PASS+=("$arg") ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "launch_tpu.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

run() {  # print a command (shell-quoted), then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [ "$DRY" = 0 ]; then "$@"; fi
}

need() { for v in "$@"; do [ -n "${!v}" ] || { echo "launch_tpu.sh: --$(echo "$v" | tr 'A-Z_' 'a-z-') is required" >&2; exit 2; }; done; }

train_args() {
  printf '%q ' --config="$CONFIG" --workdir="$WORKDIR" "${PASS[@]+"${PASS[@]}"}"
}

if [ "$LOCAL" != 0 ]; then
  need CONFIG WORKDIR
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  pids=()
  for ((i = 0; i < LOCAL; i++)); do
    cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$LOCAL_DEVICES"
         python3 -m mert_jax.cli.train --config="$CONFIG" --workdir="$WORKDIR"
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

need NAME PROJECT ZONE
G=(--project="$PROJECT" --zone="$ZONE")
if [ "$DELETE" = 1 ]; then
  if [ "$QUEUED" = 1 ]; then run gcloud compute tpus queued-resources delete "$NAME" "${G[@]}" --force --quiet
  else run gcloud compute tpus tpu-vm delete "$NAME" "${G[@]}" --quiet; fi
  exit 0
fi
if [ "$LOGS" = 1 ]; then
  run gcloud compute tpus tpu-vm ssh "$NAME" "${G[@]}" --worker=0 --command="tail -n 200 -f ~/mert-train.log"
  exit 0
fi
need CONFIG WORKDIR

# 1. The slice (reused when it exists).
if [ "$DRY" = 1 ] || ! gcloud compute tpus tpu-vm describe "$NAME" "${G[@]}" >/dev/null 2>&1; then
  SPOT_FLAG=(); [ "$SPOT" = 1 ] && SPOT_FLAG=(--spot)
  if [ "$QUEUED" = 1 ]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${G[@]}" \
      --accelerator-type="$ACCEL" --runtime-version="$RUNTIME" "${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}"
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${G[@]}" --accelerator-type="$ACCEL" \
      --version="$RUNTIME" "${SPOT_FLAG[@]+"${SPOT_FLAG[@]}"}"
  fi
fi

# 2. The code: this checkout's HEAD, on every worker.
ARCHIVE="/tmp/mert-jax-$NAME.tar.gz"
run git archive --format=tar.gz -o "$ARCHIVE" HEAD
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$NAME:~/mert-jax.tar.gz" "${G[@]}" --worker=all

# 3. Install (idempotent): a venv with the TPU extra.
SETUP='rm -rf ~/mert-jax && mkdir -p ~/mert-jax && tar xzf ~/mert-jax.tar.gz -C ~/mert-jax && (test -d ~/mert-venv || python3 -m venv ~/mert-venv) && ~/mert-venv/bin/pip install -q -e ~/mert-jax[tpu]'
run gcloud compute tpus tpu-vm ssh "$NAME" "${G[@]}" --worker=all --command="$SETUP"

# 4. Train on all workers (background; one log per worker).
TRAIN="cd ~/mert-jax && nohup ~/mert-venv/bin/python -m mert_jax.cli.train $(train_args)> ~/mert-train.log 2>&1 &"
run gcloud compute tpus tpu-vm ssh "$NAME" "${G[@]}" --worker=all --command="$TRAIN"
echo "started $NAME; logs: $0 --name=$NAME --project=$PROJECT --zone=$ZONE --logs; delete: ... --delete"
