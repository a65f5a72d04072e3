"""Tests for fewshotseg.body_mask: the automatic body mask on phantoms of several modalities
(cardiac MRI with a bright blood pool, CT in HU, windowed CT), its invariants, and the coverage
report of the pseudolabel step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewshotseg.body_mask import (
    BodyCoverage,
    body_mask,
    estimate_background,
    non_air_mask,
)
from fewshotseg.superpixels import SuperpixelPseudolabeler

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def cardiac(seed: int = 0, size: int = 128, noise: float = 0.015) -> tuple[np.ndarray, np.ndarray]:
    """A short-axis-like MRI slice and its body ellipse: dark and mid tissue (muscle 0.13, liver
    0.16, back muscle 0.11, myocardium 0.25), bright blood (LV, RV, aorta ~1.0) and a bright fat
    arc at the front only; Rician noise of ``noise`` (relative to the blood) everywhere."""
    rng = np.random.default_rng(seed)
    shape, c = (size, size), size / 2
    yy = np.mgrid[:size, :size][0] / size
    body = ellipse(shape, c, c, 0.36 * size, 0.46 * size)
    rim = body & ~ellipse(shape, c, c, 0.36 * size - 4, 0.46 * size - 4)
    image = np.where(body, 0.13, 0.0)
    image[body & ellipse(shape, c + 0.1 * size, c - 0.2 * size, 0.22 * size, 0.25 * size)] = 0.16
    image[body & (yy > 0.7)] = 0.11
    image[rim & (yy < 0.35)] = 0.9
    image[ellipse(shape, c - 0.05 * size, c + 0.1 * size, 0.17 * size, 0.17 * size)] = 0.25
    image[ellipse(shape, c - 0.05 * size, c + 0.1 * size, 0.12 * size, 0.12 * size)] = 1.0
    image[ellipse(shape, c - 0.12 * size, c - 0.1 * size, 0.07 * size, 0.1 * size)] = 0.9
    image[ellipse(shape, c + 0.05 * size, c - 0.15 * size, 0.05 * size, 0.05 * size)] = 1.0
    image = image + rng.normal(0, 0.02, shape) * body  # texture
    complex_ = image + rng.normal(0, noise, shape) + 1j * rng.normal(0, noise, shape)
    return np.abs(complex_) * 1000, body


def ct_hu(seed: int = 0, size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An abdominal CT slice in HU (air -1000, fat -100, soft tissue 40, a vertebra 700, gas
    -800 inside, noise 20 HU), its body ellipse, and the table (200 HU) just below the body."""
    rng = np.random.default_rng(seed)
    shape, c = (size, size), size / 2
    body = ellipse(shape, c - 4, c, 0.32 * size, 0.42 * size)
    image = np.full(shape, -1000.0)
    image[body] = -100.0
    image[ellipse(shape, c - 4, c, 0.32 * size - 5, 0.42 * size - 5)] = 40.0
    image[ellipse(shape, c + 0.18 * size, c, 0.06 * size, 0.06 * size)] = 700.0
    image[ellipse(shape, c - 0.1 * size, c - 0.2 * size, 0.08 * size, 0.1 * size)] = -800.0
    table = np.zeros(shape, bool)
    row = int(c + 0.32 * size)
    table[row - 2 : row + 1, 8:-8] = True
    image[table] = 200.0
    return image + rng.normal(0, 20, shape), body, table


def window(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    return np.clip((hu - level + width / 2) / width, 0.0, 1.0)


def previous_rule(image: np.ndarray) -> np.ndarray:
    """The body mask before issue 15: half the Otsu threshold of the percentile-normalised image."""
    from skimage.filters import threshold_otsu

    low, high = np.percentile(image, (0.5, 99.5))
    norm = np.clip((image - low) / (high - low), 0, 1)
    return body_mask(image, threshold=low + 0.5 * threshold_otsu(norm) * (high - low))


def coverage(mask: np.ndarray, body: np.ndarray) -> tuple[float, float]:
    """(share of the body inside the mask, share of the outside inside the mask)."""
    return float(mask[body].mean()), float(mask[~body].mean())


# ---------------------------------------------------------------------------------------------
# the failure of issue 15 and the modalities


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("noise", [0.01, 0.015, 0.02])
def test_cardiac_phantom_previous_rule_fails_new_rule_covers_the_body(seed, noise):
    image, body = cardiac(seed, noise=noise)
    kept, _ = coverage(previous_rule(image), body)
    assert kept < 0.5  # the bug: Otsu splits the blood pool from the rest, half of it cuts tissue
    kept, outside = coverage(body_mask(image), body)
    assert kept >= 0.95 and outside <= 0.01
    assert estimate_background(image).rule == "noise"


def test_cardiac_phantom_in_3d_and_through_the_labeler():
    volume = np.stack([cardiac(seed, noise=0.015)[0] for seed in range(4)])
    body = cardiac(0)[1]
    for mode in ("2d", "3d"):
        mask = SuperpixelPseudolabeler(mode=mode).body_mask(volume)
        kept, outside = coverage(mask, np.broadcast_to(body, volume.shape))
        assert kept >= 0.95 and outside <= 0.01, mode


@pytest.mark.parametrize(
    ("name", "transform", "rule"),
    [
        ("HU", lambda hu: hu, "noise"),
        ("HU clipped at -1024", lambda hu: np.maximum(hu, -1024), "noise"),
        ("windowed W400 L40", lambda hu: window(hu, 40, 400), "clipped"),
        ("windowed W350 L50", lambda hu: window(hu, 50, 350), "clipped"),
        ("windowed W2000 L0", lambda hu: window(hu, 0, 2000), "noise"),
    ],
)
def test_ct_phantom(name, transform, rule):
    hu, body, table = ct_hu()
    image = transform(hu)
    mask = body_mask(image)
    kept, outside = coverage(mask, body)
    assert kept >= 0.95 and outside <= 0.01, name
    assert not mask[table].any(), name  # the table is not the largest component
    assert estimate_background(image).rule == rule, name


def test_ct_padding_outside_the_reconstruction_circle_is_not_the_background():
    hu, body, _ = ct_hu()
    yy, xx = np.mgrid[:128, :128]
    hu[(yy - 64) ** 2 + (xx - 64) ** 2 > 62**2] = -3024.0  # air stays inside the circle
    kept, outside = coverage(body_mask(hu), body)
    assert kept >= 0.95 and outside <= 0.01


def test_zero_padded_mri_uses_the_noise_not_the_zeros():
    image, body = cardiac(0)
    image[:16] = image[-16:] = 0.0  # zero-filled rows: a spike at the minimum, noise above it
    assert estimate_background(image).rule == "noise"
    kept, outside = coverage(body_mask(image), body)
    assert kept >= 0.95 and outside <= 0.01


def test_integer_scans_bin_cleanly():
    image, body = cardiac(1)
    for dtype in (np.uint16, np.int32):
        kept, outside = coverage(body_mask(np.round(image).astype(dtype)), body)
        assert kept >= 0.95 and outside <= 0.01


def test_explicit_threshold_is_used_as_given():
    image, body = cardiac(0)
    np.testing.assert_array_equal(
        SuperpixelPseudolabeler(body_threshold=500).body_mask(image),
        body_mask(image, threshold=500),
    )
    assert not body_mask(image, threshold=image.max()).any()


# ---------------------------------------------------------------------------------------------
# invariants


phantoms = st.builds(
    lambda kind, seed, noise: (
        cardiac(seed, size=96, noise=noise)
        if kind == "mri"
        else (ct_hu(seed, size=96)[:2] if kind == "ct" else (window(ct_hu(seed, 96)[0], 40, 400),
                                                               ct_hu(seed, 96)[1]))
    ),
    st.sampled_from(["mri", "ct", "windowed"]),
    st.integers(0, 2**16),
    st.floats(0.005, 0.02),
)  # fmt: skip


@FAST
@given(
    seed=st.integers(0, 2**16),
    noise=st.floats(0.005, 0.02),
    scale=st.floats(-3, 3),
    offset=st.floats(-1000, 1000),
)
def test_mri_mask_is_invariant_to_an_affine_intensity_change(seed, noise, scale, offset):
    image, _ = cardiac(seed, size=96, noise=noise)
    mask = body_mask(image)
    moved = body_mask(10.0**scale * image + offset)
    assert np.mean(mask != moved) <= 0.002  # equal up to floating-point rounding at bin edges


@FAST
@given(phantom=phantoms)
def test_the_mask_never_takes_the_background_border(phantom):
    image, body = phantom
    mask = body_mask(image)
    frame = np.ones(image.shape, bool)
    frame[3:-3, 3:-3] = False  # the phantoms' bodies keep away from the border
    assert not body[frame].any()
    assert not mask[frame].any()
    assert mask[body].mean() >= 0.95


@FAST
@given(
    kind=st.sampled_from(["gaussian", "rayleigh", "uniform", "integer"]),
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(48, 48), (64, 40), (3, 32, 32)]),
)
def test_an_image_without_a_body_gives_an_empty_mask(kind, seed, shape):
    rng = np.random.default_rng(seed)
    image = {
        "gaussian": lambda: rng.normal(100, 30, shape),
        "rayleigh": lambda: np.hypot(rng.normal(0, 5, shape), rng.normal(0, 5, shape)),
        "uniform": lambda: rng.random(shape),
        "integer": lambda: rng.integers(0, 40, shape).astype(float),
    }[kind]()
    assert estimate_background(image).rule == "no body"
    assert not body_mask(image).any()


def test_a_noise_volume_gets_a_warning_naming_it():
    noise = np.random.default_rng(0).normal(100, 30, (3, 32, 32))
    with pytest.warns(
        UserWarning, match=r"noise\.nii\.gz \(3, 32, 32\): the body mask covers 0\.0 %"
    ):
        (labels,), (report,) = SuperpixelPseudolabeler().label_many(
            [noise], progress=False, names=["noise.nii.gz"], return_reports=True
        )
    assert not labels.any() and report.body_fraction == 0 and report.empty_slices == 3


# ---------------------------------------------------------------------------------------------
# the coverage report


def test_non_air_is_the_tissue_without_specks():
    image, body = cardiac(0)
    non_air = non_air_mask(image, estimate_background(image))
    assert non_air[body].mean() >= 0.95 and non_air[~body].mean() <= 0.005
    assert not non_air_mask(image, None).any()


def test_report_of_a_good_mask_has_no_warning():
    volume = np.stack([cardiac(seed)[0] for seed in range(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        _, (report,) = SuperpixelPseudolabeler().label_many(
            [volume], progress=False, return_reports=True, names=["heart"]
        )
    body = cardiac(0)[1]
    assert report.name == "heart" and report.shape == volume.shape
    assert report.body_fraction == pytest.approx(body.mean(), abs=0.01)
    assert report.non_air_kept >= 0.99 and report.empty_slices == 0
    assert report.superpixels_per_slice >= 3
    assert report.warning() is None and str(report).startswith("heart: body ")


def test_a_threshold_that_drops_the_tissue_is_reported():
    volume = np.stack([cardiac(seed)[0] for seed in range(2)])  # mid tissue ~110-250, blood 1000
    labeler = SuperpixelPseudolabeler(body_threshold=300)  # as the previous rule did
    with pytest.warns(UserWarning) as caught:
        (labels,), (report,) = labeler.label_many(
            [volume], progress=False, return_reports=True, names=["cine_sa.nii.gz"]
        )
    [message] = [str(w.message) for w in caught]
    assert message.startswith("cine_sa.nii.gz (2, 128, 128): the body mask keeps ")
    assert "body_threshold" in message and "\n" not in message
    assert report.non_air_kept < 0.5
    assert report.body_fraction == pytest.approx(np.count_nonzero(labels) / labels.size)


def test_measure_counts_usable_superpixels_per_slice():
    labels = np.zeros((3, 20, 20), np.int32)
    labels[0, :10], labels[0, 10:] = 1, 2  # two of 200 pixels
    labels[1, :5] = 1  # one of 100
    labels[1, 5:6] = 2  # 20 pixels: not usable
    report = BodyCoverage.measure(labels, n_non_air=0, n_kept=0, name="x")
    assert report.superpixels_per_slice == 1.5 and report.empty_slices == 1
    assert np.isnan(report.non_air_kept) and report.warning() is None
    assert "non-air kept -" in str(report)


@pytest.mark.parametrize(
    ("body", "kept", "expected"),
    [
        (0.4, 0.95, None),
        (0.4, 0.5, "keeps 50.0 % of the non-air voxels"),
        (0.01, 1.0, "covers 1.0 % of the field of view"),
        (0.0, float("nan"), "covers 0.0 % of the field of view"),
    ],
)
def test_warning_says_what_and_what_to_do(body, kept, expected):
    message = BodyCoverage("scan", (4, 8, 8), body, kept, 10.0, 0).warning()
    if expected is None:
        assert message is None
    else:
        assert message.startswith("scan (4, 8, 8): ") and expected in message
        assert "body_threshold=" in message


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.data
@pytest.mark.parametrize("scan", [1, 36])  # 36: the previous rule kept 58 % of an organ
def test_chaos_organs_stay_inside_the_body(chaos_dir, scan):
    nib = pytest.importorskip("nibabel")
    image = np.moveaxis(np.asarray(nib.load(chaos_dir / f"image_{scan}.nii.gz").dataobj), 2, 0)
    truth = np.moveaxis(np.asarray(nib.load(chaos_dir / f"label_{scan}.nii.gz").dataobj), 2, 0)
    for mode in ("2d", "3d"):
        mask = SuperpixelPseudolabeler(mode=mode).body_mask(image)
        for organ in (1, 2, 3, 4):
            assert mask[truth == organ].mean() >= 0.99, (mode, organ)
