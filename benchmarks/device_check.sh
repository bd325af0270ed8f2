#!/usr/bin/env bash
# Issue 7's accelerator measurements, prepared for a session that is lent a GPU (the project's
# `run` tool: one H100/H200, at most 10 min per command, 15 min of device time per session).
# Each part fits one command (~5-8 min including compiles); results land in $OUT.
#
#   # here, once: the one package the device image lacks (pure Python)
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
#   # on the device (carry: [".whl"]):
#   bash benchmarks/device_check.sh A      # 95M and 330M full-step table over batch sizes
#   bash benchmarks/device_check.sh B      # switches (pos-conv gradient, remat), profile trace
#   DEVICE_CHECK_SMOKE=1 bash benchmarks/device_check.sh A   # tiny sizes: checks the script on a CPU
#
# Record the printed rows in benchmarks/README.md with the device, date and JAX version.
set -uo pipefail
part=${1:-A}
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
bench() { "$py" benchmarks/train_step.py --json="$out/results.jsonl" "$@" 2>&1 | tee -a "$out/log"; }

if [ "${DEVICE_CHECK_SMOKE:-0}" = 1 ]; then
  s95="--sizes=tiny --seconds=2"; s330="--sizes=tiny --seconds=2"; b95=2,4; b330=2; b1=2
else
  s95="--sizes=95m"; s330="--sizes=330m"; b95=32,64,128; b330=16,32,64; b1=64
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$out/log"
case "$part" in
  A)
    bench $s95 --batches=$b95 --steps=5
    bench $s330 --batches=$b330 --steps=3
    ;;
  B)
    bench $s95 --batches=$b1 --steps=5 --set=model.pos_conv_impl=einsum     # vs part A's auto (= xla on GPU)
    bench $s95 --batches=$b1 --steps=5 --set=model.remat=true --set=model.remat_policy=dots
    bench $s95 --batches=$b1 --steps=3 --profile="$out/trace"
    ;;
  *) echo "usage: $0 A|B" >&2; exit 2 ;;
esac
