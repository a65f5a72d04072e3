"""The paper protocol's choice of slices: which support slices and which query chunks.

The SSL-ALPNet paper's protocol (from SE-Net; METHOD.md pins it) pairs, per class, the centres
of ``parts`` equal portions of the class's support slices (:func:`support_slice_indices`) with
``parts`` equal chunks of the class's range in the query (:func:`query_chunks`).
`fewshotseg.evaluation` runs the protocol with these; `fewshotseg.volume` reuses the chunk rule
(:func:`chunk_centres`, :func:`chunk_of`) on an aligned range instead of the query's labels.

Example:
    >>> lab = np.zeros((20, 4, 4), dtype=int); lab[5:15, 1, 1] = 1   # slices 5..14
    >>> support_slice_indices(lab, 1), [len(c) for c in query_chunks(lab, 1)]
    ([6, 10, 13], [3, 3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fewshotseg._checks import to_label_map
from fewshotseg.folds import _check_class

__all__ = [
    "chunk_centres",
    "chunk_of",
    "class_slices",
    "query_chunks",
    "support_slice_indices",
]


def _volume_labels(labels: Any, name: str) -> np.ndarray:
    lab = to_label_map(labels, name)
    if lab.ndim != 3:
        raise ValueError(
            f"{name} must be a (D, H, W) label volume with slices along axis 0, got shape "
            f"{lab.shape}; add a leading axis for a single slice (labels[None])."
        )
    return lab


def _check_parts(parts: Any) -> int:
    if isinstance(parts, bool) or not isinstance(parts, (int, np.integer)) or parts < 1:
        raise ValueError(f"parts must be a positive integer (the paper uses 3), got {parts!r}.")
    return int(parts)


def class_slices(labels: Any, cls: int) -> list[int]:
    """Indices of the slices (axis 0) that contain at least one voxel of ``cls``, ascending.

    Args:
        labels: ``(D, H, W)`` integer label volume, numpy or torch.
        cls: class label value.

    Example:
        >>> lab = np.zeros((5, 2, 2), dtype=int); lab[1:3, 0, 0] = 7
        >>> class_slices(lab, 7)
        [1, 2]
    """
    lab = _volume_labels(labels, "labels")
    cls = _check_class(cls)
    return [int(z) for z in np.flatnonzero((lab == cls).any(axis=(1, 2)))]


def support_slice_indices(labels: Any, cls: int, *, parts: int = 3) -> list[int]:
    """The protocol's support slices of one class in a support volume.

    With ``lst`` the slices containing ``cls`` (ascending), returns ``lst[int(p * len(lst))]`` for
    ``p = (2 i + 1) / (2 parts)``, ``i = 0 .. parts - 1``: ``p = 1/6, 1/2, 5/6`` for the paper's
    ``parts = 3`` (the centres of ``parts`` equal portions of the class's slices). With fewer
    slices than ``parts``, indices repeat.

    Args:
        labels: ``(D, H, W)`` integer label volume of the support scan, numpy or torch.
        cls: class label value.
        parts: number of support slices (= query chunks).

    Returns:
        ``parts`` slice indices into axis 0, non-decreasing.

    Raises:
        ValueError: ``cls`` is in no slice of ``labels`` (choose a support scan that has it).

    Example:
        >>> lab = np.zeros((20, 4, 4), dtype=int); lab[5:15, 1, 1] = 1   # slices 5..14
        >>> support_slice_indices(lab, 1)
        [6, 10, 13]
    """
    parts = _check_parts(parts)
    lst = class_slices(labels, cls)
    if not lst:
        raise ValueError(
            f"class {cls} appears in no slice of the support volume; pick a support scan that "
            "contains every evaluated class, or leave the class out of `classes`."
        )
    return chunk_centres(lst, parts)


def chunk_centres(slices: Sequence[int], parts: int) -> list[int]:
    """The centres of ``parts`` equal portions of a class's ascending slice indices:
    ``slices[int(p * len(slices))]`` for ``p = (2 i + 1) / (2 parts)``.

    Example:
        >>> chunk_centres(list(range(5, 15)), 3)
        [6, 10, 13]
    """
    return [int(slices[int(((2 * i + 1) / (2 * parts)) * len(slices))]) for i in range(parts)]


def chunk_of(z: float, z_min: int, z_max: int, parts: int) -> int:
    """The chunk (0 .. parts - 1) of slice position ``z`` in a class's range ``[z_min, z_max]``:
    METHOD.md's formula; positions before / after the range go to the first / last chunk, and
    a single-slice range to the middle chunk.

    Example:
        >>> [chunk_of(z, 5, 14, 3) for z in (0, 5, 8, 9, 14, 20)]
        [0, 0, 1, 1, 2, 2]
    """
    if z < z_min:
        return 0
    if z > z_max:
        return parts - 1
    if z_max == z_min:
        return parts // 2
    return min(parts - 1, int((z - z_min) // ((z_max - z_min) / parts)))


def query_chunks(
    labels: Any, cls: int, *, parts: int = 3, whole_volume: bool = False
) -> list[list[int]]:
    """Split a query volume's slices into the protocol's chunks for one class.

    The range ``[z_min, z_max]`` of ``cls`` comes from the query's own ground truth (the
    protocol's known leak). Slice ``z`` in the range goes to chunk
    ``min(parts - 1, int((z - z_min) // ((z_max - z_min) / parts)))``; a range of one slice
    (``z_max == z_min``, where the formula divides by zero) goes to the middle chunk
    ``parts // 2``. Slices inside the range that happen not to contain the class are included.

    With ``whole_volume=True`` every slice is assigned: below ``z_min`` to chunk 0, above
    ``z_max`` to chunk ``parts - 1``; when the class is absent from the query, the whole volume
    ``[0, D - 1]`` is split with the same formula (relative position).

    Args:
        labels: ``(D, H, W)`` integer label volume of the query scan, numpy or torch.
        cls: class label value.
        parts: number of chunks (the paper uses 3).
        whole_volume: assign every slice, not only the ground-truth range.

    Returns:
        ``parts`` ascending lists of slice indices (possibly empty; all empty when the class is
        absent and ``whole_volume`` is False).

    Example:
        >>> lab = np.zeros((14, 4, 4), dtype=int); lab[3:12, 1, 1] = 2   # range 3..11
        >>> query_chunks(lab, 2)
        [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
        >>> query_chunks(lab, 2, whole_volume=True)[0]
        [0, 1, 2, 3, 4, 5]
    """
    parts = _check_parts(parts)
    lab = _volume_labels(labels, "labels")
    present = class_slices(lab, cls)
    chunks: list[list[int]] = [[] for _ in range(parts)]
    if present:
        z_min, z_max = present[0], present[-1]
    elif whole_volume:
        z_min, z_max = 0, lab.shape[0] - 1
    else:
        return chunks
    zs = range(lab.shape[0]) if whole_volume else range(z_min, z_max + 1)
    for z in zs:
        chunks[chunk_of(z, z_min, z_max, parts)].append(z)
    return chunks
