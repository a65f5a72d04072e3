"""Tests for fewshotseg.metrics: hand-computed cases, empty cases, input handling, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fewshotseg.metrics import (
    ConfusionCounts,
    DiceMetric,
    as_label_map,
    assd,
    confusion_counts,
    dice,
    dice_from_counts,
    hd95,
    iou,
    nanmean,
)

# ------------------------------------------------------------------------------------------
# overlap: hand-made cases
# ------------------------------------------------------------------------------------------


def test_dice_and_iou_hand_computed_3d():
    target = np.zeros((2, 4, 4), dtype=np.int64)
    target[0, :2, :2] = 1  # 4 voxels of class 1
    target[1, :, :] = 2  # 16 voxels of class 2
    pred = np.zeros_like(target)
    pred[0, :2, :1] = 1  # 2 of the 4 -> tp 2, fn 2
    pred[0, 3, 3] = 1  # fp 1
    pred[1, :2, :] = 2  # 8 of 16 -> tp 8, fn 8
    counts = confusion_counts(pred, target)
    assert counts == {
        1: ConfusionCounts(tp=2, fp=1, fn=2),
        2: ConfusionCounts(tp=8, fp=0, fn=8),
    }
    assert dice(pred, target) == {1: pytest.approx(4 / 7), 2: pytest.approx(16 / 24)}
    assert iou(pred, target) == {1: pytest.approx(2 / 5), 2: pytest.approx(8 / 16)}


def test_classes_default_to_union_of_nonzero_labels_and_keep_given_order():
    pred = np.array([0, 3, 3, 0])
    target = np.array([5, 0, 3, 0])
    assert list(dice(pred, target)) == [3, 5]
    assert list(dice(pred, target, classes=[5, 3])) == [5, 3]


def test_empty_cases():
    z = np.zeros((3, 4, 4), dtype=np.int64)
    one = z.copy()
    one[1, 1:3, 1:3] = 1
    # absent from both -> NaN everywhere, counts zero
    assert math.isnan(dice(z, z, classes=[1])[1])
    assert math.isnan(iou(z, z, classes=[1])[1])
    assert math.isnan(hd95(z, z, classes=[1])[1])
    assert math.isnan(assd(z, z, classes=[1])[1])
    assert confusion_counts(z, z, classes=[1])[1] == ConfusionCounts(0, 0, 0)
    # default classes: nothing to score -> empty dict, not an error
    assert dice(z, z) == {}
    # present in one only -> 0 overlap, infinite distances, both directions
    for p, t in ((one, z), (z, one)):
        assert dice(p, t) == {1: 0.0}
        assert iou(p, t) == {1: 0.0}
        assert hd95(p, t) == {1: math.inf}
        assert assd(p, t) == {1: math.inf}


def test_nanmean_leaves_out_nan():
    assert nanmean([1.0, math.nan, 0.0]) == 0.5
    assert math.isnan(nanmean([math.nan]))
    assert math.isnan(nanmean([]))


def test_confusion_counts_add_and_validate():
    a = ConfusionCounts(tp=1, fp=2, fn=3)
    assert a + ConfusionCounts(tp=1) == ConfusionCounts(tp=2, fp=2, fn=3)
    assert a.dice == pytest.approx(2 / 7)
    assert a.iou == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="non-negative"):
        ConfusionCounts(tp=-1)
    assert math.isnan(dice_from_counts(0, 0, 0))


def test_dice_metric_accumulates_a_3d_dice():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(5, 6, 6))
    target = rng.integers(0, 3, size=(5, 6, 6))
    m = DiceMetric()
    for z in range(5):
        m.update(pred[z], target[z])
    assert m.compute() == pytest.approx(dice(pred, target))
    m.reset()
    assert m.compute() == {}
    fixed = DiceMetric(classes=[7])
    fixed.update(pred[0], target[0])
    assert list(fixed.compute()) == [7] and math.isnan(fixed.compute()[7])


# ------------------------------------------------------------------------------------------
# surface distances: hand-made cases
# ------------------------------------------------------------------------------------------


def test_distances_between_parallel_planes_follow_spacing():
    a = np.zeros((4, 5, 5), dtype=np.int64)
    b = np.zeros_like(a)
    a[0] = 1
    b[2] = 1
    # every voxel of each plane is 2 slices from the other plane
    assert hd95(a, b, spacing=(3.0, 1.0, 1.0)) == {1: pytest.approx(6.0)}
    assert assd(a, b, spacing=(3.0, 1.0, 1.0)) == {1: pytest.approx(6.0)}
    assert hd95(a, b) == {1: pytest.approx(2.0)}
    assert hd95(a, b, spacing=0.5) == {1: pytest.approx(1.0)}


def test_distances_between_single_voxels():
    a = np.zeros((1, 5, 5), dtype=np.int64)
    b = np.zeros_like(a)
    a[0, 0, 0] = 1
    b[0, 3, 4] = 1
    assert hd95(a, b) == {1: pytest.approx(5.0)}
    assert assd(a, b) == {1: pytest.approx(5.0)}
    # (3 rows x 2 mm, 4 cols x 0.5 mm) -> sqrt(36 + 4)
    assert hd95(a, b, spacing=(1.0, 2.0, 0.5)) == {1: pytest.approx(math.sqrt(40.0))}


def test_asymmetric_1d_case_hand_computed():
    # surfaces: a -> {0, 1}; b -> {0, 5}
    a = np.array([1, 1, 0, 0, 0, 0])
    b = np.array([1, 0, 0, 0, 0, 1])
    # a->b distances [0, 1]; b->a distances [0, 4]
    assert assd(a, b)[1] == pytest.approx((0 + 1 + 0 + 4) / 4)
    # directed 95th percentiles (linear interpolation): 0.95 and 3.8 -> max
    assert hd95(a, b)[1] == pytest.approx(3.8)
    assert hd95(b, a)[1] == pytest.approx(3.8)


def test_surface_ignores_interior_voxels():
    # a solid 5x5x5 cube against itself shifted by one voxel along axis 0: every surface point
    # of one cube is at most 1 voxel from the other's surface
    a = np.zeros((9, 9, 9), dtype=np.int64)
    b = np.zeros_like(a)
    a[2:7, 2:7, 2:7] = 1
    b[3:8, 2:7, 2:7] = 1
    assert hd95(a, b)[1] == pytest.approx(1.0)
    assert 0 < assd(a, b)[1] < 1


# ------------------------------------------------------------------------------------------
# input handling
# ------------------------------------------------------------------------------------------


def test_torch_numpy_bool_and_whole_float_inputs_agree():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 3, size=(3, 5, 5))
    t = rng.integers(0, 3, size=(3, 5, 5))
    ref = dice(p, t)
    assert dice(torch.from_numpy(p), torch.from_numpy(t)) == ref
    assert dice(p.astype(np.float32), t.astype(np.float64)) == ref
    assert dice(p.astype(np.uint8), torch.from_numpy(t).to(torch.int32)) == ref
    assert hd95(torch.from_numpy(p), t) == hd95(p, t)
    assert dice(p == 1, t == 1) == {1: ref[1]}


@pytest.mark.parametrize(
    ("pred", "target", "error", "match"),
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), ValueError, "same shape"),
        (np.array([0.5, 1.0]), np.array([0, 1]), ValueError, "non-integer"),
        (np.array([np.nan, 1.0]), np.array([0, 1]), ValueError, "NaN"),
        (np.array([-1, 1]), np.array([0, 1]), ValueError, "negative"),
        (np.array(["a", "b"]), np.array([0, 1]), TypeError, "dtype"),
        (np.array(1), np.array(1), ValueError, "scalar"),
        ("labels", np.array([0, 1]), TypeError, "numpy array"),
    ],
)
def test_bad_inputs_raise(pred, target, error, match):
    with pytest.raises(error, match=match):
        dice(pred, target)


def test_bad_classes_and_spacing_raise():
    a = np.zeros((2, 3, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="positive"):
        dice(a, a, classes=[0])
    with pytest.raises(TypeError, match="integers"):
        dice(a, a, classes=[1.5])
    with pytest.raises(ValueError, match="one value per axis"):
        hd95(a, a, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="> 0"):
        assd(a, a, spacing=(1.0, 0.0, 1.0))


def test_as_label_map_keeps_integer_arrays_without_copy():
    a = np.array([[0, 2]], dtype=np.int16)
    assert as_label_map(a) is a
    assert as_label_map(np.array([True, False])).dtype == np.int32


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------

_shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))


@st.composite
def _label_pairs(draw):
    shape = draw(_shapes)
    elems = st.integers(0, 3)
    p = draw(arrays(np.int64, shape, elements=elems))
    t = draw(arrays(np.int64, shape, elements=elems))
    return p, t


@settings(max_examples=60, deadline=None)
@given(_label_pairs())
def test_dice_properties(pair):
    p, t = pair
    classes = [1, 2, 3]
    d_pt = dice(p, t, classes)
    d_tp = dice(t, p, classes)
    j = iou(p, t, classes)
    for c in classes:
        absent = not (p == c).any() and not (t == c).any()
        if absent:
            assert math.isnan(d_pt[c]) and math.isnan(d_tp[c]) and math.isnan(j[c])
            continue
        assert 0.0 <= d_pt[c] <= 1.0
        assert d_pt[c] == pytest.approx(d_tp[c])  # symmetric
        assert d_pt[c] == pytest.approx(2 * j[c] / (1 + j[c]))  # Dice-IoU identity
        assert j[c] <= d_pt[c] + 1e-12
        # perfect agreement on a present class gives 1
        assert dice(t, t, [c])[c] == 1.0 or not (t == c).any()
        assert dice(p, p, [c])[c] == 1.0 or not (p == c).any()


@settings(max_examples=40, deadline=None)
@given(_label_pairs(), st.tuples(*[st.floats(0.5, 3.0)] * 3))
def test_distance_properties(pair, spacing):
    p, t = pair
    h_pt = hd95(p, t, [1, 2, 3], spacing=spacing)
    h_tp = hd95(t, p, [1, 2, 3], spacing=spacing)
    a_pt = assd(p, t, [1, 2, 3], spacing=spacing)
    self_h = hd95(p, p, [1, 2, 3], spacing=spacing)
    for c in (1, 2, 3):
        in_p, in_t = bool((p == c).any()), bool((t == c).any())
        if in_p and in_t:
            assert h_pt[c] == pytest.approx(h_tp[c])  # symmetric
            assert h_pt[c] >= 0 and a_pt[c] >= 0
            # bounded by the diagonal of the array in physical units
            diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, spacing, strict=True)))
            assert h_pt[c] <= diag + 1e-9 and a_pt[c] <= diag + 1e-9
        elif in_p != in_t:
            assert h_pt[c] == math.inf and a_pt[c] == math.inf
        else:
            assert math.isnan(h_pt[c]) and math.isnan(a_pt[c])
        if in_p:
            assert self_h[c] == 0.0


@settings(max_examples=30, deadline=None)
@given(_label_pairs(), st.integers(1, 3))
def test_counts_add_over_slices(pair, split):
    p, t = pair
    split = min(split, p.shape[0])
    whole = confusion_counts(p, t, [1, 2, 3])
    a = confusion_counts(p[:split], t[:split], [1, 2, 3])
    b = confusion_counts(p[split:], t[split:], [1, 2, 3])
    assert {c: a[c] + b[c] for c in a} == whole
