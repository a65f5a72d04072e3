"""`benchmarks/learning_curve.py`'s training hours: the trainer's clock read from metrics.csv,
for runs that kept it over a resume and for older runs whose clock restarted per process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
learning_curve = pytest.importorskip("learning_curve", reason="needs the benchmark's imports")


def write_metrics(folder: Path, rows: list[tuple[int, float]]) -> Path:
    lines = ["step,loss,seg_loss,align_loss,lr,episodes_per_s,seconds"]
    lines += [f"{step},0.5,0.4,0.1,0.001,2.0,{seconds}" for step, seconds in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_hours_at_reads_the_row_at_or_before_the_step(tmp_path):
    run = write_metrics(tmp_path, [(50, 360.0), (100, 720.0), (150, 1080.0)])
    assert learning_curve.hours_at(run, 100) == pytest.approx(0.2)
    assert learning_curve.hours_at(run, 149) == pytest.approx(0.2)
    assert learning_curve.hours_at(run, 10_000) == pytest.approx(0.3)


def test_hours_at_adds_a_clock_that_restarted_in_a_resumed_process(tmp_path):
    # resumed from the step-100 checkpoint: steps 101-150 ran twice, and both count as time spent
    run = write_metrics(tmp_path, [(50, 360.0), (100, 720.0), (150, 1080.0), (150, 400.0),
                                   (200, 760.0)])  # fmt: skip
    assert learning_curve.hours_at(run, 200) == pytest.approx((1080 + 760) / 3600)
    assert learning_curve.hours_at(run, 100) == pytest.approx(0.2)
