"""Overlap and surface-distance metrics for integer label maps.

Every function takes a prediction and a target label map of the same shape (a 2D slice ``(H, W)``
or a volume ``(D, H, W)``; any number of dimensions works), as numpy arrays or torch tensors of an
integer or boolean dtype (floats are accepted when every value is a whole number). ``0`` is
background; every other value is a class. Metrics are computed per class and returned as
``dict[int, float]`` keyed by class id.

Scale: Dice and IoU are fractions in ``[0, 1]`` (multiply by 100 for the percentages that papers
report). HD95 and ASSD are in the units of ``spacing`` (millimetres when the spacing is the
voxel size in mm; voxels when ``spacing`` is ``None``).

Empty cases (a class "is present" in a map when at least one voxel has that value):

=====================  ============  ============  ================
class present in       Dice / IoU    HD95 / ASSD   counts
=====================  ============  ============  ================
prediction and target  in [0, 1]     finite, >= 0  tp, fp, fn
neither                NaN           NaN           all zero
only one of them       0.0           inf           tp = 0
=====================  ============  ============  ================

NaN means "nothing to score": it is left out of every mean (:func:`nanmean`). An organ that is
missed entirely, or predicted where there is none, is infinitely far from the other surface,
so the distances are ``inf`` rather than a silent NaN.

Example:
    >>> import numpy as np
    >>> target = np.zeros((1, 4, 4), dtype=np.int64)
    >>> target[0, :2, :2] = 1
    >>> pred = np.zeros_like(target)
    >>> pred[0, :2, :1] = 1
    >>> round(dice(pred, target)[1], 4)
    0.6667
    >>> dice(pred, target, classes=[1, 2])[2]
    nan
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from fewshotseg._checks import to_label_map

__all__ = [
    "ConfusionCounts",
    "DiceMetric",
    "as_label_map",
    "assd",
    "confusion_counts",
    "dice",
    "dice_from_counts",
    "hd95",
    "iou",
    "iou_from_counts",
    "nanmean",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


as_label_map = to_label_map
"""The label-map check of `fewshotseg.io.to_label_map` (the same function), under the name the
metrics have always used."""


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_label_map(pred, "pred")
    t = as_label_map(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {p.shape} and {t.shape}; "
            "resample the prediction to the target's grid first."
        )
    return p, t


def _classes(p: np.ndarray, t: np.ndarray, classes: Iterable[int] | None) -> list[int]:
    if classes is None:
        present = np.union1d(np.unique(p), np.unique(t))
        return [int(c) for c in present if c != 0]
    out = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"classes must be integers, got {c!r} ({type(c).__name__}).")
        if c <= 0:
            raise ValueError(f"classes must be positive label values (0 is background), got {c}.")
        out.append(int(c))
    return out


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, (int, float, np.floating, np.integer)):
        sp = (float(spacing),) * ndim
    else:
        sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(
            f"spacing must have one value per axis ({ndim}), got {len(sp)}: {spacing!r}."
        )
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}.")
    return sp


# --------------------------------------------------------------------------------------------
# overlap metrics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionCounts:
    """True positives, false positives and false negatives of one class, in voxels.

    Counts add up (``a + b``), so a 3D Dice over many slices is the Dice of the summed counts.

    Attributes:
        tp: voxels of the class in both prediction and target.
        fp: voxels predicted as the class that are not it in the target.
        fn: voxels of the class in the target that the prediction misses.

    Example:
        >>> c = ConfusionCounts(tp=3, fp=1, fn=0) + ConfusionCounts(tp=1, fp=0, fn=2)
        >>> c, round(c.dice, 4)
        (ConfusionCounts(tp=4, fp=1, fn=2), 0.7273)
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        for field in ("tp", "fp", "fn"):
            v = getattr(self, field)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{field} must be a non-negative integer, got {v!r}.")
            object.__setattr__(self, field, int(v))

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def dice(self) -> float:
        """``2 tp / (2 tp + fp + fn)`` in [0, 1]; NaN when all counts are 0.

        Example:
            >>> ConfusionCounts(tp=1, fp=1, fn=0).dice, ConfusionCounts().dice
            (0.6666666666666666, nan)
        """
        return dice_from_counts(self.tp, self.fp, self.fn)

    @property
    def iou(self) -> float:
        """``tp / (tp + fp + fn)`` in [0, 1]; NaN when all counts are 0.

        Example:
            >>> ConfusionCounts(tp=1, fp=1, fn=0).iou, ConfusionCounts().iou
            (0.5, nan)
        """
        return iou_from_counts(self.tp, self.fp, self.fn)


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice ``2 tp / (2 tp + fp + fn)``; NaN when the class is absent from both maps.

    Example:
        >>> dice_from_counts(1, 1, 0), dice_from_counts(0, 0, 0)
        (0.6666666666666666, nan)
    """
    denom = 2 * tp + fp + fn
    return float("nan") if denom == 0 else 2.0 * tp / denom


def iou_from_counts(tp: int, fp: int, fn: int) -> float:
    """Intersection over union ``tp / (tp + fp + fn)``; NaN when the class is absent from both.

    Example:
        >>> iou_from_counts(1, 1, 0)
        0.5
    """
    denom = tp + fp + fn
    return float("nan") if denom == 0 else tp / denom


def confusion_counts(
    pred: Any, target: Any, classes: Iterable[int] | None = None
) -> dict[int, ConfusionCounts]:
    """Per-class voxel counts (tp, fp, fn) of a label map against a target.

    Args:
        pred: predicted label map, any shape, integer (or bool) values, numpy or torch.
        target: ground-truth label map, same shape.
        classes: class ids to count; ``None`` = every nonzero value in either map, ascending.

    Returns:
        ``{class_id: ConfusionCounts}`` in the order of ``classes``.

    Example:
        >>> confusion_counts(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 2]))
        {1: ConfusionCounts(tp=1, fp=1, fn=1), 2: ConfusionCounts(tp=1, fp=0, fn=0)}
    """
    p, t = _pair(pred, target)
    out: dict[int, ConfusionCounts] = {}
    for c in _classes(p, t, classes):
        pc = p == c
        tc = t == c
        tp = int(np.count_nonzero(pc & tc))
        out[c] = ConfusionCounts(
            tp=tp, fp=int(np.count_nonzero(pc)) - tp, fn=int(np.count_nonzero(tc)) - tp
        )
    return out


def dice(pred: Any, target: Any, classes: Iterable[int] | None = None) -> dict[int, float]:
    """Dice coefficient per class over the whole array (a 3D Dice for a volume).

    Args:
        pred: predicted label map ``(D, H, W)`` (or any shape), integer values, numpy or torch.
        target: ground-truth label map of the same shape.
        classes: class ids to score; ``None`` = every nonzero value in either map.

    Returns:
        ``{class_id: dice}`` with dice in [0, 1]; NaN for a class absent from both maps, 0.0 for
        a class present in only one.

    Example:
        >>> dice(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
        {1: 0.8}
    """
    return {c: n.dice for c, n in confusion_counts(pred, target, classes).items()}


def iou(pred: Any, target: Any, classes: Iterable[int] | None = None) -> dict[int, float]:
    """Intersection over union (Jaccard) per class; empty cases as :func:`dice`.

    ``dice = 2 iou / (1 + iou)`` for every class.

    Example:
        >>> iou(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
        {1: 0.6666666666666666}
    """
    return {c: n.iou for c, n in confusion_counts(pred, target, classes).items()}


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN; NaN when none is left (no warning).

    Example:
        >>> nanmean([1.0, float("nan"), 0.5])
        0.75
    """
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return float("nan") if not kept else math.fsum(kept) / len(kept)


# --------------------------------------------------------------------------------------------
# surface distances
# --------------------------------------------------------------------------------------------


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: the mask minus its erosion by the face-connected cross.

    Voxels on the array border count as boundary (the outside is background).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``a`` to the surface of ``b``, and vice versa."""
    sa, sb = _surface(a), _surface(b)
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def _distance_metric(
    pred: Any,
    target: Any,
    classes: Iterable[int] | None,
    spacing: Sequence[float] | float | None,
    reduce: str,
) -> dict[int, float]:
    p, t = _pair(pred, target)
    sp = _spacing(spacing, p.ndim)
    out: dict[int, float] = {}
    for c in _classes(p, t, classes):
        pc, tc = p == c, t == c
        has_p, has_t = bool(pc.any()), bool(tc.any())
        if not has_p and not has_t:
            out[c] = float("nan")
            continue
        if has_p != has_t:
            out[c] = float("inf")
            continue
        d_pt, d_tp = _surface_distances(pc, tc, sp)
        if reduce == "hd95":
            out[c] = float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))
        else:
            out[c] = float((d_pt.sum() + d_tp.sum()) / (d_pt.size + d_tp.size))
    return out


def hd95(
    pred: Any,
    target: Any,
    classes: Iterable[int] | None = None,
    *,
    spacing: Sequence[float] | float | None = None,
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per class, spacing-aware.

    Surfaces are the voxels of a class that have a face neighbour outside it (voxels on the array
    border included). For every surface voxel of one map, the Euclidean distance (with
    ``spacing``) to the nearest surface voxel of the other is taken; HD95 is the larger of the two
    directed 95th percentiles (numpy's linear interpolation), as in MONAI and MedPy.

    Args:
        pred: predicted label map, e.g. ``(D, H, W)``, integer values, numpy or torch.
        target: ground-truth label map of the same shape.
        classes: class ids to score; ``None`` = every nonzero value in either map.
        spacing: voxel size per axis (e.g. ``(7.7, 1.25, 1.25)`` mm for ``(D, H, W)``), or one
            number for all axes; ``None`` = 1 (distances in voxels).

    Returns:
        ``{class_id: hd95}``: 0 for identical maps, ``inf`` when the class is in only one map,
        NaN when it is in neither.

    Example:
        >>> a = np.zeros((3, 4, 4), dtype=int); a[0] = 1
        >>> b = np.zeros_like(a); b[2] = 1
        >>> hd95(a, b, spacing=(7.7, 1.25, 1.25))
        {1: 15.4}
    """
    return _distance_metric(pred, target, classes, spacing, "hd95")


def assd(
    pred: Any,
    target: Any,
    classes: Iterable[int] | None = None,
    *,
    spacing: Sequence[float] | float | None = None,
) -> dict[int, float]:
    """Average symmetric surface distance per class, spacing-aware.

    The mean of the surface-to-surface distances of both directions pooled together
    (sum of all distances divided by the number of surface voxels of both maps; Heimann et al.
    2009, MONAI's symmetric average surface distance). Surfaces as in :func:`hd95`.

    Args:
        pred: predicted label map, integer values, numpy or torch.
        target: ground-truth label map of the same shape.
        classes: class ids to score; ``None`` = every nonzero value in either map.
        spacing: voxel size per axis, or one number; ``None`` = 1 (distances in voxels).

    Returns:
        ``{class_id: assd}``: 0 for identical maps, ``inf`` when the class is in only one map,
        NaN when it is in neither.

    Example:
        >>> a = np.zeros((1, 5, 5), dtype=int); a[0, 0, 0] = 1
        >>> b = np.zeros_like(a); b[0, 3, 4] = 1
        >>> assd(a, b)
        {1: 5.0}
    """
    return _distance_metric(pred, target, classes, spacing, "assd")


# --------------------------------------------------------------------------------------------
# accumulator
# --------------------------------------------------------------------------------------------


class DiceMetric:
    """Accumulates per-class counts over many calls (slices, chunks) for one 3D Dice.

    The class-and-function pair of MONAI's ``DiceMetric`` / ``compute_dice``: ``update`` adds the
    counts of one prediction/target pair; ``compute`` returns the Dice of the summed counts, which
    equals :func:`dice` on the concatenated arrays.

    Args:
        classes: class ids to track; ``None`` = every nonzero value seen in any update.

    Example:
        >>> m = DiceMetric(classes=[1])
        >>> m.update(np.array([1, 0]), np.array([1, 1]))
        >>> m.update(np.array([0, 0]), np.array([0, 0]))
        >>> round(m.compute()[1], 4)
        0.6667
    """

    def __init__(self, *, classes: Iterable[int] | None = None) -> None:
        self._fixed = None if classes is None else _classes(np.zeros(0), np.zeros(0), classes)
        self.reset()

    def reset(self) -> None:
        """Forget every count (the fixed ``classes`` stay, at zero).

        Example:
            >>> m = DiceMetric(classes=[1]); m.update(np.array([1, 1]), np.array([1, 0]))
            >>> m.reset(); m.counts
            {1: ConfusionCounts(tp=0, fp=0, fn=0)}
        """
        self._counts: dict[int, ConfusionCounts] = {c: ConfusionCounts() for c in self._fixed or ()}

    def update(self, pred: Any, target: Any) -> None:
        """Add the counts of one prediction/target pair.

        Args:
            pred: predicted label map (a slice ``(H, W)``, a chunk ``(D, H, W)``, any shape),
                integer values, numpy or torch.
            target: ground-truth label map of the same shape.

        Example:
            >>> m = DiceMetric()
            >>> m.update(np.array([[0, 2], [2, 2]]), np.array([[0, 2], [0, 2]]))
            >>> m.update(np.array([0, 1]), np.array([0, 1]))
            >>> m.counts
            {1: ConfusionCounts(tp=1, fp=0, fn=0), 2: ConfusionCounts(tp=2, fp=1, fn=0)}
        """
        for c, n in confusion_counts(pred, target, self._fixed).items():
            self._counts[c] = self._counts.get(c, ConfusionCounts()) + n

    @property
    def counts(self) -> Mapping[int, ConfusionCounts]:
        """The summed counts per class so far (``{class_id: ConfusionCounts}``, a copy).

        Example:
            >>> m = DiceMetric(); m.update(np.array([1, 2, 2]), np.array([1, 1, 2]))
            >>> m.counts
            {1: ConfusionCounts(tp=1, fp=0, fn=1), 2: ConfusionCounts(tp=1, fp=1, fn=0)}
        """
        return dict(sorted(self._counts.items()) if self._fixed is None else self._counts.items())

    def compute(self) -> dict[int, float]:
        """Dice per class of the summed counts (NaN for a class never seen in either map).

        Returns:
            ``{class_id: dice}`` with dice a float in [0, 1] or NaN.

        Example:
            >>> m = DiceMetric(classes=[1, 2]); m.update(np.array([1, 1]), np.array([1, 0]))
            >>> m.compute()
            {1: 0.6666666666666666, 2: nan}
        """
        return {c: n.dice for c, n in self.counts.items()}
