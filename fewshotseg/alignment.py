"""Slice-to-slice alignment of two volumes by anatomy (dynamic time warping).

`fewshotseg.volume` uses it to carry each class's extent from a labelled support volume to a
query volume: scans start and end at different heights and have different slice counts, so the
slice index alone does not say where a query slice is in the body.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0); support = torch.rand(6, 8, 8, 8)  # (D_s, F, h, w) features
    >>> align_slices(support[2:], support)  # a query that is support slices 2..5
    array([2., 3., 4., 5.])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["align_slices", "dtw_path", "slice_descriptors"]


def slice_descriptors(features: Tensor, grid: int = 4) -> np.ndarray:
    """One descriptor per slice that says where in the body the slice is.

    Features ``(D, F, h, w)`` are average-pooled to a ``grid`` x ``grid`` layout (which
    structures are where in the plane), flattened, centred by the volume's mean descriptor
    (what all its slices share, e.g. the scanner's contrast, says nothing about depth) and
    L2-normalised -> ``(D, F grid²)`` float64.

    Why this and not global pooling: on CHAOS fold 0's training patients (240 support/query
    pairs) the organ extents this alignment transfers overlap the true ones by 0.72 IoU, against
    0.70 uncentred, 0.66 for relative depth, and 0.50 for mean/max-pooled global descriptors
    (one support), which collapse many query slices onto one support slice.

    Example:
        >>> d = slice_descriptors(torch.rand(5, 8, 16, 16))  # (D, F, h, w)
        >>> d.shape, d.dtype, np.allclose(np.linalg.norm(d, axis=1), 1.0)
        ((5, 128), dtype('float64'), True)
    """
    pooled = torch.nn.functional.adaptive_avg_pool2d(features.float(), grid).flatten(1)
    centred = pooled - pooled.mean(0, keepdim=True)
    return torch.nn.functional.normalize(centred, dim=1).cpu().double().numpy()


def dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The monotonic alignment of least total cost (dynamic time warping).

    Args:
        cost: ``(n, m)`` pairwise costs.

    Returns:
        The path as ``(i, j)`` pairs from ``(0, 0)`` to ``(n - 1, m - 1)``, each step moving
        ``i``, ``j`` or both by one.

    Example:
        >>> dtw_path(np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
        [(0, 0), (1, 1), (1, 2)]
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        row = cost[i - 1]
        for j in range(1, m + 1):
            acc[i, j] = row[j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path = [(n - 1, m - 1)]
    i, j = n, m
    while (i, j) != (1, 1):
        steps = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(steps, key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    return path[::-1]


def align_slices(query_features: Tensor, support_features: Tensor) -> np.ndarray:
    """Each query slice's position in the support volume, by anatomy.

    Args:
        query_features: ``(D, F, h, w)``.
        support_features: ``(D_s, F, h, w)``.

    Returns:
        ``(D,)`` float array: for each query slice, the support slice it is aligned with (of
        those the warping path pairs it with, the most similar one; a path must visit every
        support slice, so a support slice the query lacks is paired with a neighbour too).

    Example:
        >>> _ = torch.manual_seed(0); support = torch.rand(6, 8, 8, 8)  # (D_s, F, h, w)
        >>> align_slices(support[1:5], support)  # a query that is support slices 1..4
        array([1., 2., 3., 4.])
    """
    query, support = slice_descriptors(query_features), slice_descriptors(support_features)
    return _aligned_positions(query, support)


def _aligned_positions(query: np.ndarray, support: np.ndarray) -> np.ndarray:
    """`align_slices` on descriptors ``(D, d)`` and ``(D_s, d)`` (see `slice_descriptors`)."""
    cost = 1.0 - query @ support.T
    best = np.full(len(query), -1)
    for i, j in dtw_path(cost):
        if best[i] < 0 or cost[i, j] < cost[i, best[i]]:
            best[i] = j
    return best.astype(np.float64)
