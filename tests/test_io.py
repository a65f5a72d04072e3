"""Tests for fewshotseg.io: formats, axis convention, geometry round trips, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshotseg import io as fio

nib = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")

RNG = np.random.default_rng(0)


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique_affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = _rotation((0.1, -0.2, 0.3)) @ np.diag([0.8, 1.1, 3.0])
    affine[:3, 3] = [-12.5, 30.0, 7.25]
    return affine


@pytest.fixture
def nifti_file(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    data = RNG.normal(size=(5, 6, 7)).astype(np.float32)
    affine = _oblique_affine()
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path = tmp_path / "scan.nii.gz"
    nib.save(image, str(path))
    return path, data, affine


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_nifti_axis_convention(nifti_file, axis: int) -> None:
    path, data, affine = nifti_file
    vol = fio.load_volume(path, axis=axis)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, np.moveaxis(data, axis, 0))
    zooms = np.array([0.8, 1.1, 3.0])
    expected_spacing = [zooms[axis % 3]] + [z for i, z in enumerate(zooms) if i != axis % 3]
    np.testing.assert_allclose(vol.spacing, expected_spacing, rtol=1e-6)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    assert vol.axis == axis % 3 and vol.format == "nifti" and vol.path == path
    assert vol.original_shape == data.shape


def test_nibabel_and_simpleitk_give_the_same_volume(nifti_file) -> None:
    path, _, _ = nifti_file
    a = fio.load_volume(path, axis=1, backend="nibabel")
    b = fio.load_volume(path, axis=1, backend="simpleitk")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-5)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)


def test_simpleitk_geometry_is_converted_from_lps(tmp_path: Path) -> None:
    """An image written by SimpleITK gets the affine that nibabel reads from the same image."""
    array_zyx = RNG.integers(0, 100, size=(4, 5, 6)).astype(np.int16)
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection(tuple(_rotation((0.0, 0.1, 0.2)).ravel()))
    for suffix in (".mha", ".nrrd", ".nii.gz"):
        sitk.WriteImage(image, str(tmp_path / f"img{suffix}"))
    reference = fio.load_volume(tmp_path / "img.nii.gz", backend="nibabel")
    expected = np.eye(4)
    flip = np.diag([-1.0, -1.0, 1.0])
    expected[:3, :3] = flip @ _rotation((0.0, 0.1, 0.2)) @ np.diag([0.7, 0.9, 2.5])
    expected[:3, 3] = flip @ np.array([10.0, -20.0, 30.0])
    np.testing.assert_allclose(reference.affine, expected, atol=1e-4)
    for suffix in (".mha", ".nrrd"):
        vol = fio.load_volume(tmp_path / f"img{suffix}")
        np.testing.assert_array_equal(vol.array, reference.array)
        np.testing.assert_array_equal(vol.array, np.moveaxis(array_zyx.T, 2, 0))
        np.testing.assert_allclose(vol.affine, reference.affine, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz"])
@pytest.mark.parametrize("axis", [0, 2])
def test_save_like_round_trip_keeps_geometry(nifti_file, tmp_path: Path, suffix, axis) -> None:
    path, _, affine = nifti_file
    source = fio.load_volume(path, axis=axis)
    written = fio.save_volume(source.array * 2, tmp_path / f"out{suffix}", like=source)
    assert written.exists()
    back = fio.load_volume(written, axis=axis)
    np.testing.assert_array_equal(back.array, source.array * 2)
    np.testing.assert_allclose(back.spacing, source.spacing, rtol=1e-5)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd", ".npz", ".npy"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
def test_integer_label_maps_keep_their_dtype(nifti_file, tmp_path, suffix, dtype) -> None:
    source = fio.load_volume(nifti_file[0])
    labels = RNG.integers(0, 5, size=source.shape).astype(dtype)
    out = fio.save_volume(labels, tmp_path / f"lab{suffix}", like=source)
    if suffix.startswith(".nii"):
        assert nib.load(str(out)).get_data_dtype() == dtype
    elif suffix in (".mha", ".nrrd"):
        assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(out))).dtype == dtype
    else:
        raw = np.load(out)
        raw = raw["array"] if suffix == ".npz" else raw
        assert raw.dtype == dtype
    loaded = fio.load_label_map(out, axis=source.axis)
    assert loaded.dtype == np.int32
    np.testing.assert_array_equal(loaded, labels)


def test_bool_masks_are_written_as_uint8(tmp_path: Path) -> None:
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 1, 1] = True
    out = fio.save_volume(mask, tmp_path / "m.nii.gz")
    assert nib.load(str(out)).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(fio.load_label_map(out), mask.astype(np.int32))


def _write_dicom_series(folder: Path, array_zyx: np.ndarray, spacing, origin) -> None:
    folder.mkdir()
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    series_tags = [
        ("0008|0060", "MR"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"),
        ("0020|000e", "1.2.826.0.1.3680043.2.1125.1.2"),
        ("0020|0037", "\\".join(str(v) for v in direction[0:3] + direction[3:6])),
        ("0008|103e", "fewshotseg test series"),
    ]
    for z in range(image.GetDepth()):
        piece = image[:, :, z]
        for tag, value in series_tags:
            piece.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        piece.SetMetaData("0020|0032", "\\".join(str(v) for v in position))
        piece.SetMetaData("0020|0013", str(z + 1))
        piece.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{z + 1}")
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(piece)


def test_dicom_series_round_trip(tmp_path: Path) -> None:
    array_zyx = RNG.integers(0, 1000, size=(6, 10, 12)).astype(np.int16)
    spacing, origin = (0.75, 0.8, 3.0), (-50.0, 20.0, 100.0)
    _write_dicom_series(tmp_path / "series", array_zyx, spacing, origin)
    vol = fio.load_volume(tmp_path / "series", axis=2)
    assert vol.format == "dicom"
    assert vol.shape == (6, 12, 10)  # (k, i, j) = (z, x, y)
    np.testing.assert_array_equal(vol.array, np.moveaxis(array_zyx.T, 2, 0))
    np.testing.assert_allclose(vol.spacing, (3.0, 0.75, 0.8), rtol=1e-5)
    expected = np.diag([-0.75, -0.8, 3.0, 1.0])
    expected[:3, 3] = [50.0, -20.0, 100.0]
    np.testing.assert_allclose(vol.affine, expected, atol=1e-4)
    # a label written like the DICOM volume lands on the same world grid
    out = fio.save_volume((vol.array > 500).astype(np.uint8), tmp_path / "lab.nii.gz", like=vol)
    np.testing.assert_allclose(nib.load(str(out)).affine, expected, atol=1e-4)


def test_folder_without_dicom_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM series"):
        fio.load_volume(tmp_path / "empty")


def test_npy_and_npz(tmp_path: Path) -> None:
    data = RNG.normal(size=(3, 4, 5))
    np.save(tmp_path / "a.npy", data)
    vol = fio.load_volume(tmp_path / "a.npy", axis=0)
    np.testing.assert_allclose(vol.array, data.astype(np.float32))
    assert vol.affine is None and vol.spacing == (1.0, 1.0, 1.0) and vol.format == "npy"
    affine = _oblique_affine()
    np.savez(tmp_path / "b.npz", array=data, spacing=[0.5, 0.6, 0.7], affine=affine)
    vol = fio.load_volume(tmp_path / "b.npz", axis=1)
    np.testing.assert_allclose(vol.array, np.moveaxis(data, 1, 0).astype(np.float32))
    assert vol.spacing == (0.6, 0.5, 0.7)
    np.testing.assert_array_equal(vol.affine, affine)
    out = fio.save_volume(vol.array, tmp_path / "c.npz", like=vol)
    with np.load(out) as raw:
        np.testing.assert_allclose(raw["spacing"], [0.5, 0.6, 0.7])
        np.testing.assert_allclose(raw["array"], data.astype(np.float32))
    np.savez(tmp_path / "bad.npz", image=data)
    with pytest.raises(ValueError, match="'array'"):
        fio.load_volume(tmp_path / "bad.npz")


def test_volume_without_affine_is_written_with_its_spacing(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((3, 4, 5)))
    vol = fio.load_volume(tmp_path / "a.npy")
    out = fio.save_volume(vol.array, tmp_path / "a.mha", spacing=(2.0, 3.0, 4.0), axis=0)
    back = fio.load_volume(out, axis=0)
    assert back.spacing == pytest.approx((2.0, 3.0, 4.0))
    nii = fio.save_volume(vol.array, tmp_path / "a.nii.gz", spacing=(2.0, 3.0, 4.0), axis=0)
    np.testing.assert_allclose(fio.load_volume(nii, axis=0).affine, back.affine, atol=1e-6)


def test_2d_and_trailing_singleton_images(tmp_path: Path) -> None:
    np.save(tmp_path / "slice.npy", np.ones((4, 5)))
    assert fio.load_volume(tmp_path / "slice.npy").shape == (1, 4, 5)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), tmp_path / "t.nii")
    assert fio.load_volume(tmp_path / "t.nii").shape == (6, 4, 5)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ValueError, match="3D"):
        fio.load_volume(tmp_path / "4d.nii")


def test_errors(tmp_path: Path, nifti_file) -> None:
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        fio.load_volume(tmp_path / "missing.nii.gz")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="suffix"):
        fio.load_volume(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="axis"):
        fio.load_volume(nifti_file[0], axis=3)
    with pytest.raises(TypeError, match="axis"):
        fio.load_volume(nifti_file[0], axis=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nibabel"):
        fio.load_volume(tmp_path, backend="nibabel")
    vol = fio.load_volume(nifti_file[0])
    with pytest.raises(ValueError, match="shape"):
        fio.save_volume(vol.array[1:], tmp_path / "x.nii.gz", like=vol)
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        fio.save_volume(vol.array[0], tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match="suffix"):
        fio.save_volume(vol.array, tmp_path / "x.png", like=vol)
    with pytest.raises(ValueError, match="either"):
        fio.save_volume(vol.array, tmp_path / "x.nii.gz", like=vol, axis=0)
    fio.save_volume(vol.array + 0.5, tmp_path / "frac.nii.gz", like=vol)
    with pytest.raises(ValueError, match="not a label map"):
        fio.load_label_map(tmp_path / "frac.nii.gz")


def test_to_label_map() -> None:
    assert fio.to_label_map(np.array([0.0, 2.0])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="whole numbers"):
        fio.to_label_map(np.array([0.5]))
    with pytest.raises(ValueError, match="NaN"):
        fio.to_label_map(np.array([np.nan]))


def test_one_label_map_rule_for_io_and_metrics() -> None:
    """One converter (issue 18.4): integer arrays come back as they are, bool and whole-number
    floats as int32, whatever name it is called by; negative labels are refused."""
    import torch

    from fewshotseg.metrics import as_label_map

    assert as_label_map is fio.to_label_map
    for dtype in (np.uint8, np.int16, np.int64):
        a = np.array([[0, 3]], dtype)
        assert fio.to_label_map(a) is a
    assert fio.to_label_map(np.array([True, False])).dtype == np.int32
    assert fio.to_label_map(np.array([1.0, 4.0], np.float32)).dtype == np.int32
    assert fio.to_label_map(torch.tensor([0, 2])).tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"pred has negative values \(down to -2\)"):
        fio.to_label_map(np.array([0, -2]), "pred")
    with pytest.raises(ValueError, match="scalar"):
        fio.to_label_map(np.array(1))


names = st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=12).filter(
    lambda s: s.strip(".") == s
)


@settings(max_examples=60, deadline=None)
@given(stem=names, suffix=st.sampled_from(sorted(fio.SUPPORTED_SUFFIXES) + [""]))
def test_split_suffix_and_sibling_path(stem: str, suffix: str) -> None:
    name = stem + suffix
    got_stem, got_suffix = fio.split_suffix(Path("some/folder") / name)
    assert got_stem + got_suffix == name
    if suffix:
        assert (got_stem, got_suffix) == (stem, suffix)
    sibling = fio.sibling_path(Path("some/folder") / name, "pseudo")
    assert sibling.parent == Path("some/folder")
    assert sibling.name == f"{got_stem}.pseudo{got_suffix or '.nii.gz'}"


def test_sibling_path_examples_and_errors() -> None:
    assert fio.sibling_path("d/image_3.nii.gz", "pseudo") == Path("d/image_3.pseudo.nii.gz")
    assert fio.sibling_path("d/image_3.NII.GZ", "pred", suffix=".png") == Path("d/image_3.pred.png")
    assert fio.sibling_path("d/patient1", "pseudo", folder="out") == Path(
        "out/patient1.pseudo.nii.gz"
    )
    for tag in ("", ".pseudo", "a/b"):
        with pytest.raises(ValueError, match="tag"):
            fio.sibling_path("a.nii", tag)
    with pytest.raises(ValueError, match="dot"):
        fio.sibling_path("a.nii", "x", suffix="png")


# ------------------------------------------------------------------- damaged files (issue 16)


def test_truncated_and_empty_files_name_the_file(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    full = fio.save_volume(np.random.default_rng(0).random((4, 20, 20)), tmp_path / "a.nii.gz")
    data = full.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz.*a complete NIfTI image.*truncated"):
        fio.load_volume(cut)
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty\.nii\.gz.* is empty \(0 bytes\)"):
        fio.load_volume(empty)
    npz = fio.save_volume(np.zeros((2, 3, 4)), tmp_path / "b.npz")
    (tmp_path / "cut.npz").write_bytes(npz.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cut\.npz.*numpy \.npz file"):
        fio.load_volume(tmp_path / "cut.npz")


def test_load_label_map_rejects_negative_labels(tmp_path: Path) -> None:
    labels = np.zeros((3, 4, 5))
    labels[1, 2, 3] = -1
    np.save(tmp_path / "neg.npy", labels)
    with pytest.raises(ValueError, match=r"neg\.npy.*negative values \(down to -1\)"):
        fio.load_label_map(tmp_path / "neg.npy")
    np.save(tmp_path / "ok.npy", np.abs(labels))
    assert fio.load_label_map(tmp_path / "ok.npy").min() == 0
