"""The cross-fold table that docs/results.md is built from (`chaos_training.py summarize`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import fewshotseg as fss
from fewshotseg.evaluation import ResultRow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chaos_training():
    spec = importlib.util.spec_from_file_location(
        "chaos_training", ROOT / "benchmarks" / "chaos_training.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(setting, fold, dice_by_class, scans=("a", "b")):
    """Paper-protocol rows with the given Dice per class (same for every scan), and
    whole-volume rows at half of it."""
    rows = []
    for protocol, factor in (("paper", 1.0), ("whole_volume", 0.5)):
        for scan in scans:
            for class_id, dice in dice_by_class.items():
                rows.append(
                    ResultRow(scan=scan, class_id=class_id, class_name=str(class_id),
                              protocol=protocol, setting=setting, fold=fold, dice=dice * factor)
                )
    return fss.ResultTable(rows)


def summary_lines(chaos_training, capsys, files):
    chaos_training.main(["summarize", *map(str, files)])
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]


def cells(line):
    return [c.strip().strip("*") for c in line.strip("|").split("|")]


def test_setting2_groups_of_a_fold_make_one_row_and_folds_average(chaos_training, capsys,
                                                                  tmp_path):
    files = [
        table(2, 0, {1: 0.6, 4: 0.8}).save(tmp_path / "f0_upper_step7000.json"),
        table(2, 0, {2: 0.5, 3: 0.7}).save(tmp_path / "f0_lower_step6990.json"),
        table(2, 1, {1: 0.2, 4: 0.4}).save(tmp_path / "f1_upper_step7000.json"),
        table(2, 1, {2: 0.3, 3: 0.1}).save(tmp_path / "f1_lower_step7000.json"),
    ]
    lines = summary_lines(chaos_training, capsys, files)
    header, rows = cells(lines[0]), [cells(line) for line in lines[2:]]
    assert header[3:7] == ["liver", "right_kidney", "left_kidney", "spleen"]
    assert [r[:3] for r in rows] == [["2", "0", "6990/7000"], ["2", "1", "7000"],
                                     ["2", "mean of 2", ""]]
    assert header[7:] == ["mean, paper", "mean, whole_volume", "mean, realistic"]
    assert rows[0][3:] == ["60.00", "50.00", "70.00", "80.00", "65.00", "32.50", ""]
    assert rows[1][3:] == ["20.00", "30.00", "10.00", "40.00", "25.00", "12.50", ""]
    # the mean over folds is per organ over all query scans, then over organs
    assert rows[2][3:] == ["40.00", "40.00", "40.00", "60.00", "45.00", "22.50", ""]


def test_a_missing_organ_leaves_its_cell_empty_and_settings_stay_apart(chaos_training, capsys,
                                                                       tmp_path):
    files = [
        table(1, 3, {1: 0.9, 2: 0.5, 3: 0.5, 4: 0.9}).save(tmp_path / "s1_step100.json"),
        table(2, 3, {1: 0.4, 4: 0.6}).save(tmp_path / "s2_upper_step100.json"),
    ]
    rows = [cells(line) for line in summary_lines(chaos_training, capsys, files)[2:]]
    assert rows == [
        ["1", "3", "100", "90.00", "50.00", "50.00", "90.00", "70.00", "35.00", ""],
        ["2", "3", "100", "40.00", "", "", "60.00", "50.00", "25.00", ""],
    ]


def test_protocol_option_shows_that_protocols_organs(chaos_training, capsys, tmp_path):
    base = table(1, 0, {1: 0.8, 4: 0.6})
    realistic = fss.ResultTable(
        ResultRow(scan=r.scan, class_id=r.class_id, class_name=r.class_name,
                  protocol="realistic", setting=1, fold=0, dice=r.dice / 4)
        for r in base.filter(protocol="paper")
    )
    path = (base + realistic).save(tmp_path / "r_step5.json")
    chaos_training.main(["summarize", str(path), "--protocol", "realistic"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, row = cells(lines[0]), cells(lines[2])
    assert header[7:] == ["mean, realistic", "mean, paper", "mean, whole_volume"]
    assert row[3:] == ["20.00", "", "", "15.00", "17.50", "70.00", "35.00"]
