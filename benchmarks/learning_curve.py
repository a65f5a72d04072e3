"""Dice against training steps and CPU hours for one or more runs: a learning curve, and the
Dice one hour of CPU buys with each backbone.

Usage:
    python benchmarks/learning_curve.py \
        --point "resnet18:2500:runs/RUN:runs/eval/VAL.json:runs/eval/HELD_OUT.json" \
        --point ...

Each point is ``LABEL:STEP:RUN_DIR:VALIDATION_JSON:HELD_OUT_JSON``. The hours are the training
seconds ``metrics.csv`` of RUN_DIR records at STEP (the trainer's own clock, which a resumed
run continues; runs written before the clock was saved in checkpoints restart it in each
process, and a restart is added on). The run must have started from step 0, not continued
another run's checkpoint. VALIDATION_JSON is a ``chaos_volume.py --split
validation --variants 7`` output (the realistic protocol on the fold's training patients), and
HELD_OUT_JSON a ``chaos_training.py evaluate`` result table (its queries). Either may be ``-``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
from chaos_volume import DEFAULT_VARIANT, organ_means  # this folder is on sys.path

import fewshotseg as fss


def hours_at(run_dir: Path, step: int) -> float:
    """Training hours at ``step`` from the run's metrics log (the row at or just before it)."""
    seconds, earlier, previous = math.nan, 0.0, 0.0
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if int(row["step"]) > step:
                break
            clock = float(row["seconds"])
            if clock < previous:  # an old run resumed in a new process: its clock restarted
                earlier += previous
            seconds, previous = earlier + clock, clock
    return seconds / 3600


def validation_mean(path: str) -> float:
    """Mean Dice (%) of a validation file: per organ over the queries, then over organs."""
    if path == "-":
        return math.nan
    per_query = json.loads(Path(path).read_text())["results"][DEFAULT_VARIANT]
    return 100 * float(np.nanmean(list(organ_means(per_query).values())))


def held_out_means(path: str) -> dict[str, float]:
    if path == "-":
        return {}
    table = fss.ResultTable.load(path)
    protocols = ("realistic", "paper", "whole_volume")
    return {p: 100 * table.filter(protocol=p).mean() for p in protocols}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--point", action="append", required=True,
                        help="LABEL:STEP:RUN_DIR:VALIDATION_JSON:HELD_OUT_JSON")  # fmt: skip
    args = parser.parse_args()
    print("| model | steps | hours of one core | validation, realistic | held-out, realistic "
          "| held-out, paper | held-out, whole volume |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for point in args.point:
        label, step, run_dir, val, held = point.split(":")
        hours = hours_at(Path(run_dir), int(step))
        h = held_out_means(held)
        cells = [validation_mean(val), h.get("realistic", math.nan), h.get("paper", math.nan),
                 h.get("whole_volume", math.nan)]  # fmt: skip
        text = " | ".join("" if math.isnan(c) else f"{c:.2f}" for c in cells)
        print(f"| {label} | {int(step)} | {hours:.2f} | {text} |")


if __name__ == "__main__":
    main()
