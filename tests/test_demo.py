"""The main job: embedded CHAOS scans, the demo's protocol run, its report and the CLI command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fewshotseg import cli, demo
from fewshotseg.evaluation import query_chunks, support_slice_indices
from fewshotseg.models import ALPNet

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny ALPNet in the checkpoint layout of Trainer.save (32 x 32 inputs)."""
    torch.manual_seed(0)
    model = ALPNet(backbone="tiny", feature_dim=8)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(
        {"model": model.state_dict(), "model_config": model.model_config, "image_size": 32}, path
    )
    return path


def test_embedded_scans_are_chaos_patients_8_and_2():
    from fewshotseg.datasets import Case

    support, query = demo.load_demo_scans()
    assert (support.id, query.id) == ("8", "2")
    assert support.image.shape == (34, 256, 256) and query.image.shape == (31, 256, 256)
    for scan in (support, query):
        assert isinstance(scan, Case)  # one record for a scan and its labels (issue 18.4)
        assert scan.label.shape == scan.image.shape and scan.label.dtype == np.int32
        assert set(np.unique(scan.label)) == {0, 1, 2, 3, 4}
        assert scan.image.spacing == pytest.approx((7.7, 1.25, 1.25), rel=1e-5)
        assert scan.image.array.dtype == np.float32 and 100 < scan.image.array.max() < 2000


def test_demo_scan_is_a_deprecated_name_for_case():
    from fewshotseg.datasets import Case

    with pytest.warns(DeprecationWarning, match="datasets.Case"):
        assert demo.DemoScan is Case
    assert "DemoScan" not in demo.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        demo.Nothing  # noqa: B018


def test_embedded_scans_equal_the_source_files(chaos_dir):
    from fewshotseg.io import load_label_map, load_volume

    support, query = demo.load_demo_scans()
    for scan in (support, query):
        np.testing.assert_array_equal(
            scan.image.array, load_volume(chaos_dir / f"image_{scan.id}.nii.gz").array
        )
        np.testing.assert_array_equal(
            scan.label, load_label_map(chaos_dir / f"label_{scan.id}.nii.gz")
        )


def test_attribution_is_shipped():
    text = (demo.DEMO_DATA.parent / "ATTRIBUTION.md").read_text()
    for needle in ("CC-BY-SA 4.0", "Kavur", "101950", "3431873"):
        assert needle in text


class _Recorder:
    """A fake predictor: foreground where the query is brighter than the support's mean; it
    records every support image it sees."""

    def __init__(self) -> None:
        self.supports: list[np.ndarray] = []

    def predict_proba(self, s_img, s_mask, query):
        self.supports.append(np.asarray(s_img))
        fg = (np.asarray(query) > np.asarray(s_img).mean()).astype(np.float32)
        return np.stack([1 - fg, fg])

    def predict(self, s_img, s_mask, query):
        value = int(np.max(s_mask))
        return np.where(self.predict_proba(s_img, s_mask, query)[1] > 0.5, value, 0)


def test_overlay_slice_uses_the_protocols_support_slices():
    rng = np.random.default_rng(0)
    s_lab = np.zeros((12, 8, 8), np.int64)
    s_lab[2:10, 2:5, 2:5], s_lab[4:8, 5:7, 5:7] = 1, 2
    q_lab = np.zeros((9, 8, 8), np.int64)
    q_lab[1:8, 2:5, 2:5], q_lab[3:6, 5:7, 5:7] = 1, 2
    s_img = rng.random(s_lab.shape).astype(np.float32)
    q_img = rng.random(q_lab.shape).astype(np.float32)
    z = 4
    fake = _Recorder()
    out = demo.protocol_slice_prediction(fake, s_img, s_lab, q_img, q_lab, z, [1, 2])
    expected = []
    for cls in (1, 2):
        chunk = next(i for i, c in enumerate(query_chunks(q_lab, cls)) if z in c)
        expected.append(s_img[support_slice_indices(s_lab, cls)[chunk]])
    assert len(fake.supports) == 2
    for seen, want in zip(fake.supports, expected, strict=True):
        np.testing.assert_array_equal(seen, want)
    assert out.shape == (8, 8) and set(np.unique(out)) <= {0, 1, 2}


def test_run_demo_scores_four_organs_and_writes_an_overlay(tiny_checkpoint, tmp_path):
    from fewshotseg.inference import SupportQueryPredictor

    predictor = SupportQueryPredictor.from_checkpoint(tiny_checkpoint)
    png = tmp_path / "demo.png"
    result = demo.run_demo(predictor, overlay=png)
    assert [r.class_id for r in result.table] == [1, 2, 3, 4]
    assert {r.scan for r in result.table} == {"2"} and result.support_id == "8"
    assert all(0.0 <= r.dice <= 1.0 and r.n_slices > 0 for r in result.table)
    assert result.overlay == png and png.stat().st_size > 1000
    report = demo.format_report(result)
    for organ in ("liver", "right_kidney", "left_kidney", "spleen", "mean"):
        assert organ in report
    assert f"{100 * result.table.mean():.2f}" in report


def test_cli_demo_with_a_checkpoint(tiny_checkpoint, tmp_path, capsys):
    png = tmp_path / "out.png"
    assert cli.main(["demo", "--checkpoint", str(tiny_checkpoint), "--out", str(png),
                     "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "support patient 8, query patient 2" in out and "spleen" in out
    assert "segmented and scored in" in out
    assert png.is_file()


def test_cli_demo_without_shipped_weights_says_so(monkeypatch, tmp_path, capsys):
    import fewshotseg.weights as weights

    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)  # an installation without chaos_ssl.pt
    assert cli.main(["demo", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fewshotseg: error: ")
    assert "missing" in err[0] and "--checkpoint PATH" in err[0]


@pytest.mark.data
def test_cli_demo_on_a_chaos_folder(chaos_dir, tiny_checkpoint, tmp_path, capsys):
    assert cli.main(["demo", "--checkpoint", str(tiny_checkpoint), "--data", str(chaos_dir),
                     "--out", str(tmp_path / "d.png"), "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "support patient 8, query patients 1, 2, 3, 5" in out


def test_report_has_a_mean_column_only_for_several_queries():
    from fewshotseg.evaluation import ResultRow, ResultTable

    rows = [ResultRow(scan=q, class_id=1, class_name="liver", dice=d)
            for q, d in (("2", 0.5), ("3", 0.7))]  # fmt: skip
    one = demo.DemoResult(ResultTable(rows[:1]), 1.0, "8", ("2",), "paper", "embedded")
    two = demo.DemoResult(ResultTable(rows), 1.0, "8", ("2", "3"), "paper", "embedded")
    header_one = demo.format_report(one).splitlines()[2].split()
    header_two = demo.format_report(two).splitlines()[2].split()
    assert header_one == ["organ", "query", "2"]
    assert header_two == ["organ", "query", "2", "query", "3", "mean"]
    liver_two = demo.format_report(two).splitlines()[3].split()
    assert liver_two == ["liver", "50.00", "70.00", "60.00"]  # the mean over the two queries


def test_cli_demo_fold_needs_data(capsys):
    assert cli.main(["demo", "--fold", "1", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fold needs --data" in err[0]
