"""Every example runs in its ``--quick`` form (in a subprocess, as a user would run it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewshotseg.io import load_label_map, load_volume

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str, timeout: float = 60) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_examples_are_numbered_and_documented():
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == [
        "00_quickstart.py", "01_pseudolabels.py", "02_train.py", "03_predict.py",
        "04_evaluate.py",
    ]  # fmt: skip
    for name in scripts:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "--quick" in text


def test_quickstart():
    out = _run("00_quickstart.py")
    assert "trained 5 steps" in out and "Dice: organ 1" in out


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, request) -> Path:
    """Steps 1 and 2 (pseudolabels, training) in one output folder, shared by steps 3 and 4."""
    from tests.conftest import CHAOS_DIR

    if not (CHAOS_DIR / "image_1.nii.gz").is_file():
        pytest.skip(f"CHAOS data not found at {CHAOS_DIR}")
    out = tmp_path_factory.mktemp("examples")
    _run("01_pseudolabels.py", "--data", str(CHAOS_DIR), "--out", str(out))
    _run("02_train.py", "--data", str(CHAOS_DIR), "--out", str(out))
    return out


@pytest.mark.data
def test_pseudolabels_and_training(workflow, chaos_dir):
    pseudo = sorted((workflow / "pseudolabels").iterdir())
    assert [p.name for p in pseudo] == [
        "image_10.superpixels.nii.gz",
        "image_13.superpixels.nii.gz",
    ]
    scan = load_volume(chaos_dir / "image_10.nii.gz")
    assert load_label_map(pseudo[0]).shape == scan.shape
    assert (workflow / "checkpoint" / "last.pt").is_file()


@pytest.mark.data
def test_predict(workflow, chaos_dir):
    out = _run("03_predict.py", "--data", str(chaos_dir), "--out", str(workflow))
    assert "liver: Dice" in out
    prediction = load_volume(workflow / "prediction_2.nii.gz")
    query = load_volume(chaos_dir / "image_2.nii.gz")
    assert prediction.shape == query.shape
    assert (workflow / "prediction_2.png").is_file()


@pytest.mark.data
def test_evaluate(workflow, chaos_dir):
    out = _run("04_evaluate.py", "--data", str(chaos_dir), "--out", str(workflow))
    assert "paper: mean Dice" in out and "whole_volume: mean Dice" in out
    rows = (workflow / "fold0_dice.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 4  # header + 2 protocols x 4 organs for one query
