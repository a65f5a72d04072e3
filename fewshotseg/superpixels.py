"""Superpixel pseudolabels for self-supervised training (SSL-ALPNet's supervision signal).

:class:`SuperpixelPseudolabeler` turns an unlabeled scan into a label map of superpixels (2D,
per slice, as in the paper) or supervoxels (3D, as in the follow-up papers). The episode sampler
then picks one superpixel as the foreground of a self-supervised episode.

What the labeler does, in order (see ``docs/pseudolabels.md`` for the reasoning):

1. **Normalise.** The image is converted to float64 and rescaled to ``[0, 1]`` between its
   0.5th and 99.5th intensity percentiles (clipped outside them; the minimum and maximum when
   those percentiles coincide). Statistics are taken per slice in 2D mode and per volume in 3D
   mode, so a ``uint16`` and a ``float32`` copy of a scan give the same labels, and CT in HU or
   MRI in arbitrary units need no preprocessing. An image with a single value has no body: the
   result is all zeros and a :class:`UserWarning` is issued.
2. **Body mask.** Threshold (automatic: a few noise sigmas above the background, see
   :mod:`fewshotseg.body_mask`; or ``body_threshold`` in the input's own units), keep the
   largest connected component, close small gaps, fill holes per slice. See
   :meth:`SuperpixelPseudolabeler.body_mask`.
3. **Over-segment.** 2D: :func:`skimage.segmentation.felzenszwalb` on every normalised slice.
   3D: :func:`skimage.segmentation.slic` on the normalised volume inside the body mask, with the
   voxel spacing, so distances are in mm.
4. **Clean up.** Everything outside the body is 0; every superpixel is split into its connected
   pieces (8-connected within a slice in 2D, 26-connected in 3D); pieces smaller than
   ``min_area`` are merged into the neighbouring superpixel they share the longest border with;
   ids are renumbered ``1..n`` without gaps (per slice in 2D); `fewshotseg._regions` does this.

Unlike the reference implementation, no superpixel is lost in the renumbering, there are no id
gaps, and tiny fragments left by the body mask are not kept as superpixels of their own.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from fewshotseg._checks import check_finite, check_real, to_numpy
from fewshotseg._regions import finalise
from fewshotseg.body_mask import BodyCoverage, body_mask, estimate_background, non_air_mask
from fewshotseg.io import PSEUDOLABEL_TAG

if TYPE_CHECKING:
    from fewshotseg.io import Volume

__all__ = [
    "SuperpixelPseudolabeler",
    "load_pseudolabels",
    "pseudolabel_path",
    "save_pseudolabels",
]

logger = logging.getLogger(__name__)

#: Defaults per mode; ``None`` in the constructor picks these.
DEFAULTS: dict[str, dict[str, float]] = {
    "2d": {"scale": 10.0, "sigma": 0.8, "min_size": 400},
    "3d": {"compactness": 0.1, "sigma": 1.0, "min_size": 5000},
}

#: Percentiles between which intensities are rescaled to [0, 1].
PERCENTILES = (0.5, 99.5)

#: Tag inserted into the scan's file name by :func:`pseudolabel_path`.
DEFAULT_TAG = PSEUDOLABEL_TAG

# a labeled piece: labels, constant units, non-air voxels, of them inside the body
_Piece = tuple[np.ndarray, int, int, int]
_CHUNK = 4  # slices per piece of work in 2d mode
# a piece of work: volume index, first slice, image piece, spacing, units for the progress bar
_Task = tuple[int, int, np.ndarray, "tuple[float, ...] | None", int]


class SuperpixelPseudolabeler:
    """Unsupervised pseudolabels (Felzenszwalb superpixels) for unlabeled scans.

    Args:
        mode: ``"2d"`` (default, the paper's): Felzenszwalb superpixels per slice, ids ``1..n_z``
            restarting in every slice. ``"3d"``: SLIC supervoxels over the whole volume using the
            voxel spacing, ids ``1..n`` over the volume.
        scale: 2D only. Felzenszwalb's scale on the ``[0, 1]``-normalised slice (higher = larger
            segments). Default 10.
        sigma: Gaussian smoothing before segmenting. 2D: in pixels, default 0.8. 3D: in mm
            (divided by the spacing per axis), default 1.0.
        min_size: granularity. 2D: Felzenszwalb's minimum segment size in pixels, default 400,
            which at 256 x 256 gives about 20 superpixels per slice inside the body, like the
            reference. The count per slice scales with ``H * W / min_size``: to keep the same
            granularity on a 512 x 512 slice use ``min_size=1600``. 3D: minimum supervoxel size
            in voxels, default 5000 (the follow-up papers' value for CHAOS); SLIC is asked for
            supervoxels of ``2 * min_size`` voxels on average.
        compactness: 3D only. SLIC's compactness on the ``[0, 1]`` intensities (higher = more
            cube-like supervoxels, less intensity-driven). Default 0.1.
        body_threshold: intensity above which a voxel may belong to the body, in the input's own
            units (e.g. ``50`` for raw CHAOS MRI, ``-500`` for CT in HU). ``None`` (default):
            automatic, from the background's level and noise
            (:func:`fewshotseg.body_mask.estimate_background`), for MRI of any sequence, CT in
            HU and windowed CT.
        min_area: connected pieces smaller than this (pixels in 2D, voxels in 3D), as left by
            the body mask, are merged into the neighbouring superpixel they share the longest
            border with (never dropped, so 0 stays exactly "outside the body"). ``None``
            (default): equal to ``min_size``. ``0`` keeps every piece. A body smaller than
            ``min_area`` has no neighbour to merge into and stays one superpixel.

    Raises:
        ValueError: for an unknown mode, a non-positive size/scale, or a parameter given to the
            wrong mode (``scale`` in 3D, ``compactness`` in 2D).

    Example:
        >>> import numpy as np
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img = ((yy - 32) ** 2 + (xx - 32) ** 2 < 25 ** 2) * (100.0 + (xx > 32) * 80.0)
        >>> labels = SuperpixelPseudolabeler(min_size=50)(img)
        >>> labels.dtype, labels.shape
        (dtype('int32'), (64, 64))
        >>> ids = np.unique(labels)
        >>> bool((ids == np.arange(labels.max() + 1)).all()), int(labels.max()) >= 2
        (True, True)
        >>> bool(((labels == 0) == ~SuperpixelPseudolabeler().body_mask(img)).all())
        True
    """

    def __init__(
        self,
        *,
        mode: Literal["2d", "3d"] = "2d",
        scale: float | None = None,
        sigma: float | None = None,
        min_size: int | None = None,
        compactness: float | None = None,
        body_threshold: float | None = None,
        min_area: int | None = None,
    ) -> None:
        if mode not in DEFAULTS:
            raise ValueError(f"mode must be '2d' or '3d', got {mode!r}")
        if mode == "3d" and scale is not None:
            raise ValueError(
                "scale is Felzenszwalb's parameter and applies to mode='2d' only; in 3d the "
                "granularity is min_size (voxels) and the shape is compactness"
            )
        if mode == "2d" and compactness is not None:
            raise ValueError("compactness applies to mode='3d' (SLIC) only; in 2d use scale")
        defaults = DEFAULTS[mode]
        self.mode: Literal["2d", "3d"] = mode
        self.scale = float(defaults["scale"] if scale is None else scale) if mode == "2d" else None
        self.compactness = (
            float(defaults["compactness"] if compactness is None else compactness)
            if mode == "3d"
            else None
        )
        self.sigma = float(defaults["sigma"] if sigma is None else sigma)
        self.min_size = int(defaults["min_size"] if min_size is None else min_size)
        self.min_area = self.min_size if min_area is None else int(min_area)
        self.body_threshold = None if body_threshold is None else float(body_threshold)
        for name in ("scale", "compactness"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (np.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be >= 1, got {self.min_size}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0 (0 keeps every piece), got {self.min_area}")
        if self.body_threshold is not None and np.isnan(self.body_threshold):
            raise ValueError("body_threshold must be a number or None (automatic), got NaN")

    def __repr__(self) -> str:
        shape = f"scale={self.scale}" if self.mode == "2d" else f"compactness={self.compactness}"
        return (
            f"{type(self).__name__}(mode={self.mode!r}, {shape}, sigma={self.sigma}, "
            f"min_size={self.min_size}, body_threshold={self.body_threshold}, "
            f"min_area={self.min_area})"
        )

    # ----------------------------------------------------------------------------------------
    # public API

    def __call__(self, volume: Any, *, spacing: Sequence[float] | None = None) -> np.ndarray:
        """Label one slice or volume.

        Args:
            volume: ``(H, W)`` slice or ``(D, H, W)`` volume, any real dtype, numpy array or
                torch tensor, in its own intensity units.
            spacing: voxel size in mm, one value per axis of ``volume``. Used in 3D mode (a
                ``(D, H, W)`` volume without it is taken as isotropic, with a warning); checked
                and otherwise ignored in 2D mode.

        Returns:
            int32 numpy array of ``volume``'s shape: 0 outside the body, superpixel ids
            ``1..n`` inside (in 2D mode numbered per slice, so ``out[z]`` equals the labels of
            ``volume[z]`` alone).

        Raises:
            TypeError: if ``volume`` is not a numpy array / torch tensor of real numbers.
            ValueError: for an empty array, a dimension other than 2 or 3, NaN or infinite
                values, or a bad ``spacing``.

        Example:
            >>> yy, xx = np.mgrid[:64, :64]
            >>> disk = ((yy - 32) ** 2 + (xx - 32) ** 2 < 25**2) * (100.0 + (xx > 32) * 80.0)
            >>> labels = SuperpixelPseudolabeler(min_size=50)(np.stack([disk, disk]))  # (D, H, W)
            >>> labels.shape, labels.dtype, np.array_equal(labels[0], labels[1])  # per slice
            ((2, 64, 64), dtype('int32'), True)
        """
        image = _as_image(volume)
        spacing_ = _check_spacing(spacing, image.ndim)
        if self.mode == "3d" and image.ndim == 3 and spacing_ is None:
            _warn_isotropic()
        labels, n_constant, _, _ = self._label(image, spacing_)
        if n_constant:
            _warn_constant(image.shape, n_constant, self._n_units(image))
        return labels

    def body_mask(self, volume: Any) -> np.ndarray:
        """The body mask the labeler uses: exactly where its labels are non-zero.

        Threshold (``body_threshold`` in the input's units, or automatic: a few noise sigmas
        above the background, :func:`fewshotseg.body_mask.estimate_background`), largest
        connected component (per slice in 2D mode, over the volume in 3D mode, 8-/26-connected),
        a small closing (3 x 3, twice, per slice), hole filling per slice
        (:func:`fewshotseg.body_mask.body_mask`). A constant image, or one of uncorrelated
        noise, has no body (all False).

        Args:
            volume: ``(H, W)`` or ``(D, H, W)`` image, as for :meth:`__call__`.

        Returns:
            bool numpy array of ``volume``'s shape.

        Example:
            >>> yy, xx = np.mgrid[:32, :32]; disk = ((yy - 16) ** 2 + (xx - 16) ** 2 < 100) * 90.0
            >>> body = SuperpixelPseudolabeler().body_mask(disk)
            >>> body.dtype, body.shape, bool(body[16, 16]), bool(body[0, 0])
            (dtype('bool'), (32, 32), True, False)
        """
        image = _as_image(volume)
        if self.mode == "2d" and image.ndim == 3:
            return np.stack([self._body_and_norm(s)[0] for s in image])
        return self._body_and_norm(image)[0]

    @overload
    def label_many(
        self,
        volumes: Sequence[Any],
        *,
        spacings: Sequence[Sequence[float] | None] | None = ...,
        workers: int | None = ...,
        progress: bool = ...,
        names: Sequence[str] | None = ...,
        return_reports: Literal[False] = ...,
    ) -> list[np.ndarray]: ...

    @overload
    def label_many(
        self,
        volumes: Sequence[Any],
        *,
        spacings: Sequence[Sequence[float] | None] | None = ...,
        workers: int | None = ...,
        progress: bool = ...,
        names: Sequence[str] | None = ...,
        return_reports: Literal[True],
    ) -> tuple[list[np.ndarray], list[BodyCoverage]]: ...

    def label_many(
        self,
        volumes: Sequence[Any],
        *,
        spacings: Sequence[Sequence[float] | None] | None = None,
        workers: int | None = None,
        progress: bool = True,
        names: Sequence[str] | None = None,
        return_reports: bool = False,
    ) -> list[np.ndarray] | tuple[list[np.ndarray], list[BodyCoverage]]:
        """Label several slices/volumes in parallel processes, and check their body masks.

        2D mode splits the work by slices (chunks of slices of every volume), 3D mode by
        volumes. The output does not depend on ``workers``: every piece is labeled exactly as
        :meth:`__call__` would label it.

        Every volume gets a :class:`fewshotseg.body_mask.BodyCoverage` report; one whose body
        mask keeps under 90 % of its non-air voxels or covers under 3 % of the field of view
        gets a one-line ``UserWarning`` naming it.

        Args:
            volumes: sequence of ``(H, W)`` / ``(D, H, W)`` arrays or tensors (sizes may differ).
            spacings: one spacing (or ``None``) per volume, as for :meth:`__call__`.
            workers: number of processes; ``None`` = the CPUs available to this process; ``1``
                runs in this process.
            progress: show a tqdm bar (slices in 2D mode, volumes in 3D mode).
            names: one name per volume (e.g. its file name) for warnings and reports; default
                "volume i".
            return_reports: also return the reports.

        Returns:
            list of int32 label maps, one per volume, in input order; with
            ``return_reports=True``, ``(label maps, reports)``, one report per volume.

        Raises:
            ValueError: if ``spacings`` does not have one entry per volume, or ``workers < 1``.

        Example:
            >>> yy, xx = np.mgrid[:40, :40]; disk = ((yy - 20) ** 2 + (xx - 20) ** 2 < 256) * 90.0
            >>> disk = disk + (disk > 0) * (xx > 20) * 80  # two halves
            >>> rng = np.random.default_rng(0); labeler = SuperpixelPseudolabeler(min_size=50)
            >>> scans = [disk[4:36, 4:36] + rng.random((2, 32, 32)), disk + rng.random((3, 40, 40))]
            >>> out, reports = labeler.label_many(scans, progress=False, return_reports=True)
            >>> [o.shape for o in out], {o.dtype.name for o in out}
            ([(2, 32, 32), (3, 40, 40)], {'int32'})
            >>> all(np.array_equal(o, labeler(s)) for o, s in zip(out, scans))  # as one by one
            True
            >>> print(reports[1])
            volume 1: body 49.6 % of the view, non-air kept 100.0 %, 2.0 superpixels per slice
        """
        images = [_as_image(v) for v in volumes]
        if spacings is None:
            spacings_list: list[Sequence[float] | None] = [None] * len(images)
        else:
            spacings_list = list(spacings)
            if len(spacings_list) != len(images):
                raise ValueError(
                    f"got {len(spacings_list)} spacings for {len(images)} volumes; pass one "
                    "spacing (or None) per volume"
                )
        if names is not None and len(names) != len(images):
            raise ValueError(f"got {len(names)} names for {len(images)} volumes; pass one each")
        checked = [_check_spacing(s, im.ndim) for s, im in zip(spacings_list, images, strict=True)]
        if self.mode == "3d" and any(
            sp is None and im.ndim == 3 for sp, im in zip(checked, images, strict=True)
        ):
            _warn_isotropic()
        if workers is None:
            workers = _available_cpus()
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")

        tasks = self._tasks(images, checked)
        outputs = [np.zeros(im.shape, np.int32) for im in images]
        counts = np.zeros((len(images), 3), np.int64)  # constant units, non-air, non-air kept
        bar = _progress_bar(
            sum(t[4] for t in tasks), progress, "slice" if self.mode == "2d" else "volume"
        )

        def store(task: _Task, answer: _Piece) -> None:
            i, z, piece = task[0], task[1], task[2]
            counts[i] += answer[1:]
            if images[i].ndim == 3 and self.mode == "2d":
                outputs[i][z : z + piece.shape[0]] = answer[0]
            else:
                outputs[i] = answer[0]
            if bar is not None:
                bar.update(task[4])

        try:
            if workers == 1 or len(tasks) <= 1:
                for task in tasks:
                    store(task, _run_task(self, task[2], task[3]))
            else:
                with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                    futures = {pool.submit(_run_task, self, t[2], t[3]): t for t in tasks}
                    for future in as_completed(futures):
                        store(futures[future], future.result())
        finally:
            if bar is not None:
                bar.close()
        reports = self._report(images, outputs, counts, names)
        return (outputs, reports) if return_reports else outputs

    # ----------------------------------------------------------------------------------------
    # internals

    def _n_units(self, image: np.ndarray) -> int:
        """Slices labeled separately (2d mode) or 1 (3d mode, or a single slice)."""
        return image.shape[0] if self.mode == "2d" and image.ndim == 3 else 1

    def _tasks(self, images: list[np.ndarray], spacings: list[Any]) -> list[_Task]:
        """The pieces of work: chunks of slices in 2d mode, volumes in 3d mode."""
        if self.mode == "3d":
            pairs = zip(images, spacings, strict=True)
            return [(i, 0, im, sp, 1) for i, (im, sp) in enumerate(pairs)]
        tasks: list[_Task] = []
        for i, im in enumerate(images):
            stack = im[None] if im.ndim == 2 else im
            for z in range(0, len(stack), _CHUNK):
                piece = im if im.ndim == 2 else im[z : z + _CHUNK]
                tasks.append((i, z, piece, None, len(stack[z : z + _CHUNK])))
        return tasks

    def _report(
        self,
        images: list[np.ndarray],
        outputs: list[np.ndarray],
        counts: np.ndarray,
        names: Sequence[str] | None,
    ) -> list[BodyCoverage]:
        """The reports of labeled volumes; one warning per volume that needs one."""
        reports = []
        for i, (image, labels) in enumerate(zip(images, outputs, strict=True)):
            name = f"volume {i}" if names is None else str(names[i])
            n_constant, n_non_air, n_kept = (int(c) for c in counts[i])
            n_units = self._n_units(image)
            if n_constant:
                _warn_constant(
                    image.shape, n_constant, n_units, index=i,
                    name=None if names is None else name, stacklevel=4,
                )  # fmt: skip
            report = BodyCoverage.measure(labels, n_non_air, n_kept, name=name)
            message = report.warning()
            if message is not None and n_constant < n_units:  # not all constant: said above
                warnings.warn(message, UserWarning, stacklevel=3)
            reports.append(report)
        return reports

    def _label(self, image: np.ndarray, spacing: tuple[float, ...] | None) -> _Piece:
        """Labels of a validated image, how many of its units were constant (no warning), its
        non-air voxels and how many of them are in the body."""
        if self.mode == "2d":
            slices = image[None] if image.ndim == 2 else image
            results = [self._label_slice(s) for s in slices]
            out = np.stack([r[0] for r in results])
            n_constant, n_non_air, n_kept = (sum(r[k] for r in results) for k in (1, 2, 3))
            return (out[0] if image.ndim == 2 else out), n_constant, n_non_air, n_kept
        if image.ndim == 2:  # a single slice is a volume of depth 1
            sp = None if spacing is None else (1.0, *spacing)
            labels, n_constant, n_non_air, n_kept = self._label_volume_3d(image[None], sp)
            return labels[0], n_constant, n_non_air, n_kept
        return self._label_volume_3d(image, spacing)

    def _body_and_norm(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int, int]:
        """(body mask, normalised image or None when constant, non-air voxels, of them in the
        body) of one slice or volume."""
        norm = _normalise(image)
        background = estimate_background(image)  # None exactly when norm is: a constant image
        if norm is None or background is None:
            return np.zeros(image.shape, bool), None, 0, 0
        threshold = background.threshold if self.body_threshold is None else self.body_threshold
        mask = body_mask(image, threshold=threshold)
        non_air = non_air_mask(image, background)
        return mask, norm, int(non_air.sum()), int(np.count_nonzero(non_air & mask))

    def _label_slice(self, image: np.ndarray) -> _Piece:
        """Labels of one 2D slice (zeros when constant, counted as 1 constant unit)."""
        from skimage.segmentation import felzenszwalb

        mask, norm, n_non_air, n_kept = self._body_and_norm(image)
        if norm is None:
            return np.zeros(image.shape, np.int32), 1, 0, 0
        if not mask.any():
            return np.zeros(image.shape, np.int32), 0, n_non_air, n_kept
        seg = felzenszwalb(
            norm, scale=self.scale, sigma=self.sigma, min_size=self.min_size, channel_axis=None
        )
        return finalise(seg, mask, self.min_area), 0, n_non_air, n_kept

    def _label_volume_3d(self, image: np.ndarray, spacing: tuple[float, ...] | None) -> _Piece:
        """SLIC supervoxels of a (D, H, W) volume (1 constant unit if it was constant)."""
        from skimage.segmentation import slic

        mask, norm, n_non_air, n_kept = self._body_and_norm(image)
        if norm is None:
            return np.zeros(image.shape, np.int32), 1, 0, 0
        n_body = int(mask.sum())
        if n_body == 0:
            return np.zeros(image.shape, np.int32), 0, n_non_air, n_kept
        n_segments = max(1, round(n_body / (2 * self.min_size)))
        with warnings.catch_warnings():
            # scipy's k-means (used for SLIC's seeds in a mask) may warn about empty clusters
            warnings.simplefilter("ignore", UserWarning)
            seg = slic(
                norm,
                n_segments=n_segments,
                compactness=self.compactness,
                sigma=self.sigma,
                spacing=None if spacing is None else np.asarray(spacing, float),
                mask=mask,
                channel_axis=None,
                start_label=1,
                enforce_connectivity=True,
                min_size_factor=0.5,
                max_size_factor=3.0,
            )
        return finalise(seg, mask, self.min_area), 0, n_non_air, n_kept


# --------------------------------------------------------------------------------------------
# saving and loading next to the scan


def pseudolabel_path(scan: Volume | str | os.PathLike, *, tag: str = DEFAULT_TAG) -> Path:
    """Where the pseudolabels of a scan are stored: next to it, tagged.

    NIfTI scans get a NIfTI file (``image_1.nii.gz`` -> ``image_1.superpixels.nii.gz``);
    anything else (DICOM folders, NRRD, MHA, numpy) gets ``.npz``, which keeps the geometry.

    Args:
        scan: a :class:`fewshotseg.io.Volume` read from a file, or the scan's path.
        tag: inserted before the suffix.

    Returns:
        The path (nothing is created).

    Example:
        >>> pseudolabel_path("data/image_1.nii.gz").as_posix()
        'data/image_1.superpixels.nii.gz'
        >>> pseudolabel_path("data/patient_7").as_posix()
        'data/patient_7.superpixels.npz'
    """
    from fewshotseg.io import sibling_path, split_suffix

    is_volume = hasattr(scan, "array")
    path = scan.path if is_volume else scan  # type: ignore[union-attr]
    if path is None:
        raise ValueError(
            "this Volume has no path (it was not read from a file); save the pseudolabels with "
            "fewshotseg.io.save_volume(labels, path, like=volume) instead"
        )
    if is_volume:
        fmt = scan.format  # type: ignore[union-attr]
    else:
        fmt = "nifti" if split_suffix(path)[1].lower() in (".nii", ".nii.gz") else "other"
    return sibling_path(path, tag, suffix=".nii.gz" if fmt == "nifti" else ".npz")


def save_pseudolabels(
    labels: np.ndarray, scan: Volume, *, tag: str = DEFAULT_TAG, overwrite: bool = True
) -> Path:
    """Write a scan's pseudolabels next to it with the scan's geometry.

    Args:
        labels: ``(D, H, W)`` int32 label map laid out like ``scan.array``.
        scan: the :class:`fewshotseg.io.Volume` the labels were computed from (read from a file).
        tag: file name tag, see :func:`pseudolabel_path`.
        overwrite: if False, an existing file is an error.

    Returns:
        The path written.

    Raises:
        ValueError: if the shapes differ, the volume has no path, or the label values are not
            int32 ids.
        FileExistsError: if the file exists and ``overwrite`` is False.

    Example:
        >>> import tempfile; from fewshotseg.io import load_volume
        >>> path = f"{tempfile.mkdtemp()}/scan.npy"; np.save(path, np.zeros((32, 32, 2)))
        >>> scan = load_volume(path)  # (D, H, W) = (2, 32, 32), read from a file
        >>> save_pseudolabels(np.ones(scan.shape, np.int32), scan).name
        'scan.superpixels.npz'
    """
    from fewshotseg.io import save_volume

    labels = np.asarray(labels)
    if labels.shape != scan.shape:
        raise ValueError(
            f"labels have shape {labels.shape} but the scan is {scan.shape}; label the scan's "
            "own array (Volume.array)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"pseudolabels must be integer ids, got dtype {labels.dtype}")
    path = pseudolabel_path(scan, tag=tag)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    return save_volume(labels.astype(np.int32, copy=False), path, like=scan)


def load_pseudolabels(scan: Volume, *, tag: str = DEFAULT_TAG) -> np.ndarray:
    """Read the pseudolabels stored next to a scan by :func:`save_pseudolabels`.

    Args:
        scan: the :class:`fewshotseg.io.Volume` (its path and slicing axis are used).
        tag: file name tag, see :func:`pseudolabel_path`.

    Returns:
        int32 ``(D, H, W)`` label map laid out like ``scan.array``.

    Raises:
        FileNotFoundError: if there is no such file (label the scan and save first).
        ValueError: if the stored labels do not match the scan's shape.

    Example:
        >>> import tempfile; from fewshotseg.io import load_volume
        >>> path = f"{tempfile.mkdtemp()}/scan.npy"; np.save(path, np.zeros((32, 32, 2)))
        >>> scan = load_volume(path); labels = np.arange(2048, dtype=np.int32).reshape(scan.shape)
        >>> _ = save_pseudolabels(labels, scan); back = load_pseudolabels(scan)
        >>> back.dtype, np.array_equal(back, labels)
        (dtype('int32'), True)
    """
    from fewshotseg.io import load_label_map

    path = pseudolabel_path(scan, tag=tag)
    if not path.exists():
        raise FileNotFoundError(
            f"no pseudolabels at {path}; create them with "
            "save_pseudolabels(SuperpixelPseudolabeler()(scan.array), scan)"
        )
    labels = load_label_map(path, axis=scan.axis)
    if labels.shape != scan.shape:
        raise ValueError(f"{path} holds shape {labels.shape}, but the scan is {scan.shape}")
    return labels


# --------------------------------------------------------------------------------------------
# helpers (module level so that process pools can pickle them)


def _run_task(
    labeler: SuperpixelPseudolabeler, image: np.ndarray, spacing: tuple[float, ...] | None
) -> _Piece:
    return labeler._label(image, spacing)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _progress_bar(total: int, enabled: bool, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="superpixels", unit=unit)


def _warn_isotropic() -> None:
    warnings.warn(
        "3d supervoxels without spacing: assuming isotropic 1 mm voxels; pass "
        "spacing=(dz, dy, dx) in mm (e.g. Volume.spacing) for anisotropic scans",
        UserWarning,
        stacklevel=3,
    )


def _warn_constant(
    shape: tuple[int, ...],
    n_constant: int,
    n_total: int,
    index: int | None = None,
    name: str | None = None,
    stacklevel: int = 3,
) -> None:
    where = f"the image of shape {shape}" if index is None else f"volume {index} {shape}"
    if name is not None:
        where = f"{name} {shape}"
    if n_total > 1:
        where = f"{n_constant} of the {n_total} slices of {where}"
    warnings.warn(
        f"{where}: a single intensity value, so no body and labels 0 there",
        UserWarning,
        stacklevel=stacklevel,
    )


def _as_image(volume: Any) -> np.ndarray:
    """Validate and convert to a float64 numpy array (2D or 3D, finite, non-empty)."""
    volume = to_numpy(volume, "image")
    check_real(volume, "image")
    if volume.ndim not in (2, 3):
        raise ValueError(
            f"expected a (H, W) slice or a (D, H, W) volume, got {volume.ndim}-D shape "
            f"{volume.shape}; label multi-channel or 4-D data one volume at a time"
        )
    if volume.size == 0:
        raise ValueError(f"expected a non-empty image, got shape {volume.shape}")
    image = volume.astype(np.float64)
    check_finite(image, "image")
    return image


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except TypeError as err:
        raise TypeError(f"spacing must be a sequence of {ndim} numbers, got {spacing!r}") from err
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"spacing must be {ndim} positive numbers (mm per voxel along each axis of the "
            f"image), got {spacing!r}"
        )
    return values


def _normalise(image: np.ndarray) -> np.ndarray | None:
    """Rescale to [0, 1] between the PERCENTILES; None for a constant image."""
    lo, hi = np.percentile(image, PERCENTILES)
    if not hi > lo:
        lo, hi = image.min(), image.max()
        if not hi > lo:
            return None
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)
