#!/usr/bin/env bash
# Train several CHAOS runs at once on one device (a GPU has room for many ResNet-18 runs), stop
# them all at a deadline, then evaluate every run and pack the result tables.
#
#   bash benchmarks/chaos_parallel.sh SECONDS RUN [RUN ...]
#   RUN = name:fold:setting[:group[:seed]]   e.g. fold3_s1:3:1  fold0_s2_upper:0:2:upper
#         (seed: --seed of that run, 0 by default; e.g. fold3_seed1:3:1:upper:1 for a second
#         seed, the partner of an ensemble; a --seed in TRAIN_FLAGS would override it)
#
# Environment: DEVICE (cuda), DATA (runs/gpu/chaos.npz, from `chaos_training.py pack`),
# ITERATIONS (7000), WORKERS (DataLoader workers per run, 1), OUT (where results.tar.gz goes; .),
# TRAIN_FLAGS (more `chaos_training.py train` flags for every run, e.g. the CPU recipe's:
# "--batch-size 4 --lr 4e-3 --lr-step 250 --amp on --bias-field 0.5 --pseudo-mode 2d_bodymask2"),
# EXPORT (if set, each run's fp16 weights, ~6 MB for ResNet-18, go to OUT/models.tar too).
# Each run resumes from runs/NAME/last.pt if it exists. A run still going at the deadline gets
# SIGTERM, saves its checkpoint at a step boundary, and is evaluated at the step it reached (its
# table names that step). Needs runs/pseudolabels_NAME.npz for the --pseudo-mode (2d by default;
# `chaos_training.py pseudolabel`).
set -u
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    sed -n 2,18p "$0"
    exit 2
fi
budget=$1
shift
device=${DEVICE:-cuda}
train="python3 benchmarks/chaos_training.py --device $device --data ${DATA:-runs/gpu/chaos.npz}"
out=${OUT:-.}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p runs/eval "$out"

parse() {  # name:fold:setting[:group[:seed]] -> the flags of chaos_training.py
    IFS=: read -r name fold setting group seed <<<"$1"
    flags="--run $name --fold $fold --setting $setting --group ${group:-upper} --seed ${seed:-0}"
}

started=$(date +%s)
for spec in "$@"; do
    parse "$spec"
    # shellcheck disable=SC2086
    timeout -s TERM -k 60 "$budget" $train --threads 1 train $flags \
        --iterations "${ITERATIONS:-7000}" --workers "${WORKERS:-1}" ${TRAIN_FLAGS:-} \
        >"runs/$name.log" 2>&1 &
done
wait
echo "training: $(($(date +%s) - started)) s for $# runs on $device"

for spec in "$@"; do
    parse "$spec"
    # shellcheck disable=SC2086
    $train --threads 1 evaluate $flags >"runs/eval_$name.txt" 2>&1 &
done
wait
names=()
for spec in "$@"; do
    parse "$spec"
    grep -h "^## \|^paper:\|^whole_volume:" "runs/eval_$name.txt" || tail -n 5 "runs/eval_$name.txt"
    grep -h "it/s" "runs/$name.log" | tail -n 1
    names+=("runs/$name.log" "runs/eval_$name.txt")
done
tar czf "$out/results.tar.gz" runs/eval "${names[@]}"
if [ -n "${EXPORT:-}" ]; then
    for spec in "$@"; do
        parse "$spec"
        # shellcheck disable=SC2086
        $train export $flags --out "runs/export/$name.pt" || true
    done
    tar cf "$out/models.tar" runs/export
fi
echo "total: $(($(date +%s) - started)) s; tables in $out/results.tar.gz"
