#!/bin/bash
# The GPU measurements of docs/training.md in one go: the suite on CUDA (in the background, on
# cores 8-15), time to accuracy with a cold then a warm compile cache, and the trainer against
# the hand-written reference (cores 0-7). Results go to $OUT (default runs/gpu-check).
# RESNETLAB_DATA names a folder holding fashion-mnist/*.gz where the system has no copy.
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-runs/gpu-check}
python3 -c "import torch,sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null ||
  { echo "gpu_check: CUDA is not available to python3's torch here; run it on a GPU machine" >&2; exit 2; }
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
python3 -c "import torch,sys;print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
python3 -c "from resnetlab.hardware import features_line; print('CPU:', features_line())"
(OMP_NUM_THREADS=1 taskset -c 8-15 timeout 330 python3 -m pytest -q -n 8 -p no:cacheprovider -rs \
   > $OUT/pytest.log 2>&1; echo "pytest rc $?" >> $OUT/pytest.log) &
echo "== time to accuracy, cold compile cache (auto recipe on CUDA)"
taskset -c 0-7 timeout 140 python3 benchmarks/time_to_accuracy.py --out /tmp/tta1 -- --model resnet20 --device cuda > $OUT/tta_cold.log 2>&1
echo "rc $?"; cat $OUT/tta_cold.log | cut -c1-220 | tail -32
cp /tmp/tta1/metrics.jsonl $OUT/tta_cold_metrics.jsonl 2>/dev/null
EP=""
grep -q "time to 94%: not reached" $OUT/tta_cold.log && EP="--epochs 30"
echo "== time to accuracy, warm compile cache $EP"
taskset -c 0-7 timeout 90 python3 benchmarks/time_to_accuracy.py $EP --out /tmp/tta2 -- --model resnet20 --device cuda > $OUT/tta_warm.log 2>&1
echo "rc $?"; cat $OUT/tta_warm.log | cut -c1-220 | tail -12
echo "== bench_train_cuda"
taskset -c 0-7 timeout 300 python3 benchmarks/bench_train_cuda.py --json > $OUT/bench_train.json 2> $OUT/bench_train.err
echo "rc $?"; cat $OUT/bench_train.json; tail -12 $OUT/bench_train.err | cut -c1-300
wait
echo "== pytest"; tail -25 $OUT/pytest.log | cut -c1-300
