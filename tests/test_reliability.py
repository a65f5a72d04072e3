"""Reliability of training runs: reproducible seeds, learning-rate overrides on resume, run-folder
locks and stale temporary files, and training killed at random moments (fault injection)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshotseg import ALPNet, EpisodeSampler
from fewshotseg.checkpoints import RunFolderBusyError, RunFolderLock, load_checkpoint
from fewshotseg.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _sampler(seed=0):
    rng = np.random.default_rng(0)
    ids = np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1) + 1
    images = [np.stack([rng.random(17)[ids] for _ in range(2)]).astype(np.float32)]
    return EpisodeSampler(images, [np.repeat(ids[None], 2, 0)], image_size=32, min_foreground=16,
                          augment=None, seed=seed)  # fmt: skip


def _trainer(folder, seed=0, **config):
    torch.manual_seed(seed)
    settings = {"iterations": 3, "progress": False, "log_every": 100, "seed": seed,
                "checkpoint_dir": str(folder), **config}  # fmt: skip
    return Trainer(ALPNet(backbone="tiny", feature_dim=8), _sampler(seed), TrainConfig(**settings),
                   device="cpu")  # fmt: skip


def _same_state(a, b):
    """Model, optimiser, scheduler, RNG and step equal bit for bit."""
    for key in ("model", "rng"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), k
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"] and a["step"] == b["step"]


def _weights(ckpt):
    return torch.cat([v.flatten() for v in ckpt["model"].values() if v.is_floating_point()])


# ------------------------------------------------------------------------------ seeds


def test_same_seed_same_checkpoint_api(tmp_path):
    _trainer(tmp_path / "a", seed=5).fit()
    _trainer(tmp_path / "b", seed=5).fit()
    _trainer(tmp_path / "c", seed=6).fit()
    a, b, c = (load_checkpoint(tmp_path / x / "last.pt") for x in "abc")
    _same_state(a, b)
    assert not torch.equal(_weights(a), _weights(c))


def _scans(folder: Path) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :36]
    img = np.full((40, 36, 4), 10.0, np.float32)
    img[(yy - 20) ** 2 + (xx - 18) ** 2 < 14**2] = 300.0
    img[(yy - 16) ** 2 + (xx - 13) ** 2 < 5**2] = 600.0
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), folder / "image_1.nii.gz")
    return folder / "image_1.nii.gz"


def test_same_seed_same_checkpoint_cli(tmp_path):
    from fewshotseg import cli

    scan = _scans(tmp_path)
    states = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        argv = ["train", str(scan), "--checkpoint-dir", str(tmp_path / name), "--iterations", "2",
                "--backbone", "tiny", "--feature-dim", "8", "--image-size", "32",
                "--min-foreground", "10", "--seed", seed, "--no-progress", "--quiet"]  # fmt: skip
        assert cli.main(argv) == 0
        states.append(load_checkpoint(tmp_path / name / "last.pt"))
    _same_state(states[0], states[1])  # the initial weights too: the network is built seeded
    assert not torch.equal(_weights(states[0]), _weights(states[2]))


# ------------------------------------------------------------------ resume with a new lr


def test_resume_applies_a_new_learning_rate_schedule(tmp_path):
    _trainer(tmp_path, lr=1e-3, lr_step=2, lr_gamma=0.5).fit()
    assert load_checkpoint(tmp_path / "last.pt")["scheduler"]["last_epoch"] == 3
    resumed = Trainer.resume(tmp_path / "last.pt", _sampler(), device="cpu", iterations=5,
                             lr=1e-2, lr_step=3, lr_gamma=0.1)  # fmt: skip
    # the new schedule at scheduler step 3: lr * gamma ** (3 // 3)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.1)
    change = resumed.config_changes[-1]
    assert change["step"] == 3 and change["lr"] == {"from": 1e-3, "to": 1e-2}
    resumed.fit()  # steps 4 and 5 follow the new schedule: 3 // 3 = 1, then 5 // 3 = 1
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"]["lr"] == 1e-2 and ckpt["config_changes"][-1]["lr"]["to"] == 1e-2


def test_fit_in_a_folder_with_another_lr_applies_it(tmp_path):
    _trainer(tmp_path, lr=1e-3).fit()
    trainer = _trainer(tmp_path, lr=5e-2, iterations=4)
    trainer.fit()
    assert trainer.config_changes[0]["lr"] == {"from": 1e-3, "to": 5e-2}
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-2)  # lr_step 1000


def test_cli_resume_keeps_the_runs_lr_unless_a_flag_changes_it(tmp_path):
    from fewshotseg import cli

    scan = _scans(tmp_path)
    run = tmp_path / "run"
    base = ["train", str(scan), "--checkpoint-dir", str(run), "--backbone", "tiny",
            "--feature-dim", "8", "--image-size", "32", "--min-foreground", "10",
            "--no-progress", "--quiet"]  # fmt: skip
    assert cli.main([*base, "--iterations", "2", "--lr", "0.005", "--lr-gamma", "0.5"]) == 0
    assert cli.main([*base, "--iterations", "3"]) == 0  # no --lr: the run's own 0.005 stays
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["lr"] == 0.005 and ckpt["config"]["lr_gamma"] == 0.5
    assert ckpt["config_changes"] == [] and ckpt["optimizer"]["param_groups"][0]["lr"] == 0.005
    assert cli.main([*base, "--iterations", "4", "--lr", "0.02"]) == 0  # a flag changes it
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["config"]["lr"] == 0.02 and ckpt["optimizer"]["param_groups"][0]["lr"] == 0.02
    assert ckpt["config_changes"] == [{"step": 3, "lr": {"from": 0.005, "to": 0.02}}]


# ------------------------------------------------------------------------- run folders


def test_stale_temporary_files_are_removed_on_start(tmp_path):
    tmp_path.joinpath(".last.pt.999999.tmp").write_bytes(b"half a checkpoint")
    tmp_path.joinpath(".best.pt.12.tmp").write_bytes(b"")
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    _trainer(tmp_path, iterations=1).fit()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", "last.pt", "metrics.csv", "notes.tmp"]  # metrics.csv: issue 17


def test_a_second_training_in_the_same_folder_is_refused(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from fewshotseg.checkpoints import RunFolderLock
            with RunFolderLock({str(tmp_path)!r}):
                print("locked", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        trainer = _trainer(tmp_path, iterations=1)
        with pytest.raises(RunFolderBusyError, match=f"in use by another training \\(process "
                           f"{holder.pid};"):  # fmt: skip
            trainer.fit()
        assert not (tmp_path / "last.pt").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    trainer.fit()  # the lock went with its process
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1


def test_the_lock_is_also_held_within_one_process(tmp_path):
    with RunFolderLock(tmp_path):
        with pytest.raises(RunFolderBusyError, match="already in use"):
            _trainer(tmp_path, iterations=1).fit()
    _trainer(tmp_path, iterations=1).fit()  # released on exit
    assert (tmp_path / "last.pt").is_file()


# --------------------------------------------------------------------- fault injection


def test_training_killed_at_random_moments_resumes_exactly(tmp_path):
    """The quick version of benchmarks/fault_injection.py: 3 SIGKILLs (one during a save)."""
    spec = importlib.util.spec_from_file_location(
        "fault_injection", ROOT / "benchmarks" / "fault_injection.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.run(kills=3, folder=tmp_path, iterations=60, every=4, window=0.3, fork=True)
    assert summary["kills_delivered"] == 3  # none came after the run had finished
    assert summary["kills_during_save"] >= 1
    assert summary["kills_leaving_a_temp_file"] >= 1  # so the clean-up on start was needed
    assert summary["resumes_from_last_complete_checkpoint"] == summary["resumes"] == 3
    assert summary["stale_temp_files_after_restart"] == 0
    assert summary["final_weights_equal_uninterrupted"] and summary["final_step"] == 60
    assert module.passed(summary)
