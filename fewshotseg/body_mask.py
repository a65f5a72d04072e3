"""Where the body is: the automatic body threshold, the body mask, and how much it covers.

The body mask separates **air or background from any tissue**, so its threshold comes from the
background's own statistics, not from a two-class split of the whole image (the previous rule,
half the Otsu threshold, splits bright fluid or blood from everything else on MRI with a bright
blood pool, and half of that cuts through liver and muscle). For one slice or volume:

1. **No structure, no body.** If neighbouring voxels are uncorrelated (correlation below
   :data:`MIN_NEIGHBOUR_CORRELATION`), the image is noise: the mask is empty.
2. **Background mode.** Voxels exactly at the minimum (zero padding, clipping) are set aside;
   the lowest *clear* mode of the histogram of the others is the background (MRI: Rician noise
   near 0; CT in HU: air near -1000). Its position is the level; its half width at half
   maximum, divided by 1.1774, the noise sigma (the bright side, at most
   :data:`MAX_ASYMMETRY` times the dark side). A histogram of the whole range finds it, a
   second one zoomed in on it measures it; bins are whole multiples of the data's step, so
   integer scans bin evenly.
3. **Threshold**, the first that applies:

   - ``"noise"``: ``level + NOISE_SIGMAS * noise``, when that is below the previous rule's
     threshold (half the Otsu threshold of the voxels above the minimum, normalised between
     their 0.5th and 99.5th percentiles): the new rule only ever lowers the threshold, and a
     tissue mode (fat on windowed CT) is not taken for the background;
   - ``"clipped"``: just above the minimum, when at least :data:`CLIPPED_FRACTION` of the
     voxels sit exactly there and few just above it (CT windowed to ``[0, 1]``: air clipped;
     zero-padded MRI has its noise just above the zeros and does not qualify);
   - ``"otsu"``: the previous rule, when no background was found.

4. **Mask.** Voxels above the threshold, the largest connected component (8-connected in 2D,
   26 in 3D), a 3 x 3 closing (twice) and hole filling per slice, as before.

The rule has no dataset constant and is invariant to ``a * x + b`` (``a > 0``) up to
floating-point rounding. :class:`BodyCoverage` checks the result per scan: the share of the
field of view in the mask, and the share of *non-air* voxels (:func:`non_air_mask`: above the
background by :data:`NON_AIR_SIGMAS` noise sigmas, isolated specks removed) that it keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from fewshotseg._regions import full_structure, largest_component

__all__ = [
    "Background",
    "BodyCoverage",
    "body_mask",
    "estimate_background",
    "non_air_mask",
]

Rule = Literal["noise", "clipped", "otsu", "no body"]

#: The body threshold is this many noise sigmas above the background level.
NOISE_SIGMAS = 5.0
#: The permissive non-air estimate of the coverage report: this many noise sigmas.
NON_AIR_SIGMAS = 3.0
#: The previous rule, the bound of the noise rule and the fallback when no background is found:
#: this fraction of the Otsu threshold (normalised between the 0.5th and 99.5th percentiles).
OTSU_FRACTION = 0.5
#: An image whose neighbouring voxels correlate less than this is noise: no body.
MIN_NEIGHBOUR_CORRELATION = 0.2
#: A clipped background (CT windowed to [0, 1]: air at the minimum): at least this share of
#: the voxels exactly at the minimum, and few just above it: at most CLIPPED_NEAR times as many
#: within CLIPPED_GAP of the range (zero-padded MRI has its noise there).
CLIPPED_FRACTION = 0.01
CLIPPED_GAP = 0.02
CLIPPED_NEAR = 0.1
#: Histogram bins between the minimum and the 99.5th percentile (fewer for small images).
N_BINS = 512
#: A histogram peak is a clear mode when, within 1/16 of the range either side, the counts fall
#: by this share of its height.
CLEAR_DIP = 0.4
#: The background's bright half width is taken as at most this many times its dark one.
MAX_ASYMMETRY = 4.0
#: :meth:`BodyCoverage.warning` fires below these shares.
MIN_NON_AIR_KEPT = 0.9
MIN_BODY_FRACTION = 0.03
#: A superpixel is usable in a slice with at least this many pixels there (the default
#: ``min_foreground`` of :class:`fewshotseg.EpisodeSampler`, which counts after resizing).
USABLE_PIXELS = 100

_HWHM_PER_SIGMA = math.sqrt(2 * math.log(2))  # 1.1774: half width at half maximum / sigma
_ZOOM_SIGMAS = 12.0  # the second histogram spans the minimum to the mode + this many sigmas
_VALLEY_RISE = 0.1  # a rise of 10 % after a fall ends the search for the half height
_SMOOTHING = 1.0  # Gaussian smoothing of the histogram, in bins
_CLOSING_ITERATIONS = 2  # 3 x 3 closing applied twice: bridges gaps up to ~4 pixels


@dataclass(frozen=True)
class Background:
    """The background of one slice or volume, in the image's own units.

    Attributes:
        level: the background intensity (the lowest clear histogram mode; the minimum for a
            clipped background); ``nan`` when none was found.
        noise: its noise sigma (0 when not measured).
        rule: which rule chose ``threshold`` (see the module's docstring): ``"noise"``,
            ``"clipped"``, ``"otsu"`` (the previous rule: no background found) or
            ``"no body"`` (uncorrelated noise; the threshold is the maximum, nothing is above).
        threshold: the body threshold: voxels above it may be body.
        non_air_threshold: the permissive threshold of :func:`non_air_mask`
            (``<= threshold``).
    """

    level: float
    noise: float
    rule: Rule
    threshold: float
    non_air_threshold: float


def estimate_background(image: np.ndarray) -> Background | None:
    """The background level, its noise and the body threshold of one slice or volume.

    Args:
        image: float ``(H, W)`` or ``(D, H, W)`` array in its own units (MRI, CT in HU,
            windowed CT); all of it is one unit of statistics.

    Returns:
        A :class:`Background` (floats in the image's units), or ``None`` for a constant image.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> yy, xx = np.mgrid[:64, :64]; body = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
        >>> image = np.abs(body * 60 + rng.normal(0, 2, (64, 64)) + 1j * rng.normal(0, 2, (64, 64)))
        >>> bg = estimate_background(image)  # MRI magnitude: Rician noise, mode near sigma = 2
        >>> bg.rule, 1 < bg.level < 3, 5 < bg.threshold < 25
        ('noise', True, True)
        >>> estimate_background(rng.normal(0, 1, (64, 64))).rule  # noise only
        'no body'
        >>> estimate_background(np.clip(image / 60 - 0.5, 0, 1)).rule  # background clipped to 0
        'clipped'

    """
    image = np.asarray(image, dtype=np.float64)
    values = image.ravel()
    minimum = float(values.min())
    above = values[values > minimum]
    if above.size == 0:
        return None
    if not _has_structure(image):
        top = float(values.max())
        return Background(float("nan"), 0.0, "no body", top, top)
    low, high = (float(v) for v in np.percentile(above, (0.5, 99.5)))
    if not high > low:
        low, high = float(above.min()), float(above.max())
    previous = low + OTSU_FRACTION * (_otsu(above, low, high) - low)
    mode = _lowest_mode(above[above <= high], minimum, high) if high > low else None
    if mode is not None and mode[0] + NOISE_SIGMAS * mode[1] <= previous:
        level, noise = mode
        return Background(
            level, noise, "noise", level + NOISE_SIGMAS * noise, level + NON_AIR_SIGMAS * noise
        )
    n_minimum = values.size - above.size
    n_near = int(np.count_nonzero(above <= minimum + CLIPPED_GAP * (high - minimum)))
    if n_minimum >= CLIPPED_FRACTION * values.size and n_near <= CLIPPED_NEAR * n_minimum:
        cut = minimum + 0.5 * (float(above.min()) - minimum)
        return Background(minimum, 0.0, "clipped", cut, cut)
    return Background(float("nan"), 0.0, "otsu", previous, previous)


def _otsu(values: np.ndarray, low: float, high: float, n_bins: int = 256) -> float:
    """Otsu's threshold of ``values`` clipped to ``[low, high]``, from a histogram of
    ``n_bins``; where several thresholds tie (an empty gap between two classes), the middle
    of them (scikit-image takes the first, just above the darker class)."""
    if not high > low:
        return low
    width = (high - low) / n_bins
    index = np.clip(((values - low) / width).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.float64)
    centres = low + (np.arange(n_bins) + 0.5) * width
    weight = np.cumsum(counts)[:-1]  # voxels at or below each candidate threshold
    total = weight[-1] + counts[-1]
    sums = np.cumsum(counts * centres)[:-1]
    mean_low = sums / np.maximum(weight, 1)
    mean_high = (sums[-1] + counts[-1] * centres[-1] - sums) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (mean_low - mean_high) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(low + (0.5 * (best[0] + best[-1]) + 1) * width)


def _has_structure(image: np.ndarray) -> bool:
    """Whether neighbouring voxels are correlated (a body is; white noise is not)."""
    a, b = image[..., :-1].ravel(), image[..., 1:].ravel()
    if a.size < 2:
        return True
    a, b = a - a.mean(), b - b.mean()  # sums, not a @ b: BLAS threads cost more than this
    denominator = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return denominator == 0 or float(np.sum(a * b)) / denominator >= MIN_NEIGHBOUR_CORRELATION


def _lowest_mode(values: np.ndarray, minimum: float, high: float) -> tuple[float, float] | None:
    """(position, sigma) of the lowest clear mode of ``values`` (all in ``(minimum, high]``):
    found on a histogram of the whole range, then measured again on one zoomed in on it."""
    if values.size < 2:
        return None
    resolution = _resolution(values, high - minimum)
    coarse = _histogram_mode(values, minimum, high, resolution)
    if coarse is None:
        return None
    level, sigma, width = coarse
    spread = max(sigma, width)
    top = min(high, level + _ZOOM_SIGMAS * spread)
    fine = _histogram_mode(
        values[values <= top],
        minimum,
        top,
        resolution,
        near=(level - 2 * spread, level + 2 * spread),
    )
    level, sigma = coarse[:2] if fine is None else fine[:2]
    return float(level), float(sigma)


def _histogram_mode(
    values: np.ndarray,
    minimum: float,
    high: float,
    resolution: float,
    near: tuple[float, float] | None = None,
) -> tuple[float, float, float] | None:
    """(position, sigma, bin width) of a mode of a histogram of ``values`` on ``(minimum, high]``:
    the lowest clear peak, or the highest bin between ``near``'s bounds; the sigma from the half
    width at half maximum on the bright side."""
    from scipy.signal import find_peaks

    n_bins = int(np.clip(np.sqrt(values.size), 32, N_BINS))
    width = (high - minimum) / n_bins
    if resolution > 0:  # whole multiples of the data's step: integer scans bin evenly
        width = resolution * max(1, round(width / resolution))
    start = minimum + 0.5 * min(resolution, width) if resolution > 0 else minimum
    n_bins = max(1, math.ceil((high - start) / width))
    index = np.floor((values - start) / width).astype(np.int64)
    counts = np.bincount(index[(index >= 0) & (index < n_bins)], minlength=n_bins)
    smooth = ndi.gaussian_filter1d(counts.astype(np.float64), _SMOOTHING, mode="constant")
    centres = start + (np.arange(n_bins) + 0.5) * width
    if near is not None:
        inside = np.flatnonzero((centres >= near[0]) & (centres <= near[1]))
        if inside.size == 0:
            return None
        peak = int(inside[np.argmax(smooth[inside])])
    else:
        padded = np.concatenate([[0.0], smooth, [0.0]])  # a mode in the first bin is a peak
        window = max(4, n_bins // 16)
        peaks, props = find_peaks(padded, prominence=0, wlen=2 * window + 1)
        # clear: it falls to (1 - CLEAR_DIP) of its height within the window on both sides,
        # and stands out of the counting noise (3 Poisson sigmas)
        prominences = props["prominences"]
        clear = (prominences >= CLEAR_DIP * padded[peaks]) & (
            prominences >= 3 * np.sqrt(padded[peaks])
        )
        if not clear.any():
            return None
        peak = int(peaks[clear][0]) - 1
    half = 0.5 * smooth[peak]
    # the bright side holds the background's tail (noise, ghosts) but may run into tissue
    # before half height; the dark side holds background only. The bright side, at most
    # MAX_ASYMMETRY times the dark side.
    bright = _half_width(smooth, peak, half, 1)
    dark = _half_width(smooth, peak, half, -1)
    if bright is None and dark is None:
        return None
    if dark is None:
        hwhm = bright
    elif bright is None:
        hwhm = dark
    else:
        hwhm = min(bright, MAX_ASYMMETRY * dark)
    sigma = hwhm / _HWHM_PER_SIGMA  # in bins, of the smoothed histogram
    sigma = math.sqrt(max(sigma**2 - _SMOOTHING**2 - 1 / 12, 0.25))  # less smoothing, binning
    return float(centres[peak]), sigma * width, width


def _half_width(smooth: np.ndarray, peak: int, half: float, step: int) -> float | None:
    """Bins from ``peak`` to where ``smooth`` falls to ``half``, going ``step`` (-1 or +1);
    ``None`` when it rises again (a valley) or the histogram ends before that."""
    i = peak
    while 0 <= i + step < smooth.size:
        nxt = i + step
        if smooth[nxt] <= half:  # interpolate between the bins either side of half height
            return abs(i - peak) + (smooth[i] - half) / (smooth[i] - smooth[nxt])
        if smooth[nxt] > smooth[i] * (1 + _VALLEY_RISE) and abs(nxt - peak) > 1:
            return None
        i = nxt
    return None


def _resolution(values: np.ndarray, span: float) -> float:
    """The data's smallest step between distinct values (0 for continuous data)."""
    sample = values[:: max(1, values.size // 200_000)]
    gaps = np.diff(np.unique(sample))
    gaps = gaps[gaps > 1e-9 * span]
    if gaps.size == 0:
        return 0.0
    step = float(gaps.min())
    return step if step > span / (4 * N_BINS) else 0.0


def body_mask(image: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
    """The body mask of one slice or volume.

    Voxels above the threshold, the largest connected component over the whole array
    (8-connected in 2D, 26 in 3D), a 3 x 3 closing (twice) and hole filling per slice.

    Args:
        image: float ``(H, W)`` or ``(D, H, W)`` array in its own units.
        threshold: in the image's units; ``None``: automatic
            (:func:`estimate_background`).

    Returns:
        bool array of ``image``'s shape; all False for a constant image.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> yy, xx = np.mgrid[:64, :64]; body = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
        >>> image = np.hypot(*rng.normal(0, 2, (2, 64, 64))) + body * 30
        >>> mask = body_mask(image)
        >>> mask.dtype, bool((mask == body).mean() > 0.99)
        (dtype('bool'), True)
        >>> bool(body_mask(image, threshold=1e3).any())  # an explicit threshold, in image units
        False
    """
    image = np.asarray(image, dtype=np.float64)
    if threshold is None:
        background = estimate_background(image)
        if background is None:
            return np.zeros(image.shape, bool)
        threshold = background.threshold
    mask = largest_component(image > threshold)
    if mask.ndim == 2:
        return _close_and_fill(mask)
    return np.stack([_close_and_fill(s) for s in mask])


def non_air_mask(image: np.ndarray, background: Background | None) -> np.ndarray:
    """Voxels that are not air: above the background by a few noise sigmas, specks removed.

    A permissive foreground estimate (no connected-component step) that the coverage report
    compares the body mask with; a 3 x 3 opening per slice removes isolated noise.

    Args:
        image: float ``(H, W)`` or ``(D, H, W)`` array.
        background: its :func:`estimate_background` (``None``: a constant image, no voxel).

    Returns:
        bool array of ``image``'s shape.

    Example:
        >>> image = np.zeros((16, 16)); image[4:12, 4:12] = 5.0; image[0, 0] = 5.0  # a speck
        >>> non_air_mask(image, estimate_background(image)).sum()  # the 8 x 8 square only
        np.int64(64)
    """
    if background is None:
        return np.zeros(np.shape(image), bool)
    above = np.asarray(image) > background.non_air_threshold
    structure = full_structure(2)
    if above.ndim == 2:
        return ndi.binary_opening(above, structure=structure)
    return np.stack([ndi.binary_opening(s, structure=structure) for s in above])


@dataclass(frozen=True)
class BodyCoverage:
    """How much of one scan the body mask covers, and what it leaves to sample.

    The pseudolabel step's check per scan (:meth:`fewshotseg.SuperpixelPseudolabeler.label_many`
    with ``return_reports=True``, the ``fewshotseg pseudolabel`` command).

    Attributes:
        name: the scan's name (its file name, or ``"volume i"``).
        shape: the scan's shape.
        body_fraction: share of the field of view (all voxels) inside the body mask.
        non_air_kept: share of the non-air voxels (:func:`non_air_mask`, an estimate that does
            not depend on the body threshold) inside the body mask; ``nan`` when no voxel is
            non-air.
        superpixels_per_slice: usable superpixels (at least :data:`USABLE_PIXELS` pixels in
            the slice) per slice, averaged over the slices with a body; 0 without any.
        empty_slices: slices with no body.

    Example:
        >>> report = BodyCoverage("scan_1", (36, 256, 256), 0.41, 0.995, 21.3, 0)
        >>> print(report)
        scan_1: body 41.0 % of the view, non-air kept 99.5 %, 21.3 superpixels per slice
        >>> report.warning() is None
        True
        >>> BodyCoverage("heart.nii.gz", (12, 192, 192), 0.09, 0.31, 6.0, 0).warning()[:70]
        'heart.nii.gz (12, 192, 192): the body mask keeps 31.0 % of the non-air'
    """

    name: str
    shape: tuple[int, ...]
    body_fraction: float
    non_air_kept: float
    superpixels_per_slice: float
    empty_slices: int

    def __str__(self) -> str:
        kept = "-" if math.isnan(self.non_air_kept) else f"{100 * self.non_air_kept:.1f} %"
        n = self.empty_slices
        empty = f", {n} slice{'s' if n > 1 else ''} without body" if n else ""
        return (
            f"{self.name}: body {100 * self.body_fraction:.1f} % of the view, non-air kept "
            f"{kept}, {self.superpixels_per_slice:.1f} superpixels per slice{empty}"
        )

    def warning(self) -> str | None:
        """One line saying what looks wrong and what to do, or ``None`` when nothing does."""
        where = f"{self.name} {self.shape}"
        advice = (
            "check the modality (MRI or CT), or pass body_threshold= in the scan's units "
            "(fewshotseg pseudolabel --body-threshold)"
        )
        if self.non_air_kept < MIN_NON_AIR_KEPT:  # False for nan
            return (
                f"{where}: the body mask keeps {100 * self.non_air_kept:.1f} % of the non-air "
                f"voxels (covers {100 * self.body_fraction:.1f} % of the field of view); "
                f"{advice}"
            )
        if self.body_fraction < MIN_BODY_FRACTION:
            return (
                f"{where}: the body mask covers {100 * self.body_fraction:.1f} % of the field "
                f"of view (no body found?); {advice}"
            )
        return None

    @classmethod
    def measure(cls, labels: np.ndarray, n_non_air: int, n_kept: int, *, name: str) -> BodyCoverage:
        """The report of one labelled scan.

        Args:
            labels: ``(H, W)`` or ``(D, H, W)`` integer pseudolabels, 0 outside the body.
            n_non_air: non-air voxels of the scan (:func:`non_air_mask`).
            n_kept: how many of them are inside the body.
            name: the scan's name.

        Returns:
            The report.

        Example:
            >>> labels = np.zeros((2, 16, 16), np.int32); labels[0, 2:14, 2:14] = 1
            >>> report = BodyCoverage.measure(labels, 150, 144, name="scan")
            >>> report.body_fraction, report.non_air_kept, report.superpixels_per_slice
            (0.28125, 0.96, 1.0)
        """
        labels = np.asarray(labels)
        slices = labels.reshape(-1, *labels.shape[-2:])
        counts = [np.bincount(s.ravel())[1:] for s in slices]
        with_body = [c for c in counts if c.sum() > 0]
        usable = [int(np.count_nonzero(c >= USABLE_PIXELS)) for c in with_body]
        return cls(
            name=name,
            shape=tuple(labels.shape),
            body_fraction=float(np.count_nonzero(labels)) / labels.size,
            non_air_kept=n_kept / n_non_air if n_non_air else float("nan"),
            superpixels_per_slice=float(np.mean(usable)) if usable else 0.0,
            empty_slices=len(counts) - len(with_body),
        )


def _close_and_fill(mask: np.ndarray) -> np.ndarray:
    """2D closing (padded, so the image border does not erode the mask) and hole filling."""
    if not mask.any():
        return mask
    pad = _CLOSING_ITERATIONS
    padded = np.pad(mask, pad)
    closed = ndi.binary_closing(
        padded, structure=full_structure(2), iterations=_CLOSING_ITERATIONS
    )[pad:-pad, pad:-pad]
    return ndi.binary_fill_holes(closed | mask)
