"""Tests for fewshotseg.evaluation: slice selection, protocols, folds, settings, result tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshotseg.evaluation import (
    CHAOS_CLASSES,
    CHAOS_PATIENT_IDS,
    SETTING2_GROUPS,
    ResultRow,
    ResultTable,
    class_slices,
    cross_validation_folds,
    evaluate_cross_validation,
    evaluate_fold,
    evaluate_pair,
    excluded_classes,
    query_chunks,
    setting_runs,
    support_scans,
    support_slice_indices,
)

# ------------------------------------------------------------------------------------------
# synthetic scans and predictors
# ------------------------------------------------------------------------------------------


def _box_volume(depth: int, ranges: dict[int, tuple[int, int]], size: int = 8) -> np.ndarray:
    """(depth, size, size) labels; class c fills a 2x2 box (its own corner) on slices lo..hi."""
    lab = np.zeros((depth, size, size), dtype=np.int64)
    for k, (c, (lo, hi)) in enumerate(sorted(ranges.items())):
        r = 2 * k
        lab[lo : hi + 1, r : r + 2, 1:3] = c
    return lab


# support: class 1 on slices 5..14, class 4 on slices 2..9 (of 20)
SUPPORT = _box_volume(20, {1: (5, 14), 4: (2, 9)})
# query: class 1 on slices 3..11, class 4 on slices 6..13 (of 16)
QUERY = _box_volume(16, {1: (3, 11), 4: (6, 13)})


class Oracle:
    """Reads the answer from the query image (image = labels), keeping the support's classes."""

    def __init__(self):
        self.calls = 0

    def predict(self, support_img, support_mask, query):
        self.calls += 1
        assert support_img.shape == support_mask.shape and support_img.ndim == 3
        q = np.rint(query).astype(np.int64)
        return np.where(np.isin(q, np.unique(support_mask[support_mask > 0])), q, 0)


class Recorder:
    """Returns background and records which support/query slices each call got.

    The support image's slice z is filled with z, the query's with 100 + z, so the values
    identify the slices.
    """

    def __init__(self):
        self.calls = []

    def predict(self, support_img, support_mask, query):
        self.calls.append(
            (
                [int(s[0, 0]) for s in support_img],
                [int(q[0, 0]) - 100 for q in query],
                sorted(int(v) for v in np.unique(support_mask) if v),
                support_img.dtype,
                support_mask.dtype,
            )
        )
        return np.zeros(query.shape, dtype=np.int64)


def _index_image(depth: int, offset: float = 0.0, size: int = 8) -> np.ndarray:
    return np.broadcast_to(
        (np.arange(depth, dtype=np.float32) + offset)[:, None, None], (depth, size, size)
    ).copy()


def _oracle_pair(**kw):
    return evaluate_pair(
        Oracle(), SUPPORT.astype(np.float32), SUPPORT, QUERY.astype(np.float32), QUERY, **kw
    )


# ------------------------------------------------------------------------------------------
# slice selection
# ------------------------------------------------------------------------------------------


def test_support_slices_on_known_range():
    # class 1: slices 5..14, len 10 -> lst[int(10/6)=1], lst[5], lst[int(8.33)=8]
    assert support_slice_indices(SUPPORT, 1) == [6, 10, 13]
    # class 4: slices 2..9, len 8 -> lst[1], lst[4], lst[int(6.67)=6]
    assert support_slice_indices(SUPPORT, 4) == [3, 6, 8]
    assert support_slice_indices(SUPPORT, 1, parts=1) == [10]
    assert support_slice_indices(torch.from_numpy(SUPPORT), 1) == [6, 10, 13]


def test_support_slices_use_only_slices_that_contain_the_class():
    lab = np.zeros((30, 4, 4), dtype=np.int64)
    present = [2, 3, 11, 12, 13, 20, 28]
    lab[present, 0, 0] = 3
    assert class_slices(lab, 3) == present
    # len 7: lst[int(7/6)=1], lst[int(3.5)=3], lst[int(5.83)=5]
    assert support_slice_indices(lab, 3) == [3, 12, 20]


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(0, 39), min_size=1, max_size=40))
def test_support_slices_match_method_formula(slices):
    lab = np.zeros((40, 2, 2), dtype=np.int64)
    lab[sorted(slices), 1, 1] = 2
    lst = sorted(slices)
    expected = [lst[int(p * len(lst))] for p in (1 / 6, 1 / 2, 5 / 6)]
    assert support_slice_indices(lab, 2) == expected


def test_support_missing_class_raises():
    with pytest.raises(ValueError, match="class 2 appears in no slice"):
        support_slice_indices(SUPPORT, 2)


def test_query_chunks_hand_computed():
    # class 1: range 3..11, interval 8/3: offsets 0-2 -> 0, 3-5 -> 1, 6-8 -> 2
    assert query_chunks(QUERY, 1) == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # class 4: range 6..13, interval 7/3: offsets 0-2 -> 0, 3-4 -> 1, 5-7 -> 2
    assert query_chunks(QUERY, 4) == [[6, 7, 8], [9, 10], [11, 12, 13]]
    # range 0..9, interval 3.0: the last slice (offset 9 -> 3) is clamped into chunk 2
    lab = _box_volume(10, {1: (0, 9)})
    assert query_chunks(lab, 1) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


def test_query_chunks_whole_volume_and_edge_cases():
    whole = query_chunks(QUERY, 1, whole_volume=True)
    assert whole == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11, 12, 13, 14, 15]]
    # a single-slice range goes to the middle chunk
    lab = _box_volume(6, {1: (4, 4)})
    assert query_chunks(lab, 1) == [[], [4], []]
    assert query_chunks(lab, 1, whole_volume=True) == [[0, 1, 2, 3], [4], [5]]
    # class absent: nothing scored in the paper protocol; whole volume split by position
    assert query_chunks(QUERY, 2) == [[], [], []]
    assert query_chunks(QUERY, 2, whole_volume=True) == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
        [10, 11, 12, 13, 14, 15],
    ]
    # slices inside the range without the class are still in the range
    gap = np.zeros((10, 2, 2), dtype=np.int64)
    gap[[2, 8], 0, 0] = 1
    assert sum(query_chunks(gap, 1), []) == list(range(2, 9))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda d: st.tuples(st.just(d), st.integers(0, d - 1), st.integers(0, d - 1))
    ),
    st.integers(1, 5),
    st.booleans(),
)
def test_query_chunks_partition_the_scored_slices_in_order(case, parts, whole):
    depth, a, b = case
    lo, hi = min(a, b), max(a, b)
    lab = _box_volume(depth, {1: (lo, hi)})
    chunks = query_chunks(lab, 1, parts=parts, whole_volume=whole)
    assert len(chunks) == parts
    flat = sum(chunks, [])
    assert flat == (list(range(depth)) if whole else list(range(lo, hi + 1)))
    # every chunk of the range is non-empty once the range has at least `parts` slices
    if hi - lo + 1 >= parts:
        assert all(ch for ch in query_chunks(lab, 1, parts=parts))


# ------------------------------------------------------------------------------------------
# the protocol with predictors
# ------------------------------------------------------------------------------------------


def test_one_way_calls_predict_once_per_class_and_chunk_with_the_right_slices():
    rec = Recorder()
    evaluate_pair(rec, _index_image(20), SUPPORT, _index_image(16, 100.0), QUERY, [1, 4])
    got = [(s, q, m) for s, q, m, _, _ in rec.calls]
    assert got == [
        ([6], [3, 4, 5], [1]),
        ([10], [6, 7, 8], [1]),
        ([13], [9, 10, 11], [1]),
        ([3], [6, 7, 8], [4]),
        ([6], [9, 10], [4]),
        ([8], [11, 12, 13], [4]),
    ]
    assert all(d_img == np.float32 and d_mask == np.int64 for *_, d_img, d_mask in rec.calls)


def test_n_way_uses_every_class_support_slices_in_one_pass_per_chunk():
    rec = Recorder()
    evaluate_pair(
        rec, _index_image(20), SUPPORT, _index_image(16, 100.0), QUERY, [1, 4], ways="all"
    )
    got = [(s, q, m) for s, q, m, _, _ in rec.calls]
    assert got == [
        ([3, 6], [3, 4, 5, 6, 7, 8], [1, 4]),
        ([6, 10], [6, 7, 8, 9, 10], [1, 4]),
        ([8, 13], [9, 10, 11, 12, 13], [1, 4]),
    ]


def test_n_way_support_shot_is_annotated_with_all_classes():
    seen = {}

    def predictor(s_img, s_mask, q):
        seen.setdefault("masks", []).append(s_mask.copy())
        return np.zeros(q.shape, dtype=np.int64)

    sup = SUPPORT.copy()
    sup[6, 7, 7] = 9  # a label that is not evaluated: must be hidden from the predictor
    evaluate_pair(predictor, sup, sup, QUERY, QUERY, [1, 4], ways="all")
    first = seen["masks"][0]  # chunk 0: support slices 3 and 6; slice 6 has classes 1 and 4
    assert first.shape == (2, 8, 8)
    assert np.array_equal(first[1], np.where(np.isin(sup[6], [1, 4]), sup[6], 0))
    assert set(np.unique(first[1])) == {0, 1, 4}


@pytest.mark.parametrize("protocol", ["paper", "whole_volume"])
@pytest.mark.parametrize("ways", [1, "all"])
def test_oracle_scores_one_and_background_scores_zero(protocol, ways):
    table = _oracle_pair(classes=[1, 4], protocol=protocol, ways=ways, class_names=CHAOS_CLASSES)
    assert [(r.class_id, r.class_name, r.dice) for r in table] == [
        (1, "liver", 1.0),
        (4, "spleen", 1.0),
    ]
    assert all(r.fp == 0 and r.fn == 0 and r.tp > 0 for r in table)

    def zeros(s_img, s_mask, q):
        return np.zeros(q.shape, dtype=np.int64)

    table = evaluate_pair(
        zeros, SUPPORT, SUPPORT, QUERY, QUERY, [1, 4], protocol=protocol, ways=ways
    )
    assert [r.dice for r in table] == [0.0, 0.0]
    assert table.rows[0].fn == np.count_nonzero(QUERY == 1)


def test_oracle_counts_and_scored_slices():
    paper = _oracle_pair(classes=[1])
    whole = _oracle_pair(classes=[1], protocol="whole_volume")
    assert paper.rows[0].tp == whole.rows[0].tp == 9 * 4  # 9 slices x 2x2 box
    assert paper.rows[0].n_slices == 9 and whole.rows[0].n_slices == 16


def test_whole_volume_penalises_false_positives_outside_the_range():
    image = QUERY.astype(np.float32)
    image[0, 6:8, 6:8] = 1  # a 2x2 "liver" blob on slice 0, outside the liver range 3..11
    kwargs = dict(classes=[1], query_id="q")
    paper = evaluate_pair(Oracle(), SUPPORT, SUPPORT, image, QUERY, **kwargs)
    whole = evaluate_pair(
        Oracle(), SUPPORT, SUPPORT, image, QUERY, protocol="whole_volume", **kwargs
    )
    assert paper.rows[0].dice == 1.0 and paper.rows[0].fp == 0
    tp = 36
    assert whole.rows[0].fp == 4
    assert whole.rows[0].dice == pytest.approx(2 * tp / (2 * tp + 4))
    # same in N-way
    whole_n = evaluate_pair(
        Oracle(), SUPPORT, SUPPORT, image, QUERY, protocol="whole_volume", ways="all", **kwargs
    )
    assert whole_n.rows[0].fp == 4


def test_class_absent_from_query():
    query = QUERY.copy()
    query[query == 4] = 0
    paper = evaluate_pair(Oracle(), SUPPORT, SUPPORT, query, query, [1, 4])
    assert paper.rows[1].n_slices == 0 and math.isnan(paper.rows[1].dice)
    assert paper.mean() == 1.0  # the NaN class is left out of the mean
    whole = evaluate_pair(Oracle(), SUPPORT, SUPPORT, query, query, [1, 4], protocol="whole_volume")
    assert math.isnan(whole.rows[1].dice)  # nothing predicted, nothing there

    def everywhere(s_img, s_mask, q):
        return np.full(q.shape, int(s_mask.max()), dtype=np.int64)

    whole = evaluate_pair(everywhere, SUPPORT, SUPPORT, query, query, [4], protocol="whole_volume")
    assert whole.rows[0].dice == 0.0 and whole.rows[0].fp == query.size


def test_label_values_are_kept_and_torch_in_and_out_work():
    support = np.where(SUPPORT == 1, 4, np.where(SUPPORT == 4, 1, 0))  # swap the values

    class TorchOracle(Oracle):
        def predict(self, support_img, support_mask, query):
            return torch.from_numpy(super().predict(support_img, support_mask, query))

    table = evaluate_pair(
        TorchOracle(),
        torch.from_numpy(support.astype(np.float32)),
        torch.from_numpy(support),
        torch.from_numpy(QUERY.astype(np.float32)),
        torch.from_numpy(QUERY),
        [4, 1],
        ways="all",
    )
    assert [(r.class_id, r.dice) for r in table] == [(4, 1.0), (1, 1.0)]


def test_support_and_query_may_differ_in_plane():
    query = np.zeros((16, 12, 10), dtype=np.int64)
    query[:, :8, :8] = QUERY
    table = evaluate_pair(Oracle(), SUPPORT, SUPPORT, query, query, [1, 4])
    assert [r.dice for r in table] == [1.0, 1.0]


def test_distances_are_computed_on_the_scored_slices():
    table = _oracle_pair(classes=[1], distances=True, spacing=(7.7, 1.25, 1.25))
    assert table.rows[0].hd95 == 0.0 and table.rows[0].assd == 0.0
    shifted = QUERY.astype(np.float32)
    shifted = np.roll(shifted, 1, axis=2)  # every prediction one column off (1.25 mm)
    t = evaluate_pair(Oracle(), SUPPORT, SUPPORT, shifted, QUERY, [1], distances=True,
                      spacing=(7.7, 1.25, 1.25))  # fmt: skip
    assert t.rows[0].hd95 == pytest.approx(1.25)
    assert math.isnan(_oracle_pair(classes=[1]).rows[0].hd95)  # not asked for


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(protocol="slices"), ValueError, "protocol"),
        (dict(ways=2), ValueError, "ways"),
        (dict(parts=0), ValueError, "parts"),
        (dict(classes=[]), ValueError, "empty"),
        (dict(classes=[1, 1]), ValueError, "duplicates"),
        (dict(classes=[0]), ValueError, "positive"),
        (dict(classes=[2]), ValueError, "class 2 appears in no slice"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    kw = dict(classes=[1]) | kwargs
    with pytest.raises(error, match=match):
        evaluate_pair(Oracle(), SUPPORT, SUPPORT, QUERY, QUERY, **kw)


def test_bad_volumes_and_predictors_raise():
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        evaluate_pair(Oracle(), SUPPORT[0], SUPPORT[0], QUERY, QUERY, [1])
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate_pair(Oracle(), SUPPORT, SUPPORT, QUERY[:5], QUERY, [1])
    with pytest.raises(TypeError, match="predict"):
        evaluate_pair(object(), SUPPORT, SUPPORT, QUERY, QUERY, [1])
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_pair(lambda s, m, q: q[:1], SUPPORT, SUPPORT, QUERY, QUERY, [1])
    with pytest.raises(TypeError, match="real numeric"):
        evaluate_pair(Oracle(), SUPPORT.astype(str), SUPPORT, QUERY, QUERY, [1])


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 10),
    st.integers(1, 8),
    st.integers(0, 10),
    st.integers(1, 8),
    st.sampled_from(["paper", "whole_volume"]),
    st.sampled_from([1, "all"]),
)
def test_oracle_is_perfect_for_any_ranges(s_lo, s_len, q_lo, q_len, protocol, ways):
    sup = _box_volume(20, {1: (s_lo, s_lo + s_len - 1), 3: (s_lo + 1, s_lo + s_len)})
    qry = _box_volume(20, {1: (q_lo, q_lo + q_len - 1), 3: (q_lo, q_lo + q_len - 1)})
    oracle = Oracle()
    t = evaluate_pair(oracle, sup, sup, qry, qry, [1, 3], protocol=protocol, ways=ways)
    assert [r.dice for r in t] == [1.0, 1.0]
    assert oracle.calls <= (6 if ways == 1 else 3)


# ------------------------------------------------------------------------------------------
# folds and settings
# ------------------------------------------------------------------------------------------


def test_chaos_folds_match_method():
    folds = cross_validation_folds(list(reversed(CHAOS_PATIENT_IDS)))  # order does not matter
    assert folds[0].test == (1, 2, 3, 5) and folds[0].support == 8
    assert folds[0].train == (10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39)
    assert folds[1].test == (8, 10, 13, 15) and folds[1].support == 19
    assert folds[4].test == (36, 37, 38, 39) and folds[4].support == 1  # wraps around
    tested = [i for f in folds for i in f.test]
    assert sorted(tested) == sorted(CHAOS_PATIENT_IDS)  # every scan is a query exactly once
    for f in folds:
        assert len(f.train) == 15 and f.support not in f.test
        assert set(f.train) | set(f.test) | {f.support} == set(CHAOS_PATIENT_IDS)
        assert not set(f.train) & (set(f.test) | {f.support})


def test_folds_generalise_and_sort_naturally():
    ids = [f"patient_{i}" for i in (10, 2, 1, 3, 20, 11)]
    folds = cross_validation_folds(ids, n_folds=3)
    assert folds[0].test == ("patient_1", "patient_2") and folds[0].support == "patient_3"
    assert folds[2].test == ("patient_11", "patient_20") and folds[2].support == "patient_1"
    with pytest.raises(ValueError, match="divisible"):
        cross_validation_folds(range(21), n_folds=5)
    with pytest.raises(ValueError, match="duplicates"):
        cross_validation_folds([1, 1, 2, 3], n_folds=2)
    with pytest.raises(ValueError, match=">= 2"):
        cross_validation_folds([1, 2], n_folds=1)
    with pytest.raises(TypeError, match="all integers or all strings"):
        cross_validation_folds([1, "2"], n_folds=2)



@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.data())
def test_support_scans_start_with_the_fold_support_and_avoid_its_queries(n_folds, g, data):
    folds = cross_validation_folds(range(n_folds * g), n_folds=n_folds)
    k = data.draw(st.integers(0, n_folds - 1))
    n = data.draw(st.integers(1, g))
    ids = support_scans(folds, k, n)
    assert len(ids) == len(set(ids)) == n and ids[0] == folds[k].support
    assert not set(ids) & set(folds[k].test)  # never a query of the fold
    assert set(ids[1:]) <= set(folds[k].train)  # training scans: images seen, labels never
    assert ids == support_scans(folds, k, g)[:n]  # more supports extend fewer


def test_support_scans_of_chaos_and_bad_counts():
    folds = cross_validation_folds(CHAOS_PATIENT_IDS)
    assert support_scans(folds, 3, 3) == (36, 37, 38) and support_scans(folds, 4, 2) == (1, 2)
    assert support_scans(folds, 0) == (8,)
    for n in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="from 1 to 4"):
            support_scans(folds, 0, n)
    with pytest.raises(ValueError, match="index"):
        support_scans(folds, 5, 1)

def test_settings():
    assert SETTING2_GROUPS == {"upper": (1, 4), "lower": (2, 3)}
    assert excluded_classes(1, "upper") == ()
    assert excluded_classes(2, "upper") == (1, 4)
    assert excluded_classes(2, "lower") == (2, 3)
    assert excluded_classes(2, (4, 1)) == (1, 4)
    with pytest.raises(ValueError, match="setting must be 1 or 2"):
        excluded_classes(3, "upper")
    with pytest.raises(ValueError, match="unknown group"):
        excluded_classes(2, "middle")
    with pytest.raises(ValueError, match="test group"):
        excluded_classes(2)
    runs = setting_runs(1)
    assert [(r.name, r.classes, r.exclude) for r in runs] == [("all", (1, 2, 3, 4), ())]
    runs = setting_runs(2, [2, 3])
    assert [(r.name, r.classes, r.exclude) for r in runs] == [("lower", (2, 3), (2, 3))]
    with pytest.raises(ValueError, match="no group"):
        setting_runs(2, [1, 5])


def test_evaluate_fold_and_cross_validation():
    scans = {i: (QUERY, QUERY) for i in (3, 1, 2, 4)}
    t = evaluate_fold(Oracle(), SUPPORT, SUPPORT, {"a": scans[1], "b": scans[2]}, [1], fold=2)
    assert [(r.scan, r.fold, r.dice) for r in t] == [("a", 2, 1.0), ("b", 2, 1.0)]

    seen = []

    def factory(fold):
        seen.append((fold.index, fold.test, fold.support))
        return Oracle()

    t = evaluate_cross_validation(factory, scans, [1, 4], n_folds=2, setting=1)
    assert seen == [(0, (1, 2), 3), (1, (3, 4), 1)]
    assert len(t) == 8 and {r.support for r in t} == {"3", "1"} and t.mean() == 1.0
    assert all(r.setting == 1 for r in t)
    t = evaluate_cross_validation(Oracle(), scans, [1], n_folds=2)  # one predictor for all
    assert len(t) == 4


class VolumeRecorder:
    """A realistic-protocol predictor: records the supports segment_volume gets and returns
    the query's labels (image = labels), as if it were perfect."""

    def __init__(self):
        self.supports = []

    def predict(self, support_img, support_mask, query):
        raise AssertionError("the realistic protocol calls segment_volume, not predict")

    def segment_volume(self, volumes, labels, query, *, classes):
        self.supports.append([int(v[0, 0, 0]) - 100 for v in volumes])
        assert isinstance(labels, list) and len(labels) == len(volumes)
        return np.where(np.isin(np.rint(query), classes), np.rint(query), 0).astype(np.int64)


def test_cross_validation_with_several_supports_hands_each_fold_its_support_scans():
    # scan i: labels QUERY and an image that is its labels but for a first voxel of 100 + i
    scans = {}
    for i in range(1, 7):
        lab = QUERY.copy()
        img = lab.astype(np.float32)
        img[0, 0, 0] = 100 + i
        scans[i] = (img, lab)
    rec = VolumeRecorder()
    t = evaluate_cross_validation(rec, scans, [1, 4], n_folds=2, protocol="realistic", supports=2)
    assert rec.supports == [[4, 5]] * 3 + [[1, 2]] * 3  # fold 0 queries 1-3, fold 1 queries 4-6
    assert {r.support for r in t if r.fold == 0} == {"4+5"} and t.mean() == 1.0
    with pytest.raises(ValueError, match="needs protocol='realistic'"):
        evaluate_cross_validation(rec, scans, [1], n_folds=2, supports=2)
    with pytest.raises(ValueError, match="from 1 to 3"):
        evaluate_cross_validation(rec, scans, [1], n_folds=2, protocol="realistic", supports=4)


def test_a_list_of_one_support_is_that_support():
    img, q = SUPPORT.astype(np.float32), QUERY.astype(np.float32)
    one = evaluate_pair(Oracle(), img, SUPPORT, q, QUERY, [1, 4], support_id=8)
    listed = evaluate_pair(Oracle(), [img], [SUPPORT], q, QUERY, [1, 4], support_id=[8])
    assert one.rows == listed.rows

def test_several_supports_need_the_realistic_protocol_and_matching_lists():
    img, lab = SUPPORT.astype(np.float32), SUPPORT
    q = QUERY.astype(np.float32)
    with pytest.raises(ValueError, match="need protocol='realistic'"):
        evaluate_pair(Oracle(), [img, img], [lab, lab], q, QUERY, [1])
    for labels in (lab, [lab], [lab, lab, lab]):
        with pytest.raises(ValueError, match="as many label volumes"):
            evaluate_pair(VolumeRecorder(), [img, img], labels, q, QUERY, [1],
                          protocol="realistic")
    with pytest.raises(ValueError, match="empty list"):
        evaluate_pair(VolumeRecorder(), [], [], q, QUERY, [1], protocol="realistic")
    with pytest.raises(ValueError, match=r"support_image\[1\] .* differ in shape"):
        evaluate_pair(VolumeRecorder(), [img, img], [lab, lab[1:]], q, QUERY, [1],
                      protocol="realistic")


# ------------------------------------------------------------------------------------------
# result tables
# ------------------------------------------------------------------------------------------


def _table() -> ResultTable:
    def row(scan, c, d, **kw):
        return ResultRow(
            scan=scan, class_id=c, class_name=CHAOS_CLASSES[c], dice=d, setting=1, fold=0, **kw
        )

    return ResultTable(
        [
            row("1", 1, 0.8, tp=8, fp=2, fn=2),
            row("2", 1, 0.6),
            row("1", 2, 0.5),
            row("2", 2, math.nan),  # absent from both: left out
            row("1", 4, math.nan, hd95=math.inf),
            row("1", 1, 0.8, protocol="whole_volume"),
            row("2", 1, 0.4, protocol="whole_volume", assd=2.5),
        ]
    )


def test_summary_mean_over_scans_then_classes():
    t = _table()
    with pytest.raises(ValueError, match="mixes"):
        t.mean()
    paper = t.filter(protocol="paper")
    assert paper.per_class() == {
        1: pytest.approx(0.7),
        2: pytest.approx(0.5),
        4: pytest.approx(math.nan, nan_ok=True),
    }
    assert paper.mean() == pytest.approx(0.6)  # (0.7 + 0.5) / 2; spleen is NaN
    summ = t.summary()
    assert [(s.protocol, s.n_scans) for s in summ] == [("paper", 2), ("whole_volume", 2)]
    assert summ[1].mean == pytest.approx(0.6)
    # repeats of one scan are averaged first, so each scan weighs the same
    rep = ResultTable(
        [ResultRow(scan="a", class_id=1, class_name="x", dice=d) for d in (1.0, 0.0)]
        + [ResultRow(scan="b", class_id=1, class_name="x", dice=1.0)]
    )
    assert rep.mean() == pytest.approx(0.75)


def test_markdown_is_readable():
    t = _table()
    text = str(t)
    assert "| protocol" in text and "liver" in text and "spleen" in text
    assert "70.00" in text  # liver paper mean in %
    assert "60.00" in text  # paper mean in %
    rows = t.to_markdown("rows")
    assert len(rows.splitlines()) == 2 + len(t)
    assert "inf" in rows and "2.50" in rows  # distances shown when present
    lines = t.to_markdown("summary").splitlines()
    assert len({len(line) for line in lines}) == 1  # aligned columns


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_table_round_trips(tmp_path, suffix):
    t = _table() + _oracle_pair(classes=[1, 4], query_id=7, support_id=8)
    path = t.save(tmp_path / f"results{suffix}")
    back = ResultTable.load(path)
    assert back == t
    assert back.rows[-1].scan == "7" and back.rows[0].setting == 1
    assert back.rows[-1].setting is None and math.isinf(back.rows[4].hd95)
    if suffix == ".json":  # strict JSON: no NaN/Infinity tokens
        text = path.read_text()
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text, parse_constant=lambda s: pytest.fail(f"non-standard constant {s}"))


def test_table_io_errors(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        _table().save(tmp_path / "x.txt")
    bad = tmp_path / "bad.csv"
    bad.write_text("scan,dice\n1,0.5\n")
    with pytest.raises(ValueError, match="missing"):
        ResultTable.load(bad)
    with pytest.raises(ValueError, match="unknown field"):
        _table().filter(organ="liver")


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------


@pytest.mark.data
def test_chaos_fold0_oracle_and_support_slices(chaos_dir):
    nib = pytest.importorskip("nibabel")

    def load(i):
        lab = np.asarray(nib.load(chaos_dir / f"label_{i}.nii.gz").dataobj)
        return np.moveaxis(np.rint(lab).astype(np.int64), 2, 0)

    support, query = load(8), load(1)
    for c in CHAOS_CLASSES:
        idx = support_slice_indices(support, c)
        assert all((support[z] == c).any() for z in idx) and idx == sorted(idx)
    table = evaluate_pair(
        Oracle(), support, support, query, query, list(CHAOS_CLASSES), query_id=1, support_id=8
    )
    assert [r.dice for r in table] == [1.0] * 4
    assert sum(r.tp for r in table) == int(np.count_nonzero(query))


def test_chaos_table_names_follow_the_dataset_class_map():
    from fewshotseg.datasets import CHAOS_T2SPIR

    assert CHAOS_CLASSES == {1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}
    assert {c: n.replace("_", " ") for c, n in CHAOS_CLASSES.items()} == dict(CHAOS_T2SPIR.classes)


def test_every_name_keeps_its_old_import_path_and_has_one_home():
    """The result table moved to fewshotseg.results, folds and settings to fewshotseg.folds, the
    protocol's slice choice to fewshotseg.chunks and the CHAOS constants to fewshotseg.datasets:
    the old names are the same objects."""
    from fewshotseg import chunks, datasets, evaluation, folds, results

    homes = {results: ("PROTOCOLS", "ResultRow", "ResultTable", "SummaryRow"),
             folds: ("Fold", "SettingRun", "cross_validation_folds", "excluded_classes",
                     "setting_runs", "support_scans"),
             chunks: ("chunk_centres", "chunk_of", "class_slices", "query_chunks",
                      "support_slice_indices"),
             datasets: ("CHAOS_CLASSES", "CHAOS_PATIENT_IDS", "SETTING2_GROUPS")}  # fmt: skip
    for module, names in homes.items():
        for name in names:
            assert name in evaluation.__all__ and name in module.__all__
            assert getattr(evaluation, name) is getattr(module, name), name
    assert {n for names in homes.values() for n in names} <= set(evaluation.__all__)


def test_scores_count_with_metrics_confusion_counts(monkeypatch):
    """evaluate_pair's tp/fp/fn come from metrics.confusion_counts, not a copy of it."""
    from fewshotseg import evaluation
    from fewshotseg.metrics import ConfusionCounts

    monkeypatch.setattr(
        evaluation, "confusion_counts", lambda p, t, classes: {1: ConfusionCounts(7, 2, 3)}
    )
    row = _oracle_pair(classes=[1]).rows[0]
    assert (row.tp, row.fp, row.fn, row.dice) == (7, 2, 3, 14 / 19)
