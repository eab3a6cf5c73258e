#!/bin/bash
# The studies of docs/experiments.md that one CPU session cannot hold, on a GPU in one go: the
# all-depths degradation study (plain and ResNet, depths 20-110) with 3 seeds at the CPU budget
# (5 epochs), then the gradients of its trained nets. Results go to $OUT (default
# runs/gpu-studies); DEVICE (default cuda), WORKERS (default 8 nets at once) and EXTRA (more flags,
# e.g. a CPU smoke run: DEVICE=cpu WORKERS=2 DEPTHS=8 EXTRA="--subset 256 --epochs 1") can be set.
# RESNETLAB_DATA names a folder holding fashion-mnist/*.gz where the system has no copy.
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu-studies} DEVICE=${DEVICE:-cuda} WORKERS=${WORKERS:-8}
DEPTHS=${DEPTHS:-20,32,44,56,110}
PY=${PYTHON:-python3}
if [ "${DEVICE%%:*}" = cuda ] && ! $PY -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_studies: DEVICE=$DEVICE but CUDA is not available to $PY's torch here (DEVICE=cpu runs on the CPU)" >&2; exit 2
fi
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || lscpu | grep "Model name"; nproc
  $PY -c "import torch; from resnetlab.hardware import features_line; print('CPU:', features_line(), '|', torch.get_num_threads(), 'torch threads')"; } | tee "$OUT/machine.txt"
echo "== degradation, depths $DEPTHS, 3 seeds, $WORKERS workers on $DEVICE"
start=$(date +%s)
# shellcheck disable=SC2086
$PY -m resnetlab experiment degradation --data fashion-mnist --out "$OUT/degradation" \
    --depths "$DEPTHS" --seeds 3 --workers "$WORKERS" --device "$DEVICE" $EXTRA \
    > "$OUT/degradation.log" 2>&1
echo "rc $? in $(( $(date +%s) - start )) s"; grep -E "^plan|estimated|study done|error" "$OUT/degradation.log" | cut -c1-300
cat "$OUT/degradation/degradation.md" 2>/dev/null
echo "== gradients of the trained nets"
$PY -m resnetlab experiment gradients --data fashion-mnist --out "$OUT/gradients" \
    --from "$OUT/degradation" --seeds 3 > "$OUT/gradients.log" 2>&1
echo "rc $?"; tail -4 "$OUT/gradients.log" | cut -c1-300; cat "$OUT/gradients/gradients.md" 2>/dev/null
