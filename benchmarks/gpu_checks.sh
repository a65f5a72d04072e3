#!/usr/bin/env bash
# All a GPU lease is for, as one command: the CUDA tests, the training benchmark on the GPU, then
# CHAOS runs side by side until a deadline (benchmarks/chaos_parallel.sh), each then evaluated.
#
#   OUT=DIR bash benchmarks/gpu_checks.sh SECONDS RUN [RUN ...]
#   RUN = name:fold:setting[:group], as for chaos_parallel.sh
#
# SECONDS bounds the whole script: the runs train for what the tests and the benchmark leave,
# less EVAL_SECONDS (120) kept for saving and evaluation. Needs runs/gpu/chaos.npz
# (`chaos_training.py pack`) and runs/pseudolabels_2d.npz (`chaos_training.py pseudolabel`).
# Writes machine.txt, cuda_tests.txt, bench_training_cuda.md and results.tar.gz to OUT.
set -u
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    sed -n 2,11p "$0"
    exit 2
fi
total=$1
shift
started=$(date +%s)
out=${OUT:-runs/gpu_checks}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "cpu cores: $(nproc)"
    python3 -c "import torch; print('torch', torch.__version__)"
} 2>&1 | tee "$out/machine.txt"
timeout 120 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 \
    | tail -n 8 | tee "$out/cuda_tests.txt"
echo "tests done at $(($(date +%s) - started)) s"
timeout 150 python3 benchmarks/bench_training.py --device cuda \
    --out "$out/bench_training_cuda.md" 2>&1 | tail -n 20
left=$((total - ($(date +%s) - started) - ${EVAL_SECONDS:-120}))
echo "benchmark done at $(($(date +%s) - started)) s; training for $left s"
DEVICE=cuda OUT="$out" bash benchmarks/chaos_parallel.sh "$left" "$@"
