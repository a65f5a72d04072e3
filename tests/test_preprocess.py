"""Tests for fewshotseg.preprocess on synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fewshotseg import preprocess as pp

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
volumes = arrays(
    np.float32,
    st.tuples(st.integers(1, 4), st.integers(2, 12), st.integers(2, 12)),
    elements=finite,
)


def _synthetic_mri(seed: int = 0, shape=(4, 32, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = rng.gamma(2.0, 100.0, size=shape)
    volume[0, 0, :5] = 1e5  # a few hot voxels
    return volume


@settings(max_examples=40, deadline=None)
@given(volume=volumes, percent=st.floats(0.0, 20.0))
def test_clip_top_respects_the_quantile(volume: np.ndarray, percent: float) -> None:
    clipped = pp.clip_top(volume, percent=percent)
    cutoff = np.float32(np.percentile(volume, 100 - percent))
    assert clipped.dtype == np.float32 and clipped.shape == volume.shape
    assert clipped.max() <= cutoff
    below = volume <= cutoff
    np.testing.assert_array_equal(clipped[below], volume[below])
    # at most `percent` % of voxels lie above the cut-off (linear interpolation: + 1 voxel)
    assert (volume > cutoff).sum() <= percent / 100 * volume.size + 1


def test_clip_top_half_percent_on_known_values() -> None:
    values = np.arange(1, 1001, dtype=np.float64)  # 1..1000
    clipped = pp.clip_top(values, percent=0.5)
    assert (clipped < values).sum() == 5  # the top 0.5 % of 1000 voxels
    assert clipped.max() == pytest.approx(np.percentile(values, 99.5))
    np.testing.assert_array_equal(pp.clip_top(values, percent=0.0), values)


@settings(max_examples=40, deadline=None)
@given(volume=volumes)
def test_zscore_gives_mean_0_std_1(volume: np.ndarray) -> None:
    assume(volume.astype(np.float64).std() > 1e-3)
    z = pp.zscore(volume)
    assert z.dtype == np.float32 and z.shape == volume.shape
    assert abs(float(z.astype(np.float64).mean())) < 1e-4
    assert float(z.astype(np.float64).std()) == pytest.approx(1.0, abs=1e-4)


def test_zscore_with_given_statistics_and_errors() -> None:
    np.testing.assert_allclose(pp.zscore(np.array([1.0, 3.0]), mean=1.0, std=2.0), [0.0, 1.0])
    with pytest.raises(ValueError, match="constant"):
        pp.zscore(np.full((2, 2), 7.0))
    with pytest.raises(ValueError, match="std"):
        pp.zscore(np.arange(4.0), std=0.0)
    with pytest.raises(ValueError, match="NaN"):
        pp.zscore(np.array([1.0, np.nan]))
    with pytest.raises(TypeError, match="real"):
        pp.zscore(np.array([True, False]))
    with pytest.raises(ValueError, match="empty"):
        pp.zscore(np.zeros((0, 3)))


def test_mri_is_clip_then_zscore() -> None:
    volume = _synthetic_mri()
    out = pp.mri(volume)
    np.testing.assert_allclose(out, pp.zscore(pp.clip_top(volume, percent=0.5)), atol=1e-6)
    assert abs(out.mean()) < 1e-5 and out.std() == pytest.approx(1.0, abs=1e-5)
    # the hot voxels no longer dominate: the maximum is the 99.5th percentile's z-score
    assert out.max() < 10
    assert pp.mri(volume, zscore=False).max() == pytest.approx(np.percentile(volume, 99.5))
    np.testing.assert_array_equal(volume, _synthetic_mri())  # input untouched


def test_ct_window_and_training_statistics() -> None:
    rng = np.random.default_rng(1)
    scans = [rng.uniform(-1024, 1500, size=(2, 8, 8)) for _ in range(3)]
    windowed = [pp.ct(s, zscore=False) for s in scans]
    for w in windowed:
        assert w.min() >= -125 and w.max() <= 275
    mean, std = pp.intensity_stats(windowed)
    pooled = np.concatenate([w.ravel().astype(np.float64) for w in windowed])
    assert mean == pytest.approx(pooled.mean()) and std == pytest.approx(pooled.std())
    out = pp.ct(scans[0], mean=mean, std=std)
    np.testing.assert_allclose(out, (windowed[0] - mean) / std, rtol=1e-5, atol=1e-5)
    together = np.concatenate([pp.ct(s, mean=mean, std=std).ravel() for s in scans])
    assert abs(together.mean()) < 1e-5 and together.std() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(pp.ct(np.array([-5.0, 5.0]), window=(0, 1), zscore=False), [0, 1])
    with pytest.raises(ValueError, match="window"):
        pp.ct(scans[0], window=(275, -125))
    with pytest.raises(ValueError, match="at least one"):
        pp.intensity_stats([])


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 5), st.integers(2, 40), st.integers(2, 40)),
    spacing=st.tuples(*[st.sampled_from([0.5, 0.8, 1.0, 1.25, 2.0, 3.0])] * 3),
    target=st.tuples(*[st.sampled_from([0.7, 1.0, 1.25, 1.5, 2.5])] * 3),
    order=st.sampled_from([0, 1, 3]),
)
def test_resample_shape_follows_the_spacing_ratio(shape, spacing, target, order) -> None:
    out = pp.resample(np.ones(shape, np.float32), spacing, target, order=order)
    expected = tuple(
        max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True)
    )
    assert out.shape == expected
    np.testing.assert_allclose(out, 1.0, atol=1e-5)  # a constant stays constant
    # the physical extent is kept to within one output voxel per axis
    for n, s, m, t in zip(shape, spacing, out.shape, target, strict=True):
        assert abs(m * t - n * s) <= t / 2 + 1e-9 or m == 1


def test_resample_inplane_keeps_depth_and_accepts_volume_spacing() -> None:
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(3, 40, 30)).astype(np.float32)
    out = pp.resample_inplane(volume, (7.7, 1.0, 2.0), 1.25)
    assert out.shape == (3, 32, 48) and out.dtype == np.float32
    assert pp.resample_inplane(volume[0], (1.0, 2.0), (2.0, 1.0)).shape == (20, 60)
    # linear interpolation stays within the input's range
    assert out.min() >= volume.min() - 1e-5 and out.max() <= volume.max() + 1e-5
    np.testing.assert_array_equal(pp.resample_inplane(volume, (1.0, 1.0), 1.0), volume)


@settings(max_examples=30, deadline=None)
@given(
    labels=arrays(
        np.int32,
        st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
        elements=st.sampled_from([0, 1, 4, 200]),
    ),
    factor=st.sampled_from([2, 3]),
)
def test_label_resampling_keeps_values_and_inverts(labels: np.ndarray, factor: int) -> None:
    up = pp.resample_inplane(labels, (1.0, 1.0), 1.0 / factor, order=0)
    assert up.dtype == labels.dtype
    assert set(np.unique(up)) <= set(np.unique(labels))
    down = pp.resample_inplane(up, (1.0 / factor, 1.0 / factor), 1.0, order=0)
    np.testing.assert_array_equal(down, labels)


def test_resample_errors() -> None:
    volume = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="spacing"):
        pp.resample(volume, (1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="spacing"):
        pp.resample(volume, (1.0, -1.0, 1.0), 1.0)
    with pytest.raises(ValueError, match="target_spacing"):
        pp.resample(volume, (1.0, 1.0, 1.0), (1.0, 1.0))
    with pytest.raises(ValueError, match="order"):
        pp.resample(volume, (1.0, 1.0, 1.0), 0.5, order=7)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        pp.resample_inplane(np.zeros(4), (1.0, 1.0), 0.5)
    assert pp.resample(volume, (2.0, 1.0, 1.0), (None, 0.5, 0.5)).shape == (2, 8, 8)


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 20)),
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
)
def test_crop_or_pad_is_centred_and_invertible_in_size(shape, size) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 100, size=shape).astype(np.int16)
    y = pp.crop_or_pad(x, size, pad_value=-1)
    assert y.shape == shape[:1] + size and y.dtype == x.dtype
    back = pp.crop_or_pad(y, shape[1:], pad_value=-1)
    assert back.shape == x.shape
    # the kept block sits at the same place in both, so the round trip keeps it exactly
    keep = back != -1
    np.testing.assert_array_equal(back[keep], x[keep])
    if size[0] >= shape[1] and size[1] >= shape[2]:  # padding only: exact inverse
        np.testing.assert_array_equal(back, x)
    # centred: (n - m) // 2 rows/columns cut before, or (m - n) // 2 padded before
    expected = np.full(y.shape, -1, dtype=x.dtype)
    src, dst = [slice(None)], [slice(None)]
    for n, m in zip(shape[1:], size, strict=True):
        length = min(n, m)
        start_src = (n - m) // 2 if n >= m else 0
        start_dst = 0 if n >= m else (m - n) // 2
        src.append(slice(start_src, start_src + length))
        dst.append(slice(start_dst, start_dst + length))
    expected[tuple(dst)] = x[tuple(src)]
    np.testing.assert_array_equal(y, expected)


def test_crop_or_pad_examples_and_errors() -> None:
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(pp.crop_or_pad(x, (2, 1)), [[1], [4]])
    np.testing.assert_array_equal(
        pp.crop_or_pad(x, (3, 5)), [[0, 0, 1, 2, 0], [0, 3, 4, 5, 0], [0, 0, 0, 0, 0]]
    )
    assert pp.crop_or_pad(np.zeros((1, 300, 200)), 256).shape == (1, 256, 256)
    with pytest.raises(ValueError, match="size"):
        pp.crop_or_pad(x, (0, 3))
    with pytest.raises(ValueError, match="2 axes"):
        pp.crop_or_pad(np.zeros(3), 2)


def test_resample_aligns_pixel_centres_physically() -> None:
    # output pixel centres at (j + 0.5) * 0.5 mm, input centres at 0.5 and 1.5 mm
    ramp = np.array([[[0.0, 1.0]]])
    out = pp.resample_inplane(ramp, (1.0, 1.0), (1.0, 0.5), order=1)
    np.testing.assert_allclose(out[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)


def test_ct_recipe_warns_on_data_that_is_not_in_hounsfield_units() -> None:
    import warnings

    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 1500, size=(2, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real HU: silent
        pp.ct(hu)
        pp.ct(hu / 2500 + 0.5, window=(0.2, 0.8))  # an explicit window: the caller knows
    for not_hu in (hu / 2500 + 0.5, hu + 1024, np.clip(hu, -125, 275)):
        with pytest.warns(UserWarning, match="Hounsfield"):
            out = pp.ct(not_hu)
        assert out.shape == not_hu.shape  # it still applies the recipe
    assert pp.looks_like_hounsfield(hu) and not pp.looks_like_hounsfield(hu + 1024)
