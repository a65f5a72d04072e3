"""Tests for fewshotseg.superpixels: properties of the pseudolabels on synthetic and real scans."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from fewshotseg._regions import merge_small
from fewshotseg.superpixels import (
    SuperpixelPseudolabeler,
    load_pseudolabels,
    pseudolabel_path,
    save_pseudolabels,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def synthetic(shape: tuple[int, ...], seed: int, kind: str) -> np.ndarray:
    """A body-like blob with textured organs on a dark background, or plain noise."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.normal(100.0, 30.0, shape)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    image = (radius < 0.8) * 300.0
    for _ in range(3):  # a few "organs" of other intensities
        centre = rng.uniform(-0.5, 0.5, len(shape))
        r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)))
        image[r < rng.uniform(0.15, 0.4)] = rng.uniform(100, 900)
    return image + rng.normal(0, 10.0, shape)


images_2d = st.builds(
    synthetic,
    st.tuples(st.integers(6, 40), st.integers(6, 40)),
    st.integers(0, 2**31),
    st.sampled_from(["body", "noise"]),
)
images_3d = st.builds(
    synthetic,
    st.tuples(st.integers(3, 8), st.integers(6, 24), st.integers(6, 24)),
    st.integers(0, 2**31),
    st.sampled_from(["body", "noise"]),
)


def assert_valid_labels(labels: np.ndarray, body: np.ndarray, *, per_slice: bool) -> None:
    """int32, 0 exactly outside the body, ids 1..n without gaps, every id one 8/26 region."""
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels == 0, ~body)
    maps = list(labels) if per_slice and labels.ndim == 3 else [labels]
    for lab in maps:
        ids = np.unique(lab[lab > 0])
        np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
        structure = np.ones((3,) * lab.ndim, bool)
        for box_id, box in enumerate(ndi.find_objects(lab), start=1):
            assert box is not None, f"id {box_id} missing"
            assert ndi.label(lab[box] == box_id, structure=structure)[1] == 1, f"id {box_id}"


# ---------------------------------------------------------------------------------------------
# properties


@FAST
@given(image=images_2d, min_size=st.integers(1, 60), min_area=st.integers(0, 60))
def test_2d_properties(image, min_size, min_area):
    labeler = SuperpixelPseudolabeler(min_size=min_size, min_area=min_area)
    labels = labeler(image)
    body = labeler.body_mask(image)
    assert_valid_labels(labels, body, per_slice=True)
    # every piece reaches min_area unless it is the whole body
    sizes = np.bincount(labels.ravel())[1:]
    if len(sizes) > 1:
        assert sizes.min() >= min_area
    np.testing.assert_array_equal(labeler(image), labels)  # deterministic


@FAST
@given(image=images_3d, min_size=st.integers(5, 100))
def test_3d_properties(image, min_size):
    labeler = SuperpixelPseudolabeler(mode="3d", min_size=min_size)
    labels = labeler(image, spacing=(3.0, 1.0, 1.0))
    body = labeler.body_mask(image)
    assert_valid_labels(labels, body, per_slice=False)
    sizes = np.bincount(labels.ravel())[1:]
    if len(sizes) > 1:
        assert sizes.min() >= min_size  # min_area defaults to min_size
    np.testing.assert_array_equal(labeler(image, spacing=(3.0, 1.0, 1.0)), labels)


@FAST
@given(image=images_3d)
def test_2d_volume_equals_per_slice_calls(image):
    labeler = SuperpixelPseudolabeler(min_size=20)
    labels = labeler(image)
    for z in range(image.shape[0]):
        np.testing.assert_array_equal(labels[z], labeler(image[z]))
    np.testing.assert_array_equal(labeler.body_mask(image)[1], labeler.body_mask(image[1]))


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(st.integers(2, 4), st.integers(8, 32), st.integers(8, 32)),
    seed=st.integers(0, 2**31),
    mode=st.sampled_from(["2d", "3d"]),
)
def test_uint16_equals_float32(shape, seed, mode):
    image = np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)
    labeler = SuperpixelPseudolabeler(mode=mode, min_size=20)
    spacing = (2.0, 1.0, 1.0)
    expected = labeler(image, spacing=spacing)
    np.testing.assert_array_equal(labeler(image.astype(np.float32), spacing=spacing), expected)
    np.testing.assert_array_equal(labeler(image.astype(np.int64), spacing=spacing), expected)


def test_torch_input_equals_numpy():
    image = synthetic((3, 32, 32), 0, "body").astype(np.float32)
    labeler = SuperpixelPseudolabeler(min_size=30)
    out = labeler(torch.from_numpy(image))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, labeler(image))


def test_superpixels_follow_a_strong_edge():
    # body of two halves with very different intensity: superpixels stay (almost) on one side
    rng = np.random.default_rng(0)
    image = np.zeros((64, 64))
    image[8:56, 8:32] = 200.0
    image[8:56, 32:56] = 800.0
    image += rng.normal(0, 5.0, image.shape)
    labels = SuperpixelPseudolabeler(min_size=100)(image)
    right = np.zeros(image.shape, bool)
    right[:, 32:] = True
    for i in range(1, labels.max() + 1):
        share = right[labels == i].mean()
        assert min(share, 1 - share) < 0.15, (i, share)


def test_min_area_merges_fragments_into_longest_border():
    labels = np.array(
        [
            [1, 1, 1, 2, 2],
            [1, 1, 3, 2, 2],
            [1, 1, 3, 2, 2],
            [1, 1, 1, 2, 2],
        ]
    )
    # fragment 3 (2 px) touches 1 on 7 neighbour pairs and 2 on 6: it joins 1
    merged = merge_small(labels, min_area=3)
    expected = np.where(labels == 3, 1, labels)
    np.testing.assert_array_equal(merged, expected)
    np.testing.assert_array_equal(merge_small(labels, min_area=2), labels)


def test_explicit_body_threshold_in_input_units():
    image = np.zeros((40, 40))
    image[5:35, 5:35] = 60.0  # body
    image[0:3, 0:3] = 60.0  # a smaller blob: not the largest component
    image[15:20, 15:20] = 10.0  # a dark hole inside the body: filled
    labeler = SuperpixelPseudolabeler(min_size=20, body_threshold=50)
    expected = np.zeros(image.shape, bool)
    expected[5:35, 5:35] = True
    np.testing.assert_array_equal(labeler.body_mask(image), expected)
    np.testing.assert_array_equal(labeler(image) > 0, expected)
    # above everything: no body
    assert not SuperpixelPseudolabeler(body_threshold=1e6)(image).any()


def test_3d_uses_spacing():
    image = synthetic((8, 32, 32), 3, "body")
    labeler = SuperpixelPseudolabeler(mode="3d", min_size=50)
    iso = labeler(image, spacing=(1.0, 1.0, 1.0))
    aniso = labeler(image, spacing=(6.0, 1.0, 1.0))
    assert not np.array_equal(iso, aniso)
    with pytest.warns(UserWarning, match="isotropic"):
        np.testing.assert_array_equal(labeler(image), iso)


# ---------------------------------------------------------------------------------------------
# label_many


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_label_many_matches_calls_for_any_worker_count(mode):
    volumes = [synthetic((5, 24, 24), 1, "body"), synthetic((3, 20, 28), 2, "body")]
    volumes.append((synthetic((16, 16), 3, "body") + 100).astype(np.uint16))  # a lone slice
    spacings = [(2.0, 1.0, 1.0), (2.0, 1.0, 1.0), (1.0, 1.0)]
    labeler = SuperpixelPseudolabeler(mode=mode, min_size=20)
    expected = [labeler(v, spacing=s) for v, s in zip(volumes, spacings, strict=True)]
    for workers in (1, 2):
        out = labeler.label_many(volumes, spacings=spacings, workers=workers, progress=False)
        assert len(out) == len(expected)
        for a, b in zip(out, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_label_many_checks_arguments():
    labeler = SuperpixelPseudolabeler()
    with pytest.raises(ValueError, match="spacing"):
        labeler.label_many([np.ones((2, 8, 8))], spacings=[None, None], progress=False)
    with pytest.raises(ValueError, match="workers"):
        labeler.label_many([np.ones((2, 8, 8))], workers=0, progress=False)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(bad):
    image = np.ones((8, 8))
    image[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        SuperpixelPseudolabeler()(image)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((2, 2, 8, 8)), ValueError, "4-D"),
        (np.zeros(8), ValueError, "1-D"),
        (np.zeros((0, 8)), ValueError, "non-empty"),
        ([[1.0, 2.0], [3.0, 4.0]], TypeError, "numpy array or torch tensor"),
        ("image.nii.gz", TypeError, "numpy array or torch tensor"),
        (np.zeros((8, 8), complex), TypeError, "real numbers"),
        (np.zeros((8, 8), bool), TypeError, "real numbers"),
    ],
)
def test_bad_inputs_raise(image, error, match):
    with pytest.raises(error, match=match):
        SuperpixelPseudolabeler()(image)


def test_constant_image_gives_zeros_and_a_warning():
    for mode in ("2d", "3d"):
        for image in (np.full((16, 16), 7.0), np.zeros((3, 16, 16), np.uint8)):
            with pytest.warns(UserWarning, match="single intensity value"):
                out = SuperpixelPseudolabeler(mode=mode)(image, spacing=(1.0,) * image.ndim)
            assert out.dtype == np.int32 and out.shape == image.shape and not out.any()
    # one constant slice in a volume: one warning, that slice is 0, the others are labeled
    volume = np.stack([synthetic((32, 32), seed, "body") for seed in range(3)])
    volume[1] = 0
    with pytest.warns(UserWarning, match="1 of the 3 slices"):
        out = SuperpixelPseudolabeler(min_size=20)(volume)
    assert not out[1].any() and out[0].any() and out[2].any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "4d"}, "mode"),
        ({"mode": "3d", "scale": 5.0}, "scale"),
        ({"compactness": 0.1}, "compactness"),
        ({"min_size": 0}, "min_size"),
        ({"min_area": -1}, "min_area"),
        ({"scale": -1.0}, "scale"),
        ({"sigma": -1.0}, "sigma"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SuperpixelPseudolabeler(**kwargs)


def test_bad_spacing_raises():
    with pytest.raises(ValueError, match="spacing"):
        SuperpixelPseudolabeler(mode="3d")(np.ones((2, 8, 8)), spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        SuperpixelPseudolabeler()(np.ones((8, 8)), spacing=(1.0, -1.0))


# ---------------------------------------------------------------------------------------------
# saving and loading next to the scan


@pytest.mark.parametrize("suffix", [".nii.gz", ".npz", ".nrrd"])
def test_save_and_load_next_to_the_scan(tmp_path, suffix):
    from fewshotseg.io import load_volume, save_volume

    scan_path = save_volume(
        synthetic((4, 24, 20), 5, "body").astype(np.float32),
        tmp_path / f"scan_1{suffix}",
        spacing=(5.0, 1.5, 1.25),
    )
    scan = load_volume(scan_path)
    labels = SuperpixelPseudolabeler(min_size=20)(scan.array)
    path = save_pseudolabels(labels, scan)
    want = ".nii.gz" if suffix == ".nii.gz" else ".npz"
    assert path == tmp_path / f"scan_1.superpixels{want}" == pseudolabel_path(scan)
    loaded = load_pseudolabels(scan)
    assert loaded.dtype == np.int32
    np.testing.assert_array_equal(loaded, labels)
    stored = load_volume(path)
    np.testing.assert_allclose(stored.spacing, scan.spacing)
    if scan.affine is None:
        assert stored.affine is None
    else:
        np.testing.assert_allclose(stored.affine, scan.affine)
    with pytest.raises(FileExistsError):
        save_pseudolabels(labels, scan, overwrite=False)
    with pytest.raises(ValueError, match="shape"):
        save_pseudolabels(labels[:2], scan)


def test_load_pseudolabels_missing_file(tmp_path):
    from fewshotseg.io import load_volume, save_volume

    scan = load_volume(save_volume(np.ones((2, 8, 8)), tmp_path / "a.nii.gz"))
    with pytest.raises(FileNotFoundError, match="save_pseudolabels"):
        load_pseudolabels(scan)


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.data
def test_chaos_volume(chaos_dir):
    nib = pytest.importorskip("nibabel")
    image = np.moveaxis(np.asarray(nib.load(chaos_dir / "image_1.nii.gz").dataobj), 2, 0)
    spacing = (7.7, 1.25, 1.25)
    labeler = SuperpixelPseudolabeler()
    constant = np.ptp(image.reshape(len(image), -1), axis=1) == 0  # this scan has an empty slice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = labeler(image)
    assert [str(w.message).split(":")[0] for w in caught] == (
        [f"{constant.sum()} of the {len(image)} slices of the image of shape {image.shape}"]
        if constant.any()
        else []
    )
    body = labeler.body_mask(image)
    assert_valid_labels(labels, body, per_slice=True)
    assert not labels[constant].any()
    assert body[~constant].mean() > 0.2  # the abdomen fills a good part of each slice
    counts = labels[~constant].reshape(int((~constant).sum()), -1).max(1)
    assert 10 <= counts.mean() <= 35  # the reference's granularity: ~20 per slice at 256 x 256
    sizes = [np.bincount(s.ravel())[1:] for s in labels]
    assert min(s.min() for s in sizes if len(s) > 1) >= 400
    # uint16 copy gives the same result
    np.testing.assert_array_equal(labeler(image[10:12].astype(np.uint16)), labels[10:12])

    labeler_3d = SuperpixelPseudolabeler(mode="3d")
    labels_3d = labeler_3d(image, spacing=spacing)
    assert_valid_labels(labels_3d, labeler_3d.body_mask(image), per_slice=False)
    assert 30 <= labels_3d.max() <= 300


def test_label_many_progress_bar(capsys):
    labeler = SuperpixelPseudolabeler(min_size=20)
    volume = synthetic((3, 16, 16), 0, "body")
    out = labeler.label_many([volume], workers=1, progress=True)
    np.testing.assert_array_equal(out[0], labeler(volume))
    assert "superpixels" in capsys.readouterr().err


def test_label_many_warns_once_per_volume_with_constant_slices():
    volume = synthetic((9, 24, 24), 0, "body")
    volume[[0, 5]] = 0.0  # two empty slices, in different chunks
    labeler = SuperpixelPseudolabeler(min_size=20)
    with pytest.warns(UserWarning) as record:
        out = labeler.label_many([volume[:3], volume], workers=2, progress=False)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith("1 of the 3 slices of volume 0")
    assert messages[1].startswith("2 of the 9 slices of volume 1")
    assert not out[1][[0, 5]].any()


def test_label_many_warnings_name_the_volume():
    blank = np.zeros((2, 16, 16), np.float32)
    noise = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)  # no body either
    with pytest.warns(UserWarning) as caught:
        SuperpixelPseudolabeler(min_size=4).label_many(
            [noise, blank], workers=1, progress=False, names=["image_3.nii.gz", "image_7.nii.gz"]
        )
    assert [str(w.message).split(":")[0] for w in caught] == [
        "image_3.nii.gz (2, 16, 16)",  # the body mask covers 0.0 % of the field of view
        "2 of the 2 slices of image_7.nii.gz (2, 16, 16)",  # a single intensity value
    ]
    with pytest.raises(ValueError, match="names"):
        SuperpixelPseudolabeler().label_many([noise], progress=False, names=["a", "b"])
