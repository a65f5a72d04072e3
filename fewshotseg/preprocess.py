"""The paper's preprocessing recipes as pure numpy functions.

SSL-ALPNet (Ouyang et al., 2020) prepares its data like this (see ``docs/data.md``):

- MRI (CHAOS T2-SPIR): clip the top 0.5 % of intensities (:func:`clip_top`), resample to
  1.25 x 1.25 x 7.7 mm (:func:`resample`), crop/pad in-plane to 256 x 256 (:func:`crop_or_pad`),
  z-score per volume (:func:`zscore`). :func:`mri` does the intensity part.
- CT (Synapse/BTCV): clip HU to [-125, 275], resample in-plane to about 256 px
  (:func:`resample_inplane`), z-score with the training scans' mean and std
  (:func:`intensity_stats`). :func:`ct` does the intensity part.

All functions take numpy arrays (torch tensors are converted), never modify their input, and
return new numpy arrays. Volumes are ``(D, H, W)`` with the slicing axis first (see
:mod:`fewshotseg.io`); in-plane functions act on the last two axes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from fewshotseg._checks import check_finite, check_real, to_numpy

__all__ = [
    "INTENSITY_RECIPES",
    "check_modality",
    "apply_recipe",
    "clip_top",
    "crop_or_pad",
    "ct",
    "intensity_stats",
    "looks_like_hounsfield",
    "mri",
    "resample",
    "resample_inplane",
    "zscore",
]

logger = logging.getLogger(__name__)


def _as_array(volume: Any, name: str = "volume") -> np.ndarray:
    array = to_numpy(volume, name, sequences=True)
    check_real(array, name)
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array


def clip_top(volume: Any, *, percent: float = 0.5) -> np.ndarray:
    """Clip the brightest ``percent`` % of intensities to the ``100 - percent`` percentile.

    Args:
        volume: any-shape real array (a ``(D, H, W)`` volume).
        percent: share of voxels, in percent (0 <= percent < 100), above the cut-off; 0 keeps the
            volume as it is.

    Returns:
        float32 array of the same shape; at most ``percent`` % of voxels (plus ties) equal the
        cut-off ``np.percentile(volume, 100 - percent)``, none exceed it.

    Raises:
        ValueError: for a percent outside [0, 100) or NaN/inf values.

    Example:
        >>> round(float(clip_top(np.arange(1000.0), percent=0.5).max()), 3)
        994.005
    """
    array = _as_array(volume)
    check_finite(array, "volume")
    if not 0.0 <= percent < 100.0:
        raise ValueError(f"percent must be in [0, 100), got {percent}; the paper uses 0.5")
    cutoff = np.percentile(array, 100.0 - percent)
    return np.minimum(array, cutoff).astype(np.float32)


def zscore(volume: Any, *, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """Standardise intensities: ``(volume - mean) / std``.

    Args:
        volume: any-shape real array.
        mean: the mean to subtract; default the volume's own mean.
        std: the standard deviation to divide by; default the volume's own (population) std.

    Returns:
        float32 array of the same shape; with the defaults its mean is 0 and its std 1.

    Raises:
        ValueError: if the std is not positive (a constant volume) or values are NaN/inf.

    Example:
        >>> z = zscore(np.array([1.0, 2.0, 3.0]))
        >>> [round(float(v), 4) for v in z]
        [-1.2247, 0.0, 1.2247]
    """
    array = _as_array(volume)
    check_finite(array, "volume")
    # float64 accumulators, no float64 copy of the volume
    mu = float(array.mean(dtype=np.float64)) if mean is None else float(mean)
    sigma = float(array.std(dtype=np.float64)) if std is None else float(std)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(
            f"cannot z-score with std={sigma}: the volume is constant, or a std <= 0 was given; "
            f"check that the scan is not blank, or pass mean= and std= from training scans"
        )
    out = array.astype(np.float32)  # a copy: the caller's array is left alone
    out -= np.float32(mu)
    out /= np.float32(sigma)
    return out


def intensity_stats(volumes: Iterable[Any]) -> tuple[float, float]:
    """Mean and std of all voxels of several volumes together (for the CT recipe).

    Pass the training scans after windowing (:func:`ct` with ``zscore=False``), then give the
    result to :func:`ct` / :func:`zscore` for every scan, test scans included.

    Args:
        volumes: arrays of any shapes.

    Returns:
        ``(mean, std)`` as floats (population std, accumulated in float64).

    Raises:
        ValueError: if there are no volumes.

    Example:
        >>> intensity_stats([np.zeros(3), np.full(1, 4.0)])
        (1.0, 1.7320508075688772)
    """
    count, total, total_sq = 0, 0.0, 0.0
    for i, volume in enumerate(volumes):
        array = _as_array(volume, f"volume {i}").astype(np.float64)
        check_finite(array, f"volume {i}")
        count += array.size
        total += float(array.sum())
        total_sq += float(np.square(array).sum())
    if count == 0:
        raise ValueError("intensity_stats needs at least one non-empty volume")
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return mean, float(np.sqrt(var))


def mri(
    volume: Any,
    *,
    clip_percent: float = 0.5,
    zscore: bool = True,
    mean: float | None = None,
    std: float | None = None,
) -> np.ndarray:
    """The paper's MRI intensity recipe: clip the top 0.5 % of intensities, then z-score.

    Args:
        volume: ``(D, H, W)`` (or any-shape) real array, raw scanner intensities.
        clip_percent: share of the brightest voxels to clip, in percent (see :func:`clip_top`).
        zscore: whether to z-score after clipping (per volume unless ``mean``/``std`` are given).
        mean: optional mean for the z-score (default: the clipped volume's own).
        std: optional std for the z-score (default: the clipped volume's own).

    Returns:
        float32 array of the same shape.

    Example:
        >>> out = mri(np.random.default_rng(0).gamma(2.0, 100.0, size=(2, 16, 16)))
        >>> out.dtype, round(float(out.mean()), 4), round(float(out.std()), 4)
        (dtype('float32'), 0.0, 1.0)
    """
    clipped = clip_top(volume, percent=clip_percent)
    if not zscore:
        return clipped
    return _zscore(clipped, mean=mean, std=std)


_zscore = zscore  # `mri` and `ct` shadow the name with their flag


def looks_like_hounsfield(volume: Any) -> bool:
    """Whether a CT volume looks like it is in Hounsfield units: some air (below -500 HU) and a
    range of at least 500 HU.

    Already windowed or normalised volumes (``[0, 1]``, ``[-125, 275]``, z-scores) and volumes
    stored with the scanner's offset (air near 0 instead of -1000) fail the test.

    Args:
        volume: ``(D, H, W)`` (or any-shape) real array, numpy or torch.

    Returns:
        A Python bool.

    Example:
        >>> looks_like_hounsfield(np.array([-1000.0, 40.0, 700.0]))
        True
        >>> looks_like_hounsfield(np.array([0.0, 0.3, 1.0])), looks_like_hounsfield(
        ...     np.array([0.0, 1040.0, 1700.0]))
        (False, False)
    """
    array = _as_array(volume)
    low, high = float(np.min(array)), float(np.max(array))
    return low < -500.0 and high - low >= 500.0


def ct(
    volume: Any,
    *,
    window: tuple[float, float] = (-125.0, 275.0),
    zscore: bool = True,
    mean: float | None = None,
    std: float | None = None,
) -> np.ndarray:
    """The paper's CT intensity recipe: clip Hounsfield units to ``window``, then z-score.

    The paper z-scores with the mean and std of the (windowed) training scans; compute them with
    :func:`intensity_stats` and pass them as ``mean``/``std``. Without them each volume is
    z-scored with its own statistics.

    Args:
        volume: ``(D, H, W)`` (or any-shape) real array in HU.
        window: ``(low, high)`` HU range kept; the paper's abdominal window is [-125, 275].
        zscore: whether to z-score after windowing.
        mean: optional mean for the z-score (windowed training scans).
        std: optional std for the z-score (windowed training scans).

    Returns:
        float32 array of the same shape.

    Raises:
        ValueError: if ``window`` is not ``(low, high)`` with ``low < high``.

    Example:
        >>> ct(np.array([-1000.0, 0.0, 2000.0]), zscore=False).tolist()
        [-125.0, 0.0, 275.0]
        >>> ct(np.array([-1000.0, 0.0, 2000.0]), mean=75.0, std=200.0).tolist()
        [-1.0, -0.375, 1.0]
    """
    array = _as_array(volume)
    check_finite(array, "volume")
    low, high = (float(w) for w in window)
    if not low < high:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    if (low, high) == (-125.0, 275.0) and array.size and not looks_like_hounsfield(array):
        warnings.warn(
            f"the CT recipe expects Hounsfield units (air near -1000), but this volume's "
            f"intensities lie in [{float(array.min()):.4g}, {float(array.max()):.4g}]: already "
            "windowed or normalised (use modality 'none'), or stored with an offset (subtract "
            "the rescale intercept, e.g. 1024, first); clipping it to [-125, 275] HU would "
            "lose its contrast",
            UserWarning,
            stacklevel=2,
        )
    windowed = np.clip(array, low, high).astype(np.float32)
    if not zscore:
        return windowed
    return _zscore(windowed, mean=mean, std=std)


def _spacings(values: Any, n: int, name: str) -> tuple[float, ...]:
    if np.isscalar(values):
        values = (values,) * n
    out = tuple(float(v) for v in values)
    if len(out) != n or not all(np.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name} must be {n} positive numbers (mm), got {values}")
    return out


def resample(
    array: Any,
    spacing: Sequence[float],
    target_spacing: float | Sequence[float | None],
    *,
    order: int = 1,
) -> np.ndarray:
    """Resample an array to a new voxel spacing along every axis.

    Each axis of length ``n`` becomes ``round(n * spacing / target_spacing)`` long (at least 1);
    the voxel grids cover the same physical extent (pixel edges aligned, ``grid_mode=True``),
    so the new spacing is ``n * spacing / n_out``, ``target_spacing`` up to rounding.

    Args:
        array: ``(D, H, W)`` (or any ``ndim``) real array. Label maps: use ``order=0``.
        spacing: current voxel size per axis (mm), e.g. :attr:`fewshotseg.io.Volume.spacing`.
        target_spacing: wanted voxel size, one number for all axes or one per axis; ``None``
            keeps an axis as it is.
        order: spline order: 0 nearest (labels: keeps dtype and values), 1 linear, 3 cubic.
            Orders above 0 return float32.

    Returns:
        The resampled array.

    Raises:
        ValueError: for spacings that are not positive or do not match ``array.ndim``, or an
            order outside 0..5.

    Example:
        >>> resample(np.zeros((4, 10, 10)), (8.0, 1.0, 1.0), (4.0, 2.0, 2.0)).shape
        (8, 5, 5)
    """
    data = _as_array(array, "array")
    current = _spacings(spacing, data.ndim, "spacing")
    if np.isscalar(target_spacing) or target_spacing is None:
        target_list: list[float | None] = [target_spacing] * data.ndim  # type: ignore[list-item]
    else:
        target_list = list(target_spacing)  # type: ignore[arg-type]
    if len(target_list) != data.ndim:
        raise ValueError(
            f"target_spacing must have {data.ndim} values for an array of shape {data.shape}, "
            f"got {target_spacing}"
        )
    target = tuple(c if t is None else t for c, t in zip(current, target_list, strict=True))
    target = _spacings(target, data.ndim, "target_spacing")
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or not 0 <= order <= 5:
        raise ValueError(f"order must be an int in 0..5 (0 for label maps), got {order!r}")
    shape = tuple(
        max(1, round(n * c / t)) for n, c, t in zip(data.shape, current, target, strict=True)
    )
    if shape == data.shape:
        return data.copy() if order == 0 else data.astype(np.float32)
    if order > 0:
        check_finite(data, "array")
        data = data.astype(np.float32)
    factors = tuple(m / n for m, n in zip(shape, data.shape, strict=True))
    out = ndimage.zoom(data, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != shape:  # guard against float rounding inside zoom
        raise RuntimeError(f"resampling gave shape {out.shape}, expected {shape}")
    logger.debug("resampled %s -> %s (spacing %s -> %s)", data.shape, shape, current, target)
    return out


def resample_inplane(
    array: Any,
    spacing: Sequence[float],
    target_spacing: float | Sequence[float],
    *,
    order: int = 1,
) -> np.ndarray:
    """Resample the last two axes (``H, W``) to a new pixel spacing; ``D`` is kept.

    Args:
        array: ``(D, H, W)`` or ``(H, W)`` real array. Label maps: use ``order=0``.
        spacing: the array's spacing: 2 values ``(H, W)`` or all of them, e.g. ``(D, H, W)``
            from :attr:`fewshotseg.io.Volume.spacing` (only the last two are used).
        target_spacing: wanted in-plane spacing in mm, one number or ``(H, W)``.
        order: spline order, 0 for label maps (see :func:`resample`).

    Returns:
        ``(D, H', W')`` array with ``H' = round(H * spacing_H / target_H)`` (same for ``W``).

    Example:
        >>> resample_inplane(np.zeros((3, 100, 80)), (5.0, 1.0, 1.0), 2.0).shape
        (3, 50, 40)
        >>> lab = np.zeros((1, 4, 4), np.int32); lab[0, :2, :2] = 3
        >>> resample_inplane(lab, (1.0, 1.0), 0.5, order=0)[0, :4, :4].tolist()[0]
        [3, 3, 3, 3]
    """
    data = _as_array(array, "array")
    if data.ndim not in (2, 3):
        raise ValueError(f"expected a (D, H, W) or (H, W) array, got shape {data.shape}")
    values = tuple(spacing)
    if len(values) < 2:
        raise ValueError(f"spacing needs at least the two in-plane values (H, W), got {spacing}")
    inplane = _spacings(values[-2:], 2, "spacing")
    target = _spacings(target_spacing, 2, "target_spacing")
    full_spacing = (1.0,) * (data.ndim - 2) + inplane
    full_target = (None,) * (data.ndim - 2) + target
    return resample(data, full_spacing, full_target, order=order)


def crop_or_pad(
    array: Any,
    size: int | tuple[int, int] = (256, 256),
    *,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Centre-crop or pad the last two axes to ``size``.

    Along an axis of length ``n`` and target ``m``: if ``n > m`` the slice
    ``[(n - m) // 2 : (n - m) // 2 + m]`` is kept; if ``n < m``, ``(m - n) // 2`` values are
    padded before and the rest after. So ``crop_or_pad(crop_or_pad(x, s), x.shape[-2:])`` has
    ``x``'s shape, and equals ``x`` exactly when the first call only padded.

    Args:
        array: ``(..., H, W)`` array of any dtype (images or label maps).
        size: ``(H', W')`` or one int for both; the paper uses 256 x 256.
        pad_value: value for padded pixels (0 for labels and raw MRI; for windowed CT use the
            window's low end, e.g. -125).

    Returns:
        ``(..., H', W')`` array of the input's dtype.

    Raises:
        ValueError: for an array with fewer than 2 axes or a non-positive size.

    Example:
        >>> crop_or_pad(np.ones((2, 3)), (4, 2)).tolist()
        [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """
    data = np.asarray(array.detach().cpu().numpy() if hasattr(array, "detach") else array)
    if data.ndim < 2:
        raise ValueError(f"expected an array (..., H, W) with at least 2 axes, got {data.shape}")
    target = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if len(target) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in target):
        raise ValueError(f"size must be a positive int or (H, W) pair of them, got {size!r}")
    lead = data.ndim - 2
    slices: list[slice] = [slice(None)] * lead
    pads: list[tuple[int, int]] = [(0, 0)] * lead
    for n, m in zip(data.shape[-2:], target, strict=True):
        if n >= m:
            start = (n - m) // 2
            slices.append(slice(start, start + m))
            pads.append((0, 0))
        else:
            slices.append(slice(None))
            before = (m - n) // 2
            pads.append((before, m - n - before))
    out = data[tuple(slices)]
    if any(p != (0, 0) for p in pads):
        out = np.pad(out, pads, mode="constant", constant_values=pad_value)
    return np.ascontiguousarray(out)


INTENSITY_RECIPES: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "mri": mri,
    "ct": ct,
    "none": None,
}
"""Intensity recipes by name, as checkpoints (``modality``) and the CLI's ``--modality`` name
them; ``"none"`` passes intensities through."""


def check_modality(modality: Any, *, allow_none: bool = False, where: str = "") -> str | None:
    """``modality`` if it names an intensity recipe (or is None with ``allow_none``), else
    `ValueError`; the one check of a recipe name, for the predictor, checkpoints and the CLI.

    Example:
        >>> check_modality("mri"), check_modality(None, allow_none=True)
        ('mri', None)
        >>> check_modality("t2")
        Traceback (most recent call last):
        ...
        ValueError: modality must be one of ['ct', 'mri', 'none'], got 't2'
    """
    if (modality is None and allow_none) or modality in INTENSITY_RECIPES:
        return modality
    options = f"{sorted(INTENSITY_RECIPES)}{' or None' if allow_none else ''}"
    raise ValueError(f"{where}modality must be one of {options}, got {modality!r}")


def apply_recipe(image: Any, modality: str) -> np.ndarray:
    """Apply the named intensity recipe (``"mri"``, ``"ct"`` or ``"none"``) -> float32.

    The MRI recipe is idempotent up to rounding (clipping an already clipped volume at its
    99.5th percentile changes nothing; z-scoring a z-scored volume neither), so raw and
    preprocessed arrays give the same network input.

    Args:
        image: ``(D, H, W)`` volume or ``(H, W)`` slice (any shape), real dtype, numpy or torch.
        modality: a key of `INTENSITY_RECIPES`.

    Returns:
        float32 numpy array of the same shape (``"mri"``: z-scored, mean 0 and std 1).

    Raises:
        ValueError: an unknown ``modality``, or an empty image.
        TypeError: a bool or non-numeric image.

    Example:
        >>> apply_recipe(np.array([[[0, 2]]], dtype=np.int16), "none")
        array([[[0., 2.]]], dtype=float32)
        >>> out = apply_recipe(np.arange(24.0).reshape(2, 3, 4), "mri")
        >>> out.shape, out.dtype, round(float(out.std()), 4)
        ((2, 3, 4), dtype('float32'), 1.0)
    """
    recipe = INTENSITY_RECIPES[check_modality(modality)]
    array = _as_array(image, "image").astype(np.float32, copy=False)
    return array if recipe is None else recipe(array)
