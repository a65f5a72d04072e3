"""Folders of scans and labels, and the class maps of the paper's three datasets.

Two ways to read a folder:

- :func:`load_folder` (or :func:`find_cases` for the paths only): scans matched by a glob
  pattern with exactly one ``*``; the text that ``*`` matched is the case id, and the label of
  case ``id`` is ``label_pattern`` with ``*`` replaced by ``id``
  (``"case_*_0000.nii.gz"`` + ``"case_*.nii.gz"`` reads nnU-Net-style folders).
- :func:`load_image_label_folder`: the ``image_N`` / ``label_N`` layout shared by the paper's
  preprocessed datasets (any supported suffix, N an integer), and :func:`chaos_t2spir` for the
  CHAOS T2-SPIR folder.

Loading is eager: every call reads all requested scans into memory (a CHAOS case is about 10 MB
as float32). Use ``ids=`` to read a subset, or :func:`find_cases` to get the paths and read them
yourself when memory is tight. Cases come sorted by id in natural order (``2`` before ``10``).

The class maps are in :data:`CHAOS_T2SPIR`, :data:`SYNAPSE_CT` and :data:`MSCMRSEG_BSSFP`
(and :data:`DATASETS` by name); the CHAOS patients, organ column names and the paper's
setting-2 organ groups in :data:`CHAOS_PATIENT_IDS`, :data:`CHAOS_CLASSES` and
:data:`SETTING2_GROUPS`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fewshotseg import io as fio

__all__ = [
    "CHAOS_CLASSES",
    "CHAOS_PATIENT_IDS",
    "CHAOS_T2SPIR",
    "DATASETS",
    "MSCMRSEG_BSSFP",
    "SETTING2_GROUPS",
    "SYNAPSE_CT",
    "Case",
    "CaseFiles",
    "DatasetInfo",
    "chaos_t2spir",
    "find_cases",
    "load_folder",
    "load_image_label_folder",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# class maps


@dataclass(frozen=True)
class DatasetInfo:
    """What the paper's datasets hold.

    Attributes:
        name: short name, the key in :data:`DATASETS`.
        modality: imaging modality in words.
        classes: label value -> organ name, every foreground class in the labels (read-only).
        evaluated_classes: the label values the paper reports Dice for.
        axis: the NIfTI axis to slice along (the paper segments axial / short-axis slices).

    Example:
        >>> CHAOS_T2SPIR.classes[1], SYNAPSE_CT.classes[6], MSCMRSEG_BSSFP.classes[600]
        ('liver', 'liver', 'right ventricle')
    """

    name: str
    modality: str
    classes: Mapping[int, str]
    evaluated_classes: tuple[int, ...]
    axis: int = 2


#: CHAOS T2-SPIR abdominal MRI (the paper's "Abd-MRI"), 20 labeled scans.
CHAOS_T2SPIR = DatasetInfo(
    name="chaos_t2spir",
    modality="MRI (T2-SPIR)",
    classes=MappingProxyType({1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen"}),
    evaluated_classes=(1, 2, 3, 4),
)

#: Synapse / BTCV multi-organ abdominal CT (the paper's "Abd-CT"), 13 classes; the paper
#: evaluates spleen, both kidneys and liver.
SYNAPSE_CT = DatasetInfo(
    name="synapse_ct",
    modality="CT",
    classes=MappingProxyType(
        {
            1: "spleen",
            2: "right kidney",
            3: "left kidney",
            4: "gallbladder",
            5: "esophagus",
            6: "liver",
            7: "stomach",
            8: "aorta",
            9: "inferior vena cava",
            10: "portal vein and splenic vein",
            11: "pancreas",
            12: "right adrenal gland",
            13: "left adrenal gland",
        }
    ),
    evaluated_classes=(1, 2, 3, 6),
)

#: MS-CMRSeg bSSFP cardiac MRI (the paper's "Card-MRI"), label values as released.
MSCMRSEG_BSSFP = DatasetInfo(
    name="mscmrseg_bssfp",
    modality="MRI (bSSFP, cardiac)",
    classes=MappingProxyType({200: "LV myocardium", 500: "LV blood pool", 600: "right ventricle"}),
    evaluated_classes=(200, 500, 600),
)

#: The three datasets by name.
DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {info.name: info for info in (CHAOS_T2SPIR, SYNAPSE_CT, MSCMRSEG_BSSFP)}
)

#: CHAOS label values and organ names as result-table column names (``right_kidney``): the
#: names of :data:`CHAOS_T2SPIR` with underscores for spaces.
CHAOS_CLASSES: dict[int, str] = {
    value: name.replace(" ", "_") for value, name in CHAOS_T2SPIR.classes.items()
}
#: The 20 labeled CHAOS T2-SPIR patients.
CHAOS_PATIENT_IDS: tuple[int, ...] = (
    1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39,
)  # fmt: skip
#: The paper's setting-2 groups of CHAOS classes: upper abdomen (liver, spleen) and lower
#: (right and left kidney).
SETTING2_GROUPS: dict[str, tuple[int, ...]] = {"upper": (1, 4), "lower": (2, 3)}


# --------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's files are (nothing read yet).

    Attributes:
        id: the case id (the text the pattern's ``*`` matched), e.g. ``"1"``.
        image_path: scan file or DICOM folder.
        label_path: label file, or ``None`` when the case has no label.

    Example:
        >>> CaseFiles("7", Path("image_7.nii.gz"), None).label_path is None
        True
    """

    id: str
    image_path: Path
    label_path: Path | None


@dataclass(frozen=True, eq=False)
class Case:
    """One scan and its optional label map: the record fewshotseg uses for "a scan and its
    labels" (the folder loaders here and `fewshotseg.demo` return it).

    The scan's geometry (spacing, affine, the file it came from) is its `fewshotseg.io.Volume`;
    the label map lies on the same voxel grid, which is checked when the record is made.

    Attributes:
        id: the case id, e.g. ``"1"`` for ``image_1.nii.gz``.
        image: the scan, ``image.array`` is ``(D, H, W)`` float32, ``image.spacing`` in mm.
        label: ``(D, H, W)`` integer label map (int32 from the loaders) with the image's shape,
            or ``None``.

    Raises:
        TypeError: ``image`` is not a `fewshotseg.io.Volume`.
        ValueError: ``label`` has another shape than the image.

    Example:
        >>> from fewshotseg.io import Volume
        >>> vol = Volume(np.zeros((1, 2, 2), np.float32), (1.0, 1.0, 1.0), None, 2, None, "npy")
        >>> Case("1", vol, None).id, Case("1", vol, np.zeros((1, 2, 2), np.int32)).image.shape
        ('1', (1, 2, 2))
        >>> Case("1", vol, np.zeros((2, 2, 2), np.int32))
        Traceback (most recent call last):
        ...
        ValueError: case '1': label shape (2, 2, 2) != image shape (1, 2, 2); ...
    """

    id: str
    image: fio.Volume
    label: np.ndarray | None

    def __post_init__(self) -> None:
        if not isinstance(self.image, fio.Volume):
            raise TypeError(
                f"case {self.id!r}: image must be a fewshotseg.io.Volume (array and geometry), "
                f"got {type(self.image).__name__}; wrap an array as "
                "Volume(array, spacing, None, 2, None, 'npy')"
            )
        if self.label is not None and tuple(self.label.shape) != self.image.shape:
            raise ValueError(
                f"case {self.id!r}: label shape {tuple(self.label.shape)} != image shape "
                f"{self.image.shape}; labels must be on the scan's voxel grid"
            )


def _natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order (``"2"`` before ``"10"``): the one order of case ids and file names,
    used by the loaders here, `fewshotseg.folds` and the command line's globs."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part
    )


def _strip_volume_suffix(text: str) -> tuple[str, bool]:
    lower = text.lower()
    for suffix in sorted(fio.SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return text[: -len(suffix)], True
    return text, False


def _check_pattern(pattern: str, name: str) -> tuple[str, str]:
    if not isinstance(pattern, str):
        raise TypeError(f"{name} must be a str like 'image_*.nii.gz', got {type(pattern).__name__}")
    if pattern.count("*") != 1 or any(c in pattern for c in "?[]/\\"):
        raise ValueError(
            f"{name} must be a file name with exactly one '*' (which matches the case id) and no "
            f"other wildcards or folders, like 'image_*.nii.gz'; got {pattern!r}"
        )
    prefix, tail = pattern.split("*")
    return prefix, tail


def _readable(path: Path) -> bool:
    return path.is_dir() or fio.split_suffix(path)[1] != ""


def find_cases(
    folder: str | os.PathLike,
    pattern: str = "*.nii.gz",
    *,
    label_pattern: str | None = None,
    label_folder: str | os.PathLike | None = None,
    ids: Iterable[int | str] | None = None,
    require_labels: bool = True,
) -> list[CaseFiles]:
    """Pair scans and labels in a folder by a glob pattern, without reading them.

    ``pattern`` and ``label_pattern`` each hold one ``*``; what it matches in a scan's name
    (volume suffix excluded when the pattern has none) is the case id, and the case's label is
    the file named ``label_pattern`` with ``*`` replaced by the id (any supported suffix when
    ``label_pattern`` has none). Files that are another case's label are not scans themselves,
    so one folder may hold both. Files without a supported suffix are ignored, and so are the
    files this library derives from scans (``image_1.superpixels.nii.gz``,
    ``image_1.prediction.nii.gz``; see `fewshotseg.io.DERIVED_TAGS`); sub-folders count as
    DICOM series.

    Args:
        folder: the folder holding the scans.
        pattern: file name pattern of the scans, e.g. ``"image_*.nii.gz"`` or ``"image_*"``.
        label_pattern: file name pattern of the labels, e.g. ``"label_*"``; ``None`` for none.
        label_folder: where the labels are; default ``folder``.
        ids: only these case ids, in this order (default: all, in natural order).
        require_labels: with a ``label_pattern``, whether every case must have its label
            (``False``: cases without one get ``label_path=None``).

    Returns:
        One :class:`CaseFiles` per case.

    Raises:
        FileNotFoundError: if a folder is missing, nothing matches, a requested id is not there,
            or a required label is missing.
        ValueError: for a bad pattern, duplicate ids, or two files for one id.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name in ["image_2.npy", "image_10.npy", "label_2.npy", "label_10.npy"]:
        ...     np.save(d / name, np.zeros((2, 2, 2)))
        >>> [(c.id, c.label_path.name) for c in find_cases(d, "image_*", label_pattern="label_*")]
        [('2', 'label_2.npy'), ('10', 'label_10.npy')]
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {str(root)!r}")
    prefix, tail = _check_pattern(pattern, "pattern")
    tail_stem, tail_has_suffix = _strip_volume_suffix(tail)

    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if not _readable(path):
            continue
        if tail_has_suffix:
            if not fnmatchcase(path.name, pattern):
                continue
            case_id = path.name[len(prefix) : len(path.name) - len(tail)]
        else:
            stem = fio.split_suffix(path)[0]
            if not fnmatchcase(stem, pattern):
                continue
            case_id = stem[len(prefix) : len(stem) - len(tail_stem)]
        if not case_id or any(case_id.endswith(f".{tag}") for tag in fio.DERIVED_TAGS):
            continue  # empty, or a file we derived from a scan (image_1.superpixels.nii.gz)
        if case_id in found:
            raise ValueError(
                f"two scans for case {case_id!r} in {str(root)!r}: {found[case_id].name} and "
                f"{path.name}; make the pattern more specific (add the suffix)"
            )
        found[case_id] = path

    label_paths: dict[str, Path | None] = {}
    if label_pattern is not None:
        _check_pattern(label_pattern, "label_pattern")
        label_root = root if label_folder is None else Path(label_folder)
        if not label_root.is_dir():
            raise FileNotFoundError(f"no such label folder: {str(label_root)!r}")
        by_stem: dict[str, list[Path]] = {}
        for path in label_root.iterdir():
            if _readable(path):
                by_stem.setdefault(fio.split_suffix(path)[0], []).append(path)
        for case_id in found:
            name = label_pattern.replace("*", case_id)
            if _strip_volume_suffix(name)[1]:
                candidates = [label_root / name] if (label_root / name).exists() else []
            else:
                candidates = sorted(by_stem.get(name, []))
            if len(candidates) > 1:
                raise ValueError(
                    f"several labels for case {case_id!r}: {[p.name for p in candidates]}; "
                    f"give label_pattern a suffix"
                )
            label_paths[case_id] = candidates[0] if candidates else None
        resolved_labels = {p.resolve() for p in label_paths.values() if p is not None}
        for case_id in [c for c, p in found.items() if p.resolve() in resolved_labels]:
            del found[case_id]
            del label_paths[case_id]

    if not found:
        raise FileNotFoundError(f"no scans matching {pattern!r} in {str(root)!r}")
    if ids is None:
        order = sorted(found, key=_natural_key)
    else:
        order = [str(i) for i in ids]
        if len(set(order)) != len(order):
            raise ValueError(f"ids has duplicates: {order}")
        missing = [i for i in order if i not in found]
        if missing:
            raise FileNotFoundError(
                f"no scans for ids {missing} in {str(root)!r} (pattern {pattern!r}); available: "
                f"{sorted(found, key=_natural_key)}"
            )
    cases = [CaseFiles(i, found[i], label_paths.get(i)) for i in order]
    if label_pattern is not None and require_labels:
        unlabeled = [c.id for c in cases if c.label_path is None]
        if unlabeled:
            raise FileNotFoundError(
                f"no label {label_pattern!r} for cases {unlabeled} in "
                f"{str(root if label_folder is None else label_folder)!r}; pass "
                f"require_labels=False to load them without labels"
            )
    return cases


def _load_case(files: CaseFiles, axis: int) -> Case:
    image = fio.load_volume(files.image_path, axis=axis)
    label = None
    if files.label_path is not None:
        label = fio.load_label_map(files.label_path, axis=axis)
        if label.shape != image.shape:
            raise ValueError(
                f"label {files.label_path.name} has shape {label.shape} but scan "
                f"{files.image_path.name} has {image.shape} (after moving axis {axis} first); "
                f"labels must be on the scan's voxel grid"
            )
    return Case(id=files.id, image=image, label=label)


def _load_all(files: list[CaseFiles], axis: int, progress: bool) -> list[Case]:
    iterator: Iterable[CaseFiles] = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="loading scans", unit="scan")
    return [_load_case(f, axis) for f in iterator]


def load_folder(
    folder: str | os.PathLike,
    pattern: str = "*.nii.gz",
    *,
    label_pattern: str | None = None,
    label_folder: str | os.PathLike | None = None,
    ids: Iterable[int | str] | None = None,
    require_labels: bool = True,
    axis: int = 2,
    progress: bool = False,
) -> list[Case]:
    """Load every scan (and label) of a folder that matches a pattern, eagerly.

    Matching and pairing are those of :func:`find_cases`; each scan is read with
    :func:`fewshotseg.io.load_volume` and each label with :func:`fewshotseg.io.load_label_map`,
    both with the same ``axis``.

    Args:
        folder: the folder holding the scans.
        pattern: scan file name pattern with one ``*`` (the case id).
        label_pattern: label file name pattern with one ``*``, or ``None`` for no labels.
        label_folder: where the labels are; default ``folder``.
        ids: only these case ids, in this order.
        require_labels: whether every scan must have a label when ``label_pattern`` is given.
        axis: the file axis to slice along (NIfTI order; 2 = axial for most scans).
        progress: show a tqdm progress bar.

    Returns:
        The cases; ``image.array`` is ``(D, H, W)`` float32, ``label`` int32 of the same shape.

    Raises:
        FileNotFoundError: see :func:`find_cases`.
        ValueError: see :func:`find_cases`; also a label whose shape differs from its scan's.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> np.save(d / "a_img.npy", np.zeros((4, 5, 3)))
        >>> np.save(d / "a_seg.npy", np.ones((4, 5, 3)))
        >>> [case] = load_folder(d, "*_img.npy", label_pattern="*_seg.npy")
        >>> case.id, case.image.shape, case.label.dtype
        ('a', (3, 4, 5), dtype('int32'))
    """
    files = find_cases(
        folder,
        pattern,
        label_pattern=label_pattern,
        label_folder=label_folder,
        ids=ids,
        require_labels=require_labels,
    )
    return _load_all(files, axis, progress)


def load_image_label_folder(
    folder: str | os.PathLike,
    ids: Iterable[int | str] | None = None,
    *,
    labels: bool = True,
    require_labels: bool = True,
    axis: int = 2,
    progress: bool = False,
) -> list[Case]:
    """Load a folder in the ``image_N`` / ``label_N`` layout (N an integer, any supported suffix).

    Other files (``image_3.pseudo.nii.gz``, ``README.md``) are ignored.

    Args:
        folder: the folder holding ``image_N.*`` and ``label_N.*``.
        ids: only these N (ints or strings), in this order; default all, sorted by N.
        labels: whether to read ``label_N`` files at all.
        require_labels: with ``labels``, whether every image must have its label
            (``False``: unlabeled images get ``label=None``).
        axis: the file axis to slice along (2 = axial for the paper's abdominal datasets).
        progress: show a tqdm progress bar.

    Returns:
        The cases, ids ``"1"``, ``"2"``, ...

    Raises:
        FileNotFoundError: if the folder, an id, or a required label is missing.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in (10, 2):
        ...     np.save(d / f"image_{n}.npy", np.zeros((4, 4, 2)))
        >>> [c.id for c in load_image_label_folder(d, labels=False)]
        ['2', '10']
    """
    wanted = None if ids is None else [str(i) for i in ids]
    files = find_cases(
        folder,
        "image_*",
        label_pattern="label_*" if labels else None,
        require_labels=False,
    )
    numeric = {f.id: f for f in files if f.id.isdigit()}
    for f in files:
        if not f.id.isdigit():
            logger.debug("ignoring %s: not image_N with an integer N", f.image_path)
    if not numeric:
        raise FileNotFoundError(f"no image_N files (N an integer) in {str(folder)!r}")
    if wanted is None:
        chosen = [numeric[i] for i in sorted(numeric, key=int)]
    else:
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"ids has duplicates: {wanted}")
        missing = [i for i in wanted if i not in numeric]
        if missing:
            raise FileNotFoundError(
                f"no image_N for ids {missing} in {str(folder)!r}; available: "
                f"{sorted(numeric, key=int)}"
            )
        chosen = [numeric[i] for i in wanted]
    if labels and require_labels:
        unlabeled = [f.id for f in chosen if f.label_path is None]
        if unlabeled:
            raise FileNotFoundError(
                f"no label_N for ids {unlabeled} in {str(folder)!r}; pass require_labels=False "
                f"to load them without labels, or labels=False"
            )
    return _load_all(chosen, axis, progress)


def chaos_t2spir(
    folder: str | os.PathLike,
    ids: Iterable[int | str] | None = None,
    *,
    labels: bool = True,
    progress: bool = False,
) -> list[Case]:
    """Load the CHAOS T2-SPIR folder (``image_N.nii.gz`` / ``label_N.nii.gz``), axial slices.

    Scans are sliced along NIfTI axis 2 (axial): ``image_1`` becomes ``(37, 256, 256)``.
    Intensities are raw; apply :func:`fewshotseg.preprocess.mri` before training. Label values
    are those of :data:`CHAOS_T2SPIR` (1 liver, 2 right kidney, 3 left kidney, 4 spleen).

    Args:
        folder: the dataset folder, e.g. ``shared/data/chaos_t2spir``.
        ids: patient numbers to load (default all 20, sorted).
        labels: whether to read the labels (every image must have one).
        progress: show a tqdm progress bar.

    Returns:
        The cases.

    Raises:
        FileNotFoundError: if the folder, an id or a label is missing.

    Example:
        >>> import tempfile, nibabel as nib
        >>> folder, lab = tempfile.mkdtemp(), np.zeros((8, 6, 3), np.uint8)
        >>> lab[2:5, 2:5, 1] = 4  # spleen on the middle axial slice
        >>> nib.save(nib.Nifti1Image(np.zeros((8, 6, 3), np.float32), np.eye(4)),
        ...          f"{folder}/image_1.nii.gz")
        >>> nib.save(nib.Nifti1Image(lab, np.eye(4)), f"{folder}/label_1.nii.gz")
        >>> (case,) = chaos_t2spir(folder)
        >>> case.id, case.image.array.shape, case.label.dtype, int(case.label.max())
        ('1', (3, 8, 6), dtype('int32'), 4)
    """
    cases = load_image_label_folder(
        folder, ids, labels=labels, axis=CHAOS_T2SPIR.axis, progress=progress
    )
    allowed = set(CHAOS_T2SPIR.classes) | {0}
    for case in cases:
        if case.label is not None:
            extra = set(np.unique(case.label).tolist()) - allowed
            if extra:
                raise ValueError(
                    f"label_{case.id} holds values {sorted(extra)} that are not CHAOS T2-SPIR "
                    f"classes {dict(CHAOS_T2SPIR.classes)}; is this the right folder?"
                )
    return cases
