"""Every example runs with no arguments (shipped scans, shipped model) and says in one line what
is missing when a path is wrong.

The default suite runs the quickstart in a subprocess, as the README runs it, and steps 1-4 on
the shipped scans in this process (their ``main(argv)``; steps 3-4 with step 2's tiny
checkpoint, which takes seconds). Steps 3-4 with no arguments at all (the shipped ResNet-18 on
whole scans, about a minute each on two busy cores) are marked slow; ``tests/test_clean_venv.py``
and ``benchmarks/clean_venv.sh`` run every example bare in a subprocess."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewshotseg.io import load_label_map, load_volume

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["00_quickstart.py", "01_pseudolabels.py", "02_train.py", "03_predict.py",
           "04_evaluate.py"]  # fmt: skip


def _run(script: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def _load(script: str):
    spec = importlib.util.spec_from_file_location(f"example_{script[:2]}", EXAMPLES / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_here(script: str, *args: str, capsys) -> str:
    torch.set_num_threads(1)
    _load(script).main(list(args))
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_examples_are_numbered_and_documented():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == SCRIPTS
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "python examples/" + name in text


def test_quickstart():
    out = _run("00_quickstart.py", "--quick")
    assert "trained 5 steps" in out and "Dice: organ 1" in out



def test_library_warnings_are_one_line_each(tmp_path):
    """Run as a plain script, step 1 shows the labeler's warnings (each shipped scan has one
    blank slice) as the command line does: one line each, no file:line, no repeated source."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "01_pseudolabels.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    shown = [line for line in done.stderr.splitlines() if "single intensity value" in line]
    assert len(shown) == 2 and all(line.startswith("warning: 1 of the") for line in shown)
    assert "UserWarning" not in done.stderr and "label_many(" not in done.stderr

@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """The output folder shared by steps 1-4."""
    return tmp_path_factory.mktemp("examples")


def _run_step(script: str, *args: str) -> str:
    """Run an example's ``main`` here with one torch thread; its standard output."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            _load(script).main(list(args))
    finally:
        torch.set_num_threads(before)
    return out.getvalue()


@pytest.fixture(scope="module")
def step1(workflow) -> str:
    """Step 1's output (pseudolabels in the workflow folder)."""
    return _run_step("01_pseudolabels.py", "--out", str(workflow))


@pytest.fixture(scope="module")
def step2(workflow, step1) -> str:
    """Step 2's output: it trains on step 1's pseudolabels. Steps 3-4 use its checkpoint, so
    they run it when needed (alone, with -k, or in any order) and fail with it if it fails."""
    return _run_step("02_train.py", "--out", str(workflow))


def test_pseudolabels_of_the_shipped_scans(workflow, step1):
    assert "patient 8" in step1 and "patient 2" in step1 and "shipped" in step1
    files = sorted(p.name.split(".")[0] for p in (workflow / "pseudolabels").iterdir())
    assert files == ["image_2", "image_8"]
    from fewshotseg.demo import load_demo_scans

    support, _ = load_demo_scans()
    [path] = (workflow / "pseudolabels").glob("image_8.*")
    labels = load_label_map(path)
    assert labels.shape == support.image.shape
    assert labels.max() >= 10  # about 20 superpixels per slice inside the body


def test_train_on_the_shipped_scan(workflow, step2):
    assert "step 20 of 20" in step2
    assert "computing" not in step2  # step 1's pseudolabels were used
    from fewshotseg.training import load_checkpoint

    ckpt = load_checkpoint(workflow / "checkpoint" / "last.pt")
    assert ckpt["step"] == 20 and ckpt["image_size"] == 64 and ckpt["modality"] == "mri"


def test_predict_with_step_2s_checkpoint(workflow, step2, capsys):
    checkpoint = workflow / "checkpoint" / "last.pt"
    out = _run_here("03_predict.py", "--checkpoint", str(checkpoint), "--out", str(workflow),
                    capsys=capsys)  # fmt: skip
    assert out.count("Dice") == 4 and "liver: Dice" in out
    [path] = workflow.glob("prediction_2.n*")
    prediction = load_volume(path)
    assert prediction.shape == (31, 256, 256)  # the shipped query, patient 2
    assert set(prediction.array.ravel().tolist()) <= {0, 1, 2, 3, 4}
    assert (workflow / "prediction_2.png").is_file()


def test_evaluate_with_step_2s_checkpoint(workflow, step2, capsys):
    checkpoint = workflow / "checkpoint" / "last.pt"
    out_dir = workflow / "new" / "folder"  # made when missing
    out = _run_here("04_evaluate.py", "--checkpoint", str(checkpoint), "--out", str(out_dir),
                    capsys=capsys)  # fmt: skip
    assert "realistic: mean Dice" in out and "paper: mean Dice" in out
    rows = (out_dir / "dice.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * 4  # header + 2 protocols x 4 organs for the one query


@pytest.mark.parametrize(
    "script, args, says",
    [
        ("01_pseudolabels.py", ["--data", "no/such/folder"], "no/such/folder"),
        ("02_train.py", ["--data", "no/such/folder"], "no/such/folder"),
        ("03_predict.py", ["--checkpoint", "no/such.pt"], "02_train.py"),
        ("04_evaluate.py", ["--checkpoint", "no/such.pt"], "02_train.py"),
        ("04_evaluate.py", ["--data", "no/such/folder"], "no/such/folder"),
    ],
)
def test_missing_paths_are_one_line(script, args, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load(script).main([*args, "--out", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith(script) and says in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize("script", ["03_predict.py", "04_evaluate.py"])
def test_shipped_model_examples_with_no_arguments(script, tmp_path):
    """The bare default: the shipped model on the shipped scans (a minute or two each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=tmp_path,
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "liver" in done.stdout
    assert (tmp_path / "fewshotseg-examples").is_dir()  # outputs go under the working folder


@pytest.mark.data
def test_pseudolabels_on_a_chaos_folder(chaos_dir, tmp_path, capsys):
    out = _run_here("01_pseudolabels.py", "--data", str(chaos_dir), "--out", str(tmp_path),
                    capsys=capsys)  # fmt: skip
    assert "patient 10" in out  # fold 0's first training patient
    [pseudo] = sorted((tmp_path / "pseudolabels").iterdir())
    assert pseudo.name == "image_10.superpixels.nii.gz"
    assert load_label_map(pseudo).shape == load_volume(chaos_dir / "image_10.nii.gz").shape
