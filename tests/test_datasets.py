"""Tests for fewshotseg.datasets: folder loaders, the image_N / label_N layout, class maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fewshotseg import datasets as ds
from fewshotseg import io as fio

nib = pytest.importorskip("nibabel")


def _write(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 5.0, 1.0])), str(path))


def _case_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j, k) = (6, 5, n + 2) image whose value encodes the case, and a label map."""
    image = np.full((6, 5, n + 2), float(n), np.float32)
    label = np.zeros((6, 5, n + 2), np.float64)  # float on disk, like the CHAOS labels
    label[1:3, 1:3, 0] = 1
    label[4, 4, -1] = 4
    return image, label


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    for n in (10, 2, 1):
        image, label = _case_arrays(n)
        _write(tmp_path / f"image_{n}.nii.gz", image)
        _write(tmp_path / f"label_{n}.nii.gz", label)
    _write(tmp_path / "image_2.pseudo.nii.gz", np.zeros((6, 5, 4), np.int16))  # not a case
    (tmp_path / "README.md").write_text("not a scan")
    return tmp_path


def test_image_label_folder_sorted_by_numeric_id(layout: Path) -> None:
    cases = ds.load_image_label_folder(layout)
    assert [c.id for c in cases] == ["1", "2", "10"]
    for case in cases:
        n = int(case.id)
        assert case.image.shape == (n + 2, 6, 5)  # axis 2 moved first
        assert np.all(case.image.array == n)
        assert case.label.dtype == np.int32 and case.label.shape == case.image.shape
        assert case.label[0].sum() == 4 and case.label[-1, 4, 4] == 4
        assert set(np.unique(case.label)) == {0, 1, 4}
        assert case.image.spacing == (5.0, 1.5, 1.5)


def test_ids_choose_and_order_the_cases(layout: Path) -> None:
    assert [c.id for c in ds.load_image_label_folder(layout, ids=[10, "1"])] == ["10", "1"]
    with pytest.raises(FileNotFoundError, match=r"\['3'\]"):
        ds.load_image_label_folder(layout, ids=[3])
    with pytest.raises(ValueError, match="duplicates"):
        ds.load_image_label_folder(layout, ids=[1, 1])


def test_axis_is_passed_to_images_and_labels(layout: Path) -> None:
    [case] = ds.load_image_label_folder(layout, ids=[1], axis=0)
    assert case.image.shape == (6, 5, 3) and case.label.shape == (6, 5, 3)
    assert case.label[1:3, 1:3, 0].sum() == 4


def test_missing_labels(layout: Path) -> None:
    (layout / "label_10.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="require_labels=False"):
        ds.load_image_label_folder(layout)
    cases = ds.load_image_label_folder(layout, require_labels=False)
    assert [c.label is None for c in cases] == [False, False, True]
    assert all(c.label is None for c in ds.load_image_label_folder(layout, labels=False))


def test_label_shape_must_match(layout: Path) -> None:
    _write(layout / "label_2.nii.gz", np.zeros((6, 5, 3)))
    with pytest.raises(ValueError, match="label_2.nii.gz has shape"):
        ds.load_image_label_folder(layout, ids=[2])


def test_load_folder_with_patterns(tmp_path: Path) -> None:
    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    images.mkdir()
    labels.mkdir()
    for name in ("case_007", "case_012"):
        image, label = _case_arrays(int(name[-3:]))
        _write(images / f"{name}_0000.nii.gz", image)
        _write(labels / f"{name}.nii.gz", label)
    cases = ds.load_folder(
        images, "case_*_0000.nii.gz", label_pattern="case_*.nii.gz", label_folder=labels
    )
    assert [c.id for c in cases] == ["007", "012"]
    assert all(c.label is not None for c in cases)
    files = ds.find_cases(images, "case_*_0000", label_pattern="case_*", label_folder=labels)
    assert [(f.image_path.name, f.label_path.name) for f in files] == [
        ("case_007_0000.nii.gz", "case_007.nii.gz"),
        ("case_012_0000.nii.gz", "case_012.nii.gz"),
    ]
    without = ds.load_folder(images, "*.nii.gz")
    assert [c.id for c in without] == ["case_007_0000", "case_012_0000"]
    assert all(c.label is None for c in without)


@pytest.mark.parametrize("suffix", [".nii.gz", ".npy"])
def test_derived_files_next_to_scans_are_not_scans(tmp_path: Path, suffix: str) -> None:
    """Pseudolabels and predictions written next to the scans must not become extra cases."""
    for name in ("scan_1", "scan_2"):
        image = np.zeros((3, 4, 5), np.float32)
        if suffix == ".npy":
            np.save(tmp_path / f"{name}.npy", image)
        else:
            _write(tmp_path / f"{name}{suffix}", image)
        for tag in ("superpixels", "prediction"):
            derived = fio.sibling_path(tmp_path / f"{name}{suffix}", tag)
            if suffix == ".npy":
                np.save(derived, image.astype(np.int32))
            else:
                _write(derived, image.astype(np.int32))
    for pattern in (f"*{suffix}", "*", "scan_*"):
        found = [c.image_path.name for c in ds.find_cases(tmp_path, pattern)]
        assert found == [f"scan_1{suffix}", f"scan_2{suffix}"], pattern
    # asking for the derived files by name still finds them
    pseudo = ds.find_cases(tmp_path, f"*.superpixels{suffix}")
    assert [c.image_path.name for c in pseudo] == [
        f"scan_1.superpixels{suffix}",
        f"scan_2.superpixels{suffix}",
    ]


def test_labels_in_the_same_folder_are_not_scans(tmp_path: Path) -> None:
    for name in ("a", "b"):
        image, label = _case_arrays(1)
        _write(tmp_path / f"{name}.nii.gz", image)
        _write(tmp_path / f"{name}_seg.nii.gz", label)
    cases = ds.find_cases(tmp_path, "*.nii.gz", label_pattern="*_seg.nii.gz")
    assert [(c.id, c.label_path.name) for c in cases] == [
        ("a", "a_seg.nii.gz"),
        ("b", "b_seg.nii.gz"),
    ]


def test_find_cases_errors(tmp_path: Path, layout: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ds.find_cases(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"exactly one '\*'"):
        ds.find_cases(layout, "image_1.nii.gz")
    with pytest.raises(ValueError, match=r"exactly one '\*'"):
        ds.find_cases(layout, "image_*", label_pattern="label_?_*")
    with pytest.raises(FileNotFoundError, match="no scans matching"):
        ds.find_cases(layout, "scan_*")
    np.save(layout / "image_1.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="two scans for case '1'"):
        ds.find_cases(layout, "image_*")
    with pytest.raises(FileNotFoundError):
        ds.load_image_label_folder(tmp_path / "nope")


def test_class_maps() -> None:
    assert dict(ds.CHAOS_T2SPIR.classes) == {
        1: "liver",
        2: "right kidney",
        3: "left kidney",
        4: "spleen",
    }
    assert list(ds.SYNAPSE_CT.classes) == list(range(1, 14))
    assert {k: ds.SYNAPSE_CT.classes[k] for k in ds.SYNAPSE_CT.evaluated_classes} == {
        1: "spleen",
        2: "right kidney",
        3: "left kidney",
        6: "liver",
    }
    assert dict(ds.MSCMRSEG_BSSFP.classes) == {
        200: "LV myocardium",
        500: "LV blood pool",
        600: "right ventricle",
    }
    assert set(ds.DATASETS) == {"chaos_t2spir", "synapse_ct", "mscmrseg_bssfp"}
    with pytest.raises(TypeError):
        ds.CHAOS_T2SPIR.classes[5] = "stomach"  # type: ignore[index]


def test_chaos_loader_rejects_foreign_labels(layout: Path) -> None:
    image, label = _case_arrays(3)
    label[0, 0, 0] = 7
    _write(layout / "image_3.nii.gz", image)
    _write(layout / "label_3.nii.gz", label)
    assert [c.id for c in ds.chaos_t2spir(layout, ids=[1, 2])] == ["1", "2"]
    with pytest.raises(ValueError, match=r"values \[7\]"):
        ds.chaos_t2spir(layout, ids=[3])


@pytest.mark.data
def test_real_chaos_t2spir(chaos_dir: Path) -> None:
    files = ds.find_cases(chaos_dir, "image_*", label_pattern="label_*")
    assert len(files) == 20
    [case] = ds.chaos_t2spir(chaos_dir, ids=[1])
    assert case.id == "1" and case.image.shape == (37, 256, 256)
    assert case.image.spacing == pytest.approx((7.7, 1.25, 1.25))
    values, counts = np.unique(case.label, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        0: 2224169,
        1: 153742,
        2: 18074,
        3: 17961,
        4: 10886,
    }
    assert int((case.label.reshape(37, -1) > 0).any(axis=1).sum()) == 24
