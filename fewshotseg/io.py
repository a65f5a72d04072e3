"""Volumes in and out: NIfTI, DICOM series, NRRD, MetaImage and numpy files.

Every reader returns a :class:`Volume` whose ``array`` is ``(D, H, W)`` float32 with the slicing
axis first: ``np.moveaxis(a, axis, 0)`` of the array in NIfTI ``(i, j, k)`` order, as nibabel reads
it. SimpleITK's ``GetArrayFromImage`` gives ``(z, y, x)`` arrays; they are transposed to
``(x, y, z)`` first, so both backends give the same array for the same file.

Geometry is kept as a nibabel-style 4 x 4 affine that maps the ORIGINAL file's voxel indices
``(i, j, k)`` to RAS+ world coordinates in mm. SimpleITK (ITK) describes images in LPS+
coordinates with ``origin``, ``direction`` and ``spacing``; they are converted with

.. code-block:: text

    affine[:3, :3] = F @ direction @ diag(spacing)      F = diag(-1, -1, 1)  (LPS -> RAS)
    affine[:3, 3]  = F @ origin

and back the same way when writing. A volume without an affine (from ``.npy``) is written as if
its affine were ``diag(spacing)``, whatever the format, so the world geometry agrees across formats.

nibabel and SimpleITK are optional dependencies (the ``io`` extra); they are imported only when
a format needs them: ``pip install "fewshotseg[io]"``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fewshotseg._checks import to_label_map

__all__ = [
    "DERIVED_TAGS",
    "PREDICTION_TAG",
    "PSEUDOLABEL_TAG",
    "SUPPORTED_SUFFIXES",
    "Volume",
    "load_label_map",
    "load_volume",
    "save_volume",
    "sibling_path",
    "split_suffix",
    "to_label_map",
]

PSEUDOLABEL_TAG = "superpixels"
"""`sibling_path` tag of the pseudolabel files ``fewshotseg pseudolabel`` writes."""
PREDICTION_TAG = "prediction"
"""`sibling_path` tag of the label files ``fewshotseg predict`` writes."""
DERIVED_TAGS = (PSEUDOLABEL_TAG, PREDICTION_TAG)
"""Tags of files this library derives from scans; scan patterns such as ``*.nii.gz`` skip them."""

logger = logging.getLogger(__name__)

#: File suffixes understood by :func:`load_volume` / :func:`save_volume`, mapped to the format
#: name stored in :attr:`Volume.format`. A folder is read as a DICOM series.
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".dcm": "dicom",
    ".npy": "npy",
    ".npz": "npz",
}
_WRITABLE = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".npy", ".npz")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_IO_EXTRA = 'pip install "fewshotseg[io]"'


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scan with its geometry.

    Attributes:
        array: ``(D, H, W)`` float32, ``np.moveaxis(a, axis, 0)`` of the array ``a`` in NIfTI
            ``(i, j, k)`` order. ``D`` is the slicing axis.
        spacing: voxel size in mm, in the same axis order as ``array``.
        affine: 4 x 4 float64 voxel -> world (RAS+, mm) matrix of the ORIGINAL file's ``(i, j, k)``
            axes (nibabel convention), or ``None`` when the file has no geometry (``.npy``).
        axis: which original axis (0, 1 or 2) became ``D``.
        path: the file or folder it was read from, or ``None``.
        format: ``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"``, ``"npy"`` or ``"npz"``.

    Volumes compare by identity (``eq=False``): arrays have no single truth value.

    Example:
        >>> import numpy as np
        >>> v = Volume(np.zeros((2, 3, 4), np.float32), (7.7, 1.25, 1.25), None, 2, None, "npy")
        >>> v.shape, v.original_shape, v.original_spacing
        ((2, 3, 4), (3, 4, 2), (1.25, 1.25, 7.7))
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray | None
    axis: int
    path: Path | None
    format: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``, the shape of :attr:`array`."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def original_shape(self) -> tuple[int, int, int]:
        """The shape in the file's ``(i, j, k)`` order."""
        return _to_original(self.array, self.axis).shape  # type: ignore[return-value]

    @property
    def original_spacing(self) -> tuple[float, float, float]:
        """:attr:`spacing` in the file's ``(i, j, k)`` order."""
        return _spacing_to_original(self.spacing, self.axis)


# --------------------------------------------------------------------------------------------
# paths


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """Split a file name into stem and volume suffix, handling double suffixes like ``.nii.gz``.

    Only the suffixes in :data:`SUPPORTED_SUFFIXES` count as suffixes (case-insensitive); a name
    without one (a DICOM folder, say) has suffix ``""``.

    Args:
        path: a file name or path; only its last component is used.

    Returns:
        ``(stem, suffix)`` with ``stem + suffix == name``.

    Example:
        >>> split_suffix("data/image_3.nii.gz")
        ('image_3', '.nii.gz')
        >>> split_suffix("scan.v2.mha"), split_suffix("patient_7")
        (('scan.v2', '.mha'), ('patient_7', ''))
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def sibling_path(
    path: str | os.PathLike,
    tag: str,
    *,
    suffix: str | None = None,
    folder: str | os.PathLike | None = None,
) -> Path:
    """A path next to ``path`` with ``.tag`` inserted before its volume suffix.

    Useful to name derived files: pseudolabels, predictions, overlays.

    Args:
        path: the source file (or DICOM folder).
        tag: inserted between stem and suffix, without dots at either end (``"pseudo"``).
        suffix: suffix of the new file, with its leading dot (``".png"``); defaults to the source's
            suffix, or ``".nii.gz"`` when the source has none (a DICOM folder).
        folder: where to put it; defaults to the source's folder.

    Returns:
        The new path (nothing is created).

    Raises:
        ValueError: if ``tag`` is empty, has a path separator or starts/ends with a dot, or
            ``suffix`` does not start with a dot.

    Example:
        >>> sibling_path("data/image_3.nii.gz", "pseudo").as_posix()
        'data/image_3.pseudo.nii.gz'
        >>> sibling_path("data/image_3.nii.gz", "overlay", suffix=".png", folder="out").as_posix()
        'out/image_3.overlay.png'
    """
    if not tag or tag.strip(".") != tag or "/" in tag or os.sep in tag:
        raise ValueError(
            f"tag must be a non-empty name without path separators or leading/trailing dots, "
            f"got {tag!r}; for example tag='pseudo'"
        )
    if suffix is not None and not suffix.startswith("."):
        raise ValueError(f"suffix must start with a dot, like '.nii.gz', got {suffix!r}")
    source = Path(path)
    stem, old_suffix = split_suffix(source)
    new_suffix = suffix if suffix is not None else (old_suffix or ".nii.gz")
    parent = Path(folder) if folder is not None else source.parent
    return parent / f"{stem}.{tag}{new_suffix}"


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "dicom"
    suffix = split_suffix(path)[1].lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot tell the format of {str(path)!r} from its suffix; expected a DICOM series "
            f"folder or one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return SUPPORTED_SUFFIXES[suffix]


# --------------------------------------------------------------------------------------------
# optional backends


def _import_nibabel() -> Any:
    try:
        import nibabel
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading and writing NIfTI files needs nibabel, from the 'io' extra: {_IO_EXTRA}"
        ) from err
    return nibabel


def _import_sitk() -> Any:
    try:
        import SimpleITK
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"reading and writing DICOM, NRRD and MetaImage files needs SimpleITK, from the "
            f"'io' extra: {_IO_EXTRA}"
        ) from err
    return SimpleITK


# --------------------------------------------------------------------------------------------
# axis and geometry helpers


def _check_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"axis must be an int in -3..2, got {type(axis).__name__}")
    if not -3 <= axis <= 2:
        raise ValueError(
            f"axis must be 0, 1 or 2 (the NIfTI axis to slice along; 2 = axial for most "
            f"scans), got {axis}"
        )
    return int(axis) % 3


def _to_original(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, 0, axis)


def _spacing_to_moved(spacing: tuple[float, ...], axis: int) -> tuple[float, float, float]:
    rest = [spacing[i] for i in range(3) if i != axis]
    return (float(spacing[axis]), float(rest[0]), float(rest[1]))


def _spacing_to_original(spacing: tuple[float, ...], axis: int) -> tuple[float, float, float]:
    out = list(spacing[1:])
    out.insert(axis, spacing[0])
    return (float(out[0]), float(out[1]), float(out[2]))


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton axes beyond the third; a 2D image becomes (i, j, 1)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3:
        raise ValueError(
            f"expected a 3D (or 2D) scalar image in {str(path)!r}, got an array of shape "
            f"{array.shape}; split multi-channel or time-series images into 3D volumes first"
        )
    return array


def _sitk_to_affine(image: Any) -> np.ndarray:
    dim = image.GetDimension()
    spacing = np.ones(3)
    origin = np.zeros(3)
    direction = np.eye(3)
    spacing[:dim] = image.GetSpacing()
    origin[:dim] = image.GetOrigin()
    direction[:dim, :dim] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _affine_to_sitk(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """4 x 4 RAS affine -> (spacing, origin, direction) in ITK's LPS convention."""
    linear = _LPS_TO_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"the affine has a zero column and no valid geometry:\n{affine}")
    direction = linear / spacing
    origin = _LPS_TO_RAS @ affine[:3, 3]
    return spacing.tolist(), origin.tolist(), direction.ravel().tolist()


def _default_affine(spacing_ijk: tuple[float, float, float]) -> np.ndarray:
    return np.diag([*spacing_ijk, 1.0])


# --------------------------------------------------------------------------------------------
# readers


def _read_nibabel(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    nib = _import_nibabel()
    image = nib.load(str(path))
    array = _as_3d(np.asarray(image.get_fdata(dtype=np.float32)), path)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    zooms = zooms + (1.0,) * (3 - len(zooms))
    return array, zooms, np.asarray(image.affine, dtype=np.float64)


def _sitk_array(image: Any, path: Path) -> np.ndarray:
    sitk = _import_sitk()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"expected a scalar (grayscale) image in {str(path)!r}, got "
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    if image.GetDimension() not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image in {str(path)!r}, got {image.GetDimension()}D")
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    return _as_3d(np.asarray(array).transpose(), path)  # (x, y, z) == nibabel's (i, j, k)


def _read_sitk_file(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    sitk = _import_sitk()
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ValueError(f"SimpleITK could not read {str(path)!r}: {err}") from err
    affine = _sitk_to_affine(image)
    spacing = tuple(float(s) for s in image.GetSpacing()) + (1.0,) * (3 - image.GetDimension())
    return _sitk_array(image, path), spacing, affine


def _read_dicom_series(
    folder: Path, series_id: str | None
) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    sitk = _import_sitk()
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise ValueError(
            f"no DICOM series found in folder {str(folder)!r}; point load_volume at a folder of "
            f"DICOM slices, or at a single file with a supported suffix"
        )
    if series_id is None:
        if len(ids) > 1:
            raise ValueError(
                f"folder {str(folder)!r} holds {len(ids)} DICOM series {ids}; choose one with "
                f"series_id=..."
            )
        series_id = ids[0]
    elif series_id not in ids:
        raise ValueError(f"series {series_id!r} is not in folder {str(folder)!r}; found {ids}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ValueError(
            f"SimpleITK could not read the DICOM series in {str(folder)!r}: {err}"
        ) from err
    logger.debug("read DICOM series %s (%d files) from %s", series_id, len(files), folder)
    spacing = tuple(float(s) for s in image.GetSpacing()) + (1.0,) * (3 - image.GetDimension())
    return _sitk_array(image, folder), spacing, _sitk_to_affine(image)


def _read_numpy(path: Path, fmt: str) -> tuple[np.ndarray, tuple[float, ...], np.ndarray | None]:
    if fmt == "npy":
        array = np.load(path, allow_pickle=False)
        return _as_3d(np.asarray(array), path), (1.0, 1.0, 1.0), None
    with np.load(path, allow_pickle=False) as data:
        if "array" not in data:
            raise ValueError(
                f"{str(path)!r} has no 'array' entry (found {sorted(data.files)}); save it with "
                f"np.savez(path, array=..., spacing=..., affine=...) or fewshotseg.io.save_volume"
            )
        array = _as_3d(np.asarray(data["array"]), path)
        spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
        affine = None
        if "spacing" in data:
            spacing = tuple(float(s) for s in np.asarray(data["spacing"]).ravel())
            if len(spacing) != 3:
                raise ValueError(f"'spacing' in {str(path)!r} must have 3 values, got {spacing}")
        if "affine" in data:
            affine = np.asarray(data["affine"], dtype=np.float64)
            if affine.shape != (4, 4):
                raise ValueError(f"'affine' in {str(path)!r} must be 4 x 4, got {affine.shape}")
    return array, spacing, affine


def _read_guarded(read: Any, path: Path, expected: str) -> Any:
    """Run a reader; errors of a truncated or corrupt file name the file and what was expected."""
    import zipfile
    import zlib

    try:
        return read(path)
    except ImportError:
        raise
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile, ValueError) as err:
        if isinstance(err, ValueError) and str(path) in str(err):
            raise  # our own message already names the file
        raise ValueError(
            f"cannot read {str(path)!r}: expected {expected}, but the file is truncated or "
            f"corrupt ({type(err).__name__}: {str(err)[:200] or 'no details'}); copy it again"
        ) from err


def load_volume(
    path: str | os.PathLike,
    *,
    axis: int = 2,
    backend: Literal["auto", "nibabel", "simpleitk"] = "auto",
    series_id: str | None = None,
) -> Volume:
    """Read a scan as a ``(D, H, W)`` float32 :class:`Volume`.

    The format comes from the suffix (see :data:`SUPPORTED_SUFFIXES`); a folder is read as a DICOM
    series. ``.npy`` files hold the array in ``(i, j, k)`` order and have no geometry (spacing
    1 mm); ``.npz`` files hold ``array`` and optionally ``spacing`` (3 values, ``(i, j, k)``
    order) and ``affine`` (4 x 4). A 2D image is read as ``(i, j, 1)``; trailing singleton axes
    beyond the third are dropped.

    Args:
        path: file or DICOM series folder.
        axis: the file's axis (0, 1 or 2, NIfTI ``(i, j, k)`` order) to slice along, moved first.
            2 is axial for most abdominal scans (CHAOS, Synapse).
        backend: ``"auto"`` reads NIfTI with nibabel and DICOM/NRRD/MetaImage with SimpleITK;
            ``"simpleitk"`` also reads NIfTI with SimpleITK (same array, same affine up to float
            precision); ``"nibabel"`` works only for NIfTI.
        series_id: DICOM only: which series to read when the folder holds several.

    Returns:
        The volume; ``array`` is float32 ``(D, H, W)``, ``spacing`` in the same order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unknown suffix, a non-scalar or non-3D image, a folder without a DICOM
            series, or a bad ``axis``/``backend``.
        ImportError: if the format needs nibabel/SimpleITK and they are not installed.

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp()
        >>> np.save(f"{d}/scan.npy", np.zeros((4, 5, 3)))  # (i, j, k) float64
        >>> v = load_volume(f"{d}/scan.npy", axis=2)
        >>> v.array.shape, v.array.dtype, v.spacing
        ((3, 4, 5), dtype('float32'), (1.0, 1.0, 1.0))
    """
    axis = _check_axis(axis)
    if backend not in ("auto", "nibabel", "simpleitk"):
        raise ValueError(f"backend must be 'auto', 'nibabel' or 'simpleitk', got {backend!r}")
    file = Path(path)
    if not file.exists():
        parent = file.parent if str(file.parent) else Path(".")
        raise FileNotFoundError(
            f"no such file or folder: {str(file)!r} (looked in {str(parent.resolve())!r})"
        )
    fmt = _format_of(file)
    if backend == "nibabel" and fmt != "nifti":
        raise ValueError(f"backend='nibabel' reads only NIfTI files, but {str(file)!r} is {fmt}")
    if file.is_file() and file.stat().st_size == 0:
        raise ValueError(f"{str(file)!r} is empty (0 bytes); expected a {fmt} image file")
    if fmt == "nifti" and backend in ("auto", "nibabel"):
        array, spacing, affine = _read_guarded(_read_nibabel, file, "a complete NIfTI image")
    elif fmt in ("npy", "npz"):
        array, spacing, affine = _read_guarded(
            lambda f: _read_numpy(f, fmt), file, f"a complete numpy .{fmt} file"
        )
    elif file.is_dir():
        array, spacing, affine = _read_dicom_series(file, series_id)
    else:
        array, spacing, affine = _read_sitk_file(file)
    moved = np.ascontiguousarray(np.moveaxis(array, axis, 0), dtype=np.float32)
    logger.debug("loaded %s (%s) as %s, axis=%d", file, fmt, moved.shape, axis)
    return Volume(
        array=moved,
        spacing=_spacing_to_moved(spacing, axis),
        affine=affine,
        axis=axis,
        path=file,
        format=fmt,
    )


def load_label_map(
    path: str | os.PathLike,
    *,
    axis: int = 2,
    backend: Literal["auto", "nibabel", "simpleitk"] = "auto",
) -> np.ndarray:
    """Read a label map as a ``(D, H, W)`` int32 array, moved like :func:`load_volume` moves it.

    Args:
        path: label file or DICOM folder.
        axis: the file's axis to slice along (same meaning as in :func:`load_volume`).
        backend: as in :func:`load_volume`.

    Returns:
        int32 ``(D, H, W)`` array.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file holds non-integer or negative values.

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp()
        >>> np.save(f"{d}/label.npy", np.ones((4, 5, 3)))
        >>> lab = load_label_map(f"{d}/label.npy")
        >>> lab.shape, lab.dtype
        ((3, 4, 5), dtype('int32'))
    """
    volume = load_volume(path, axis=axis, backend=backend)
    try:
        return to_label_map(volume.array, "the file")
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not a label map: {err}") from err


# --------------------------------------------------------------------------------------------
# writers


def _prepare_for_writing(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise TypeError(f"expected a numeric array to save, got dtype {array.dtype}")


def save_volume(
    array: Any,
    path: str | os.PathLike,
    *,
    like: Volume | None = None,
    axis: int | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """Write a ``(D, H, W)`` array (laid out like :attr:`Volume.array`) to a file.

    The array is moved back to the file's ``(i, j, k)`` order (``like.axis``) and written with
    ``like``'s geometry (affine, or spacing when it has none). The format comes from the suffix:
    ``.nii``/``.nii.gz`` (nibabel; sform and qform set, units mm), ``.nrrd``/``.nhdr``/``.mha``/
    ``.mhd`` (SimpleITK), ``.npy`` (array only) or ``.npz`` (``array``, ``spacing``, ``affine``).
    Integer arrays keep their dtype (label maps); booleans are written as uint8; floats as
    float32. DICOM writing is not supported. Parent folders are created.

    Args:
        array: ``(D, H, W)`` numpy array or torch tensor.
        path: output file.
        like: the volume whose geometry to copy; ``array.shape`` must equal ``like.shape``.
        axis: only without ``like``: which file axis ``D`` goes back to (default 2).
        spacing: only without ``like``: ``(D, H, W)`` voxel size in mm (default 1 mm).

    Returns:
        The path written.

    Raises:
        ValueError: for a non-3D array, a shape different from ``like``'s, an unsupported suffix,
            or ``axis``/``spacing`` given together with ``like``.

    Example:
        >>> import tempfile, numpy as np
        >>> d = tempfile.mkdtemp()
        >>> v = load_volume(save_volume(np.zeros((3, 4, 5)), f"{d}/a.npz", spacing=(3.0, 1.0, 1.0)))
        >>> v.shape, v.spacing
        ((3, 4, 5), (3.0, 1.0, 1.0))
    """
    data = _prepare_for_writing(array)
    if data.ndim != 3:
        raise ValueError(f"expected a (D, H, W) array, got shape {data.shape}")
    if like is not None:
        if axis is not None or spacing is not None:
            raise ValueError("pass either like=... or axis/spacing, not both")
        if data.shape != like.shape:
            raise ValueError(
                f"array shape {data.shape} differs from like's {like.shape}; `like` gives the "
                f"geometry of the original scan, so the array must have its (D, H, W) shape "
                f"(resample or crop back first)"
            )
        axis_, spacing_ijk, affine = like.axis, like.original_spacing, like.affine
    else:
        axis_ = _check_axis(2 if axis is None else axis)
        moved_spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
        if len(moved_spacing) != 3 or min(moved_spacing) <= 0:
            raise ValueError(f"spacing must be 3 positive numbers in mm, got {spacing}")
        spacing_ijk, affine = _spacing_to_original(moved_spacing, axis_), None
    out = Path(path)
    suffix = split_suffix(out)[1].lower()
    if suffix not in _WRITABLE:
        raise ValueError(
            f"cannot write {str(out)!r}: unsupported suffix; use one of {', '.join(_WRITABLE)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    original = np.ascontiguousarray(_to_original(data, axis_))
    fmt = SUPPORTED_SUFFIXES[suffix]
    if fmt == "npy":
        if affine is not None or spacing_ijk != (1.0, 1.0, 1.0):
            logger.info("%s: .npy keeps no geometry; use .npz or .nii.gz to keep it", out)
        np.save(out, original)
    elif fmt == "npz":
        extra = {} if affine is None else {"affine": np.asarray(affine, dtype=np.float64)}
        with open(out, "wb") as handle:  # np.savez would append .npz to other names
            np.savez_compressed(
                handle, array=original, spacing=np.asarray(spacing_ijk, np.float64), **extra
            )
    else:
        geometry = affine if affine is not None else _default_affine(spacing_ijk)
        if fmt == "nifti":
            _write_nifti(original, out, geometry)
        else:
            _write_sitk(original, out, geometry)
    logger.debug("wrote %s %s (%s) to %s", data.shape, data.dtype, fmt, out)
    return out


def _write_nifti(array: np.ndarray, path: Path, affine: np.ndarray) -> None:
    nib = _import_nibabel()
    image = nib.Nifti1Image(array, affine, dtype=array.dtype)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def _write_sitk(array: np.ndarray, path: Path, affine: np.ndarray) -> None:
    sitk = _import_sitk()
    image = sitk.GetImageFromArray(array.transpose())  # (i, j, k) -> ITK's (z, y, x) array
    spacing, origin, direction = _affine_to_sitk(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
