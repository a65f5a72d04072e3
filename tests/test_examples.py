"""Every example runs in its ``--quick`` form: the quickstart in a subprocess, as the README runs
it; the CHAOS steps in this process (their ``main(argv)``), which saves a torch import each."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def _run_here(script: str, *args: str, capsys) -> str:
    spec = importlib.util.spec_from_file_location(f"example_{script[:2]}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    module.main(["--quick", *args])
    return capsys.readouterr().out


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


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """The output folder shared by steps 1-4, in order (each test runs one step)."""
    return tmp_path_factory.mktemp("examples")


@pytest.mark.data
def test_pseudolabels(workflow, chaos_dir, capsys):
    out = _run_here("01_pseudolabels.py", "--data", str(chaos_dir), "--out", str(workflow),
                    capsys=capsys)  # fmt: skip
    assert "patient 10" in out
    [pseudo] = sorted((workflow / "pseudolabels").iterdir())
    assert pseudo.name == "image_10.superpixels.nii.gz"
    labels = load_label_map(pseudo)
    assert labels.shape == load_volume(chaos_dir / "image_10.nii.gz").shape
    assert labels.max() >= 10  # about 20 superpixels per slice inside the body


@pytest.mark.data
def test_train(workflow, chaos_dir, capsys):
    out = _run_here("02_train.py", "--data", str(chaos_dir), "--out", str(workflow),
                    capsys=capsys)  # fmt: skip
    assert "step 5 of 5" in out and "computing" not in out  # step 1's pseudolabels were used
    assert (workflow / "checkpoint" / "last.pt").is_file()


@pytest.mark.data
def test_predict(workflow, chaos_dir, capsys):
    if not (workflow / "checkpoint" / "last.pt").is_file():
        pytest.skip("needs test_train's checkpoint")
    out = _run_here("03_predict.py", "--data", str(chaos_dir), "--out", str(workflow),
                    capsys=capsys)  # fmt: skip
    assert "liver: Dice" in out
    prediction = load_volume(workflow / "prediction_2.nii.gz")
    query = load_volume(chaos_dir / "image_2.nii.gz")
    assert prediction.shape == query.shape
    assert (workflow / "prediction_2.png").is_file()


@pytest.mark.data
def test_evaluate(workflow, chaos_dir, capsys):
    if not (workflow / "checkpoint" / "last.pt").is_file():
        pytest.skip("needs test_train's checkpoint")
    out = _run_here("04_evaluate.py", "--data", str(chaos_dir), "--out", str(workflow),
                    capsys=capsys)  # fmt: skip
    assert "paper: mean Dice" in out and "whole_volume: mean Dice" in out
    rows = (workflow / "fold0_dice.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 4  # header + 2 protocols x 4 organs for one query
