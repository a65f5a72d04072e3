"""Trainer: the objective, learning, exact resume, atomic checkpoints, NaN handling, DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshotseg.episodes import AugmentConfig, EpisodeSampler, collate_episodes
from fewshotseg.models import ALPNet
from fewshotseg.training import (
    TrainConfig,
    Trainer,
    TrainingInterrupted,
    episode_loss,
    load_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]


def blob_data(scans=2, depth=3, size=32, seed=0):
    """Images whose 'superpixels' are 4 x 4 blocks of distinct texture and brightness."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    block = size // 4
    ids = np.arange(16).reshape(4, 4).repeat(block, 0).repeat(block, 1) + 1
    for _ in range(scans):
        base = rng.random(17)[ids]
        vol = np.stack([base + 0.05 * rng.standard_normal((size, size)) for _ in range(depth)])
        images.append(vol.astype(np.float32))
        labels.append(np.repeat(ids[None], depth, 0))
    return images, labels


def make_sampler(seed=0, augment=None, **kwargs):
    images, labels = blob_data()
    return EpisodeSampler(
        images, labels, image_size=32, min_foreground=16, seed=seed, augment=augment, **kwargs
    )


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ALPNet(backbone="tiny", feature_dim=16)


def params(model):
    return torch.cat(
        [p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()]
    )


def test_config_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.iterations, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (
        100_000,
        1,
        1e-3,
        0.9,
        5e-4,
    )
    assert (cfg.lr_gamma, cfg.lr_step, cfg.bg_weight, cfg.align_weight, cfg.amp) == (
        0.98,
        1000,
        0.05,
        1.0,
        False,
    )
    assert TrainConfig.cpu_preset().iterations < cfg.iterations
    with pytest.raises(ValueError):
        TrainConfig(iterations=0)
    with pytest.raises(ValueError):
        TrainConfig(lr=-1.0)


def test_segmentation_loss_is_torch_weighted_mean():
    model = tiny_model().eval()
    batch = collate_episodes([make_sampler().episode(i) for i in range(2)])
    total, seg, align = episode_loss(
        model,
        batch.support_images,
        batch.support_masks,
        batch.query_images,
        batch.query_labels,
        bg_weight=0.05,
        align_weight=0.0,
    )
    logits = model(batch.support_images, batch.support_masks, batch.query_images)
    logp = logits.log_softmax(1)
    target = batch.query_labels
    w = torch.where(target == 0, 0.05, 1.0)
    picked = logp.gather(1, target[:, None])[:, 0]
    expected = -(w * picked).sum() / w.sum()  # divided by the summed weights, not H x W
    torch.testing.assert_close(seg, expected.detach(), rtol=1e-5, atol=1e-6)
    assert align.item() == 0.0


def test_alignment_loss_with_empty_prediction_is_finite():
    """An untrained net may predict no foreground at all: zero prototype, no exception."""
    model = tiny_model()
    batch = collate_episodes([make_sampler().episode(0)])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # constant features: every query pixel ties, argmax = background
    total, seg, align = episode_loss(
        model, batch.support_images, batch.support_masks, batch.query_images, batch.query_labels
    )
    assert torch.isfinite(total) and torch.isfinite(align)


def test_an_episode_whose_query_shows_no_class_has_no_alignment_term():
    """A query slice outside the support's region ("absent") is taught by the segmentation
    loss; PAR, which needs the class in the query, skips it, and the others keep their term."""
    model = tiny_model().eval()
    batch = collate_episodes([make_sampler().episode(i) for i in range(3)])
    args = (batch.support_images, batch.support_masks, batch.query_images)
    absent = batch.query_labels.clone()
    absent[1] = 0  # episode 1's query shows no foreground
    _, _, align_two = episode_loss(model, *[a[[0, 2]] for a in args], absent[[0, 2]])
    _, seg, align = episode_loss(model, *args, absent)
    torch.testing.assert_close(align, align_two)  # the same pixels' mean: episode 1 dropped
    _, seg_none, align_none = episode_loss(model, *args, torch.zeros_like(absent))
    assert align_none.item() == 0.0 and seg_none > 0 and torch.isfinite(seg_none)
    _, _, align_all = episode_loss(model, *args, batch.query_labels)
    assert not torch.equal(align_all, align)  # with its class, episode 1 does count


def test_loss_decreases_on_a_tiny_task():
    trainer = Trainer(
        tiny_model(),
        make_sampler(),
        TrainConfig(iterations=60, lr=0.01, log_every=10, progress=False),
        device="cpu",
    )
    history = trainer.fit()
    assert history.steps == [10, 20, 30, 40, 50, 60]
    assert history.loss[-1] < 0.7 * history.loss[0]
    assert all(np.isfinite(history.align_loss))


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path, monkeypatch, amp):
    from fewshotseg import precision

    # bf16 autocast on any CPU (emulated where the processor lacks it): resume stays exact
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    cfg = {"lr": 0.01, "batch_size": 2, "lr_step": 2, "lr_gamma": 0.5, "progress": False,
           "amp": amp}
    straight = Trainer(
        tiny_model(),
        make_sampler(augment=AugmentConfig()),
        TrainConfig(iterations=6, **cfg),
        device="cpu",
    )
    straight.fit()
    assert straight._amp_dtype == (torch.bfloat16 if amp else None)

    ckpt_dir = tmp_path / "run"
    first = Trainer(
        tiny_model(),
        make_sampler(augment=AugmentConfig()),
        TrainConfig(iterations=3, checkpoint_dir=str(ckpt_dir), **cfg),
        device="cpu",
    )
    first.fit()
    assert load_checkpoint(ckpt_dir / "last.pt")["step"] == 3
    # A fresh process would rebuild everything; a different init proves the weights are loaded.
    second = Trainer(
        tiny_model(seed=99),
        make_sampler(augment=AugmentConfig()),
        TrainConfig(iterations=6, checkpoint_dir=str(ckpt_dir), **cfg),
        device="cpu",
    )
    second.fit()
    assert second.step == 6
    assert torch.equal(params(second.model), params(straight.model))
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]


def test_resume_classmethod_rebuilds_model_and_config(tmp_path):
    trainer = Trainer(
        tiny_model(), make_sampler(), TrainConfig(iterations=2, progress=False), device="cpu"
    )
    trainer.fit()
    trainer.save(tmp_path / "c.pt")
    again = Trainer.resume(tmp_path / "c.pt", make_sampler(), device="cpu", iterations=4)
    assert again.step == 2 and again.config.iterations == 4
    assert torch.equal(params(again.model), params(trainer.model))
    again.fit()
    assert again.step == 4


def test_checkpoint_keys_and_weights_only_loading(tmp_path):
    trainer = Trainer(tiny_model(), make_sampler(), TrainConfig(progress=False), device="cpu")
    trainer.save(tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert {
        "model",
        "model_config",
        "optimizer",
        "scheduler",
        "step",
        "rng",
        "config",
        "version",
    } <= set(ckpt)
    assert ckpt["model_config"]["backbone"] == "tiny"
    assert ckpt["config"]["lr"] == 1e-3


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_model(), make_sampler(), TrainConfig(progress=False), device="cpu")
    path = tmp_path / "last.pt"
    trainer.save(path)
    before = load_checkpoint(path)["step"]
    trainer.step = 5

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        trainer.save(path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_non_finite_loss_skips_the_step_then_stops(tmp_path):
    trainer = Trainer(
        tiny_model(), make_sampler(), TrainConfig(max_nonfinite=3, progress=False), device="cpu"
    )
    batch = collate_episodes([make_sampler().episode(0)])
    batch.query_images[:] = float("nan")
    before = params(trainer.model).clone()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = trainer.train_step(batch)
    assert out["skipped"] == 1.0
    assert torch.equal(params(trainer.model), before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.train_step(batch)
        with pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
            trainer.train_step(batch)
    assert trainer.history.skipped_steps == 3


def test_validation_hook_keeps_the_best_checkpoint(tmp_path):
    scores = iter([0.1, 0.7, 0.3])
    trainer = Trainer(
        tiny_model(),
        make_sampler(),
        TrainConfig(iterations=3, validate_every=1, checkpoint_dir=str(tmp_path), progress=False),
        device="cpu",
        validate=lambda model: next(scores),
    )
    trainer.fit()
    assert [s for _, s in trainer.history.validation] == [0.1, 0.7, 0.3]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 2
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_ctrl_c_saves_before_stopping(tmp_path):
    def interrupt(model):
        raise KeyboardInterrupt

    trainer = Trainer(
        tiny_model(),
        make_sampler(),
        TrainConfig(iterations=5, validate_every=2, checkpoint_dir=str(tmp_path), progress=False),
        device="cpu",
        validate=interrupt,
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_workers_and_batch_size(tmp_path):
    """DataLoader workers give the same steps as the main process (stream indexed by step)."""
    base = {"iterations": 2, "batch_size": 3, "progress": False, "lr": 0.01}
    a = Trainer(tiny_model(), make_sampler(), TrainConfig(**base), device="cpu")
    a.fit()
    b = Trainer(tiny_model(), make_sampler(), TrainConfig(num_workers=2, **base), device="cpu")
    b.fit()
    assert torch.equal(params(a.model), params(b.model))


@pytest.mark.parametrize("native", [True, False])
def test_cpu_amp_uses_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, caplog, native):
    from fewshotseg import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    precision._log_fp32_fallback.cache_clear()
    with caplog.at_level("INFO", logger="fewshotseg.precision"):
        trainer = Trainer(tiny_model(), make_sampler(), TrainConfig(amp=True, progress=False),
                          device="cpu")
    assert trainer._amp_dtype == (torch.bfloat16 if native else None)
    assert ("no native bf16" in caplog.text) == (not native)
    with pytest.raises(ValueError, match="amp must be"):
        TrainConfig(amp="yes")


@pytest.mark.cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_learns_and_its_checkpoint_resumes_on_cpu(tmp_path, amp):
    trainer = Trainer(
        tiny_model(),
        make_sampler(),
        TrainConfig(iterations=60, lr=0.01, log_every=10, amp=amp, progress=False),
        device="cuda",
    )
    history = trainer.fit()
    assert next(trainer.model.parameters()).is_cuda
    assert history.loss[-1] < 0.7 * history.loss[0]
    trainer.save(tmp_path / "c.pt")
    resumed = Trainer.resume(tmp_path / "c.pt", make_sampler(), device="cpu", amp=False,
                             iterations=62)
    assert resumed.step == 60
    torch.testing.assert_close(params(resumed.model), params(trainer.model).cpu())
    resumed.fit()
    assert resumed.step == 62


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from fewshotseg.models import ALPNet
    from fewshotseg.training import Trainer, TrainConfig, close_distributed, init_distributed
    from tests.test_training import make_sampler
    device = init_distributed()
    rank = torch.distributed.get_rank()
    torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's weights
    model = ALPNet(backbone="tiny", feature_dim=16)
    sampler = make_sampler()
    trainer = Trainer(model, sampler, TrainConfig(iterations=3, checkpoint_dir=sys.argv[1],
                      progress=False, lr=0.01), device=device)
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save({"params": flat, "sampler_rank": sampler.rank,
                "episode": sampler.episode(0).query_image}, f"{sys.argv[1]}/rank{rank}.pt")
    print(f"rank {rank} saved", flush=True)
    del trainer
    close_distributed()
    print(f"rank {rank} closed", flush=True)
    """
)


def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert all(f"rank {r} closed" in done.stdout for r in (0, 1))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torch.equal(r0["params"], r1["params"])  # gradients were averaged in step
    assert (r0["sampler_rank"], r1["sampler_rank"]) == (0, 1)
    assert not torch.equal(r0["episode"], r1["episode"])  # each rank its own stream
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3


def test_metadata_is_stored_in_checkpoints(tmp_path):
    trainer = Trainer(
        tiny_model(),
        make_sampler(),
        TrainConfig(progress=False),
        device="cpu",
        metadata={"image_size": 32, "modality": "mri"},
    )
    trainer.save(tmp_path / "c.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert (ckpt["image_size"], ckpt["modality"]) == (32, "mri")


@pytest.fixture
def terminal_signal_handlers():
    """The handlers of a process started from a terminal, whatever launched pytest: a ``nohup``
    or ``&`` launch inherits an ignored SIGINT, which training rightly leaves ignored."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_at_a_step_boundary_and_resumes_exactly(
    tmp_path, signum, terminal_signal_handlers
):
    """SIGTERM (what SLURM sends) or Ctrl-C: save at the end of the step, raise, resume exactly."""
    base = {"iterations": 5, "lr": 0.01, "progress": False, "checkpoint_every": 100}
    reference = Trainer(tiny_model(), make_sampler(), TrainConfig(**base), device="cpu")
    reference.fit()

    def send_signal(model):  # runs after step 2, inside the loop
        os.kill(os.getpid(), signum)
        return 0.0

    config = TrainConfig(validate_every=2, checkpoint_dir=str(tmp_path), **base)
    trainer = Trainer(tiny_model(), make_sampler(), config, device="cpu", validate=send_signal)
    with pytest.raises(TrainingInterrupted) as stopped:
        trainer.fit()
    assert stopped.value.signal_number == signum and stopped.value.step == 2
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    # the handlers are restored once fit returns
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    config = TrainConfig(checkpoint_dir=str(tmp_path), **base)
    resumed = Trainer(tiny_model(), make_sampler(), config, device="cpu")
    resumed.fit()
    assert resumed.step == 5
    assert torch.equal(params(resumed.model), params(reference.model))


def test_an_ignored_sigint_stays_ignored(terminal_signal_handlers):
    """A run started with ``nohup`` or ``&`` ignores Ctrl-C; training must not take it over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def send_sigint(model):
        os.kill(os.getpid(), signal.SIGINT)
        return 0.0

    config = TrainConfig(iterations=4, lr=0.01, progress=False, validate_every=2)
    trainer = Trainer(tiny_model(), make_sampler(), config, device="cpu", validate=send_sigint)
    trainer.fit()  # not interrupted
    assert trainer.step == 4
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_cli_reports_a_signal_stop_with_its_exit_status(monkeypatch, capsys):
    from fewshotseg import cli
    from fewshotseg.cli import _commands

    def stopped_by_sigterm(args):
        raise TrainingInterrupted(signal.SIGTERM, 7)

    monkeypatch.setattr(_commands, "cmd_train", stopped_by_sigterm)
    assert cli.main(["train", "scans"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM at step 7" in err and "rerun to resume" in err


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from fewshotseg.models import ALPNet
    from fewshotseg.training import Trainer, TrainConfig
    from tests.test_training import make_sampler
    def report(model):  # then a pause, so the signal lands mid-step with the worker alive
        print("step", flush=True)
        time.sleep(0.3)
        return 0.0
    config = TrainConfig(iterations=100000, checkpoint_dir=sys.argv[1], progress=False,
                         num_workers=1, checkpoint_every=100000, validate_every=1)
    trainer = Trainer(ALPNet(backbone="tiny", feature_dim=16), make_sampler(), config,
                      device="cpu", validate=report)
    trainer.fit()
    """
)


def test_sigterm_to_the_whole_process_group_still_saves(tmp_path):
    """`kill -TERM -PGID`, `timeout` and SLURM signal the DataLoader workers too; they must not
    die of it before the main process has saved its checkpoint."""
    script = tmp_path / "train.py"
    script.write_text(SIGNAL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as under timeout or a scheduler
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    try:
        for _ in range(3):  # a few steps, so the worker is up and busy
            assert proc.stdout.readline().strip() == "step", proc.stderr.read()[-3000:]
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "TrainingInterrupted: training stopped by SIGTERM" in err, err[-3000:]
    assert "DataLoader worker" not in err
    assert load_checkpoint(tmp_path / "last.pt")["step"] >= 3
