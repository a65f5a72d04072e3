"""What a training run tells its user: the time per step and an ETA at start, the speed over
the recent window, metrics.csv with its PNG curve, and kept snapshots besides last.pt."""

from __future__ import annotations

import csv
import logging
import time

import pytest

from fewshotseg.training import METRICS_COLUMNS, TrainConfig, Trainer, _duration, load_checkpoint
from tests.test_training import make_sampler, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _fit(tmp_path, caplog, **config):
    cfg = TrainConfig(checkpoint_dir=str(tmp_path), progress=False, **config)
    trainer = Trainer(tiny_model(), make_sampler(), cfg, device="cpu")
    with caplog.at_level(logging.INFO, logger="fewshotseg.training"):
        trainer.fit()
    return trainer


def test_metrics_csv_has_one_row_per_log_line_and_survives_a_resume(tmp_path, caplog):
    _fit(tmp_path, caplog, iterations=6, log_every=2)
    _fit(tmp_path, caplog, iterations=8, log_every=2)  # resumed: rows appended
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRICS_COLUMNS
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert all(float(r["episodes_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0  # the resume continues the clock


def test_the_training_clock_survives_a_resume_in_the_checkpoint(tmp_path, caplog):
    first = _fit(tmp_path, caplog, iterations=4, log_every=2)
    saved = load_checkpoint(tmp_path / "last.pt")["train_seconds"]
    assert saved == first.elapsed_seconds() == first.train_seconds > 0
    assert saved == pytest.approx(first.history.seconds, abs=1e-3)  # one fit: its own time
    second = _fit(tmp_path, caplog, iterations=6, log_every=2)
    assert second.history.seconds < second.elapsed_seconds()  # this process's share only
    assert load_checkpoint(tmp_path / "last.pt")["train_seconds"] > saved
    with (tmp_path / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["seconds"]) > saved  # the resumed run's rows count from the first's clock



def test_csv_seg_and_align_are_means_over_the_same_window_as_the_loss(tmp_path, caplog):
    """Each step's loss is seg + align_weight * align; the window means keep that sum (seg and
    align of the window's last step alone did not, so the curve's three lines disagreed)."""
    trainer = _fit(tmp_path, caplog, iterations=6, log_every=3, align_weight=0.5)
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [3, 6]
    for r in rows:
        total = float(r["seg_loss"]) + 0.5 * float(r["align_loss"])
        assert float(r["loss"]) == pytest.approx(total, rel=1e-5)
    h = trainer.history
    for loss, seg, align in zip(h.loss, h.seg_loss, h.align_loss, strict=True):
        assert loss == pytest.approx(seg + 0.5 * align, rel=1e-6)

def test_eta_at_start_and_recent_speed_in_the_log(tmp_path, caplog):
    _fit(tmp_path, caplog, iterations=12, log_every=4)
    messages = [r.getMessage() for r in caplog.records]
    [eta] = [m for m in messages if "s/step over the first" in m]
    assert "first 5 step(s)" in eta and "for the 7 left" in eta
    step_lines = [m for m in messages if m.startswith("step ") and "it/s (recent)" in m]
    assert len(step_lines) == 3 and all("eta " in m for m in step_lines)


def test_speed_is_measured_over_the_recent_window(tmp_path, caplog, monkeypatch):
    """A slow-down shows at once: the rate of a window does not average in earlier steps."""
    cfg = TrainConfig(checkpoint_dir=str(tmp_path), progress=False, iterations=8, log_every=4)
    trainer = Trainer(tiny_model(), make_sampler(), cfg, device="cpu")
    step = trainer.train_step

    def slower_after_4(batch):
        if trainer.step >= 4:
            time.sleep(0.2)
        return step(batch)

    monkeypatch.setattr(trainer, "train_step", slower_after_4)
    trainer.fit()
    fast, slow = trainer.history.rate
    assert slow < 1 / 0.2 and fast > 2 * slow  # an average since start would be in between


def test_snapshots_are_kept_besides_last(tmp_path, caplog):
    _fit(tmp_path, caplog, iterations=6, log_every=3, snapshot_every=2)
    names = sorted(p.name for p in tmp_path.glob("step_*.pt"))
    assert names == ["step_000002.pt", "step_000004.pt", "step_000006.pt"]
    assert load_checkpoint(tmp_path / "step_000004.pt")["step"] == 4
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6


def test_no_snapshots_by_default(tmp_path, caplog):
    _fit(tmp_path, caplog, iterations=4, log_every=2)
    assert not list(tmp_path.glob("step_*.pt"))


def test_training_curve_png(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    from fewshotseg.viz import save_training_curve

    _fit(tmp_path, caplog, iterations=6, log_every=2)
    png = save_training_curve(tmp_path)
    assert png == tmp_path / "metrics.png" and png.stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        save_training_curve(tmp_path / "elsewhere")


def test_durations_read_well():
    assert [_duration(s) for s in (42, 720, 5 * 3600, float("nan"))] == [
        "42 s", "12 min", "5.0 h", "?"
    ]  # fmt: skip
