"""The cross-fold table that docs/results.md is built from: `fewshotseg.results.summarize_folds`
(``benchmarks/chaos_training.py summarize`` prints it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fewshotseg as fss
from fewshotseg.datasets import CHAOS_CLASSES
from fewshotseg.results import ResultRow, summarize_folds


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


def summary_lines(tables, steps=None, **kwargs):
    kwargs.setdefault("class_names", CHAOS_CLASSES)
    return summarize_folds(tables, steps=steps, **kwargs).splitlines()


def cells(line):
    return [c.strip().strip("*") for c in line.strip("|").split("|")]


def test_setting2_groups_of_a_fold_make_one_row_and_folds_average():
    tables = [
        table(2, 0, {1: 0.6, 4: 0.8}),
        table(2, 0, {2: 0.5, 3: 0.7}),
        table(2, 1, {1: 0.2, 4: 0.4}),
        table(2, 1, {2: 0.3, 3: 0.1}),
    ]
    lines = summary_lines(tables, steps=[7000, 6990, 7000, 7000])
    header, rows = cells(lines[0]), [cells(line) for line in lines[2:]]
    assert set(lines[1].replace("|", "").split()) == {"---"}
    assert lines[1].count("---") == len(header)
    assert header[3:7] == ["liver", "right_kidney", "left_kidney", "spleen"]
    assert [r[:3] for r in rows] == [["2", "0", "6990/7000"], ["2", "1", "7000"],
                                     ["2", "mean of 2", ""]]
    assert header[7:] == ["mean, paper", "mean, whole_volume", "mean, realistic"]
    assert rows[0][3:] == ["60.00", "50.00", "70.00", "80.00", "65.00", "32.50", ""]
    assert rows[1][3:] == ["20.00", "30.00", "10.00", "40.00", "25.00", "12.50", ""]
    # the mean over folds is per organ over all query scans, then over organs
    assert rows[2][3:] == ["40.00", "40.00", "40.00", "60.00", "45.00", "22.50", ""]


def test_the_mean_over_folds_weighs_query_scans_not_folds():
    # fold 0 has one query scan at 0.9, fold 1 three at 0.1: per scan 0.3, per fold 0.5
    tables = [table(1, 0, {1: 0.9}, scans=("a",)), table(1, 1, {1: 0.1}, scans=("b", "c", "d"))]
    rows = [cells(line) for line in summary_lines(tables)[2:]]
    assert rows[-1][:4] == ["1", "mean of 2", "", "30.00"]


def test_a_missing_organ_leaves_its_cell_empty_and_settings_stay_apart():
    tables = [table(1, 3, {1: 0.9, 2: 0.5, 3: 0.5, 4: 0.9}), table(2, 3, {1: 0.4, 4: 0.6})]
    rows = [cells(line) for line in summary_lines(tables, steps=[100, 100])[2:]]
    assert rows == [
        ["1", "3", "100", "90.00", "50.00", "50.00", "90.00", "70.00", "35.00", ""],
        ["2", "3", "100", "40.00", "", "", "60.00", "50.00", "25.00", ""],
    ]


def test_protocol_option_shows_that_protocols_organs():
    base = table(1, 0, {1: 0.8, 4: 0.6})
    realistic = fss.ResultTable(
        ResultRow(scan=r.scan, class_id=r.class_id, class_name=r.class_name,
                  protocol="realistic", setting=1, fold=0, dice=r.dice / 4)
        for r in base.filter(protocol="paper")
    )
    lines = summary_lines([base + realistic], steps=[5], protocol="realistic")
    header, row = cells(lines[0]), cells(lines[2])
    assert header[7:] == ["mean, realistic", "mean, paper", "mean, whole_volume"]
    assert row[3:] == ["20.00", "", "", "15.00", "17.50", "70.00", "35.00"]


def test_default_columns_are_the_tables_classes_with_their_row_names():
    lines = summarize_folds([table(1, 0, {4: 0.5, 1: 0.7})]).splitlines()
    assert cells(lines[0])[3:5] == ["1", "4"]  # ascending ids, named as in the rows
    assert cells(lines[2])[2] == ""  # no steps given: the column stays empty


@pytest.mark.parametrize(
    ("tables", "kwargs", "message"),
    [
        ([fss.ResultTable()], {}, "empty"),
        ([table(1, 0, {1: 0.5}) + table(1, 1, {1: 0.5})], {}, "one table per evaluation run"),
        ([table(1, 0, {1: 0.5})], {"steps": [1, 2]}, "2 steps for 1 tables"),
        ([table(1, 0, {1: 0.5})], {"protocol": "nope"}, "protocol must be one of"),
    ],
)
def test_bad_input_is_an_error_that_says_what_to_pass(tables, kwargs, message):
    with pytest.raises(ValueError, match=message):
        summarize_folds(tables, **kwargs)


def test_the_benchmark_prints_the_library_table(tmp_path):
    """``chaos_training.py summarize`` is a thin call: the same text, steps from file names.
    Run as a user runs it (a subprocess), not imported by path."""
    tables = [table(2, 0, {1: 0.6, 4: 0.8}), table(2, 0, {2: 0.5, 3: 0.7})]
    files = [t.save(tmp_path / f"g{i}_step{7000 - 10 * i}.json") for i, t in enumerate(tables)]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos_training.py"
    done = subprocess.run([sys.executable, str(script), "summarize", *map(str, files)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    expected = summarize_folds(tables, steps=[7000, 6990], class_names=CHAOS_CLASSES)
    assert done.stdout.strip() == expected
