#!/usr/bin/env bash
# Every CPU benchmark, one after another, on a machine with nothing else running.
# Writes Markdown tables to runs/bench/ for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=runs/bench
mkdir -p "$out"
uptime | tee "$out/load_before.txt"
"$py" benchmarks/bench_model.py --out "$out/model.md"
"$py" benchmarks/bench_episodes.py --out "$out/episodes.md"
"$py" benchmarks/bench_training.py --out "$out/training.md"
"$py" benchmarks/bench_inference.py --out "$out/inference.md"
"$py" benchmarks/bench_superpixels.py --out "$out/superpixels.md"
uptime | tee "$out/load_after.txt"
