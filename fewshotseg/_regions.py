"""Connected regions of a label map: split every label into its connected pieces, merge pieces
that are too small into the neighbour they share the longest border with, renumber ``1..n``.

The clean-up step of `fewshotseg.superpixels` (step 4 of its docstring), for 2D slices and 3D
volumes alike: connectivity is full (8 neighbours in 2D, 26 in 3D). Private: the pseudolabeler
is the public way in.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import ndimage as ndi


def full_structure(ndim: int) -> np.ndarray:
    """The full 3 x 3 (x 3) neighbourhood: 8-connectivity in 2D, 26 in 3D."""
    return np.ones((3,) * ndim, dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a boolean mask (the mask itself if it has one)."""
    labels, n = ndi.label(mask, structure=full_structure(mask.ndim))
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def finalise(seg: np.ndarray, mask: np.ndarray, min_area: int) -> np.ndarray:
    """Mask, split into connected pieces, merge small pieces, renumber 1..n."""
    seg = np.where(mask, seg.astype(np.int64) + 1, 0)  # +1: a segment id 0 inside the body
    pieces = split_connected(seg)
    if min_area > 0:
        pieces = merge_small(pieces, min_area)
    present = np.flatnonzero(np.bincount(pieces.ravel()))  # sorted ids in use (0 if outside)
    lookup = np.zeros(int(present[-1]) + 1, np.int32)
    lookup[present] = np.arange(len(present), dtype=np.int32)
    out = lookup[pieces]
    if not mask.all():
        return out  # 0 was present (outside the body) and kept id 0
    return out + 1


def split_connected(seg: np.ndarray) -> np.ndarray:
    """Give every 8-/26-connected piece of every non-zero label its own id."""
    out = np.zeros(seg.shape, np.int64)
    structure = full_structure(seg.ndim)
    next_id = 1
    for label, box in enumerate(ndi.find_objects(seg), start=1):
        if box is None:
            continue
        inside = seg[box] == label
        pieces, n = ndi.label(inside, structure=structure)
        view = out[box]
        view[inside] = pieces[inside] + (next_id - 1)
        next_id += n
    return out


def neighbour_offsets(ndim: int) -> list[tuple[int, ...]]:
    """Half of the 8/26 neighbourhood: each unordered pair of neighbours appears once."""
    offsets = []
    for off in np.ndindex(*(3,) * ndim):
        d = tuple(o - 1 for o in off)
        if d > (0,) * ndim:  # lexicographically positive
            offsets.append(d)
    return offsets


def boundary_counts(labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Number of 8/26-neighbour voxel pairs between every two different non-zero labels."""
    keys = []
    n = int(labels.max()) + 1
    for d in neighbour_offsets(labels.ndim):
        a_box = tuple(
            slice(max(0, -k), s - max(0, k)) for k, s in zip(d, labels.shape, strict=True)
        )
        b_box = tuple(
            slice(max(0, k), s - max(0, -k)) for k, s in zip(d, labels.shape, strict=True)
        )
        a, b = labels[a_box], labels[b_box]
        sel = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
        keys.append(lo * n + hi)
    if not keys:
        return {}
    uniq, counts = np.unique(np.concatenate(keys), return_counts=True)
    return {(int(k // n), int(k % n)): int(c) for k, c in zip(uniq, counts, strict=True)}


def merge_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Merge pieces smaller than ``min_area`` into the neighbour with the longest shared border.

    Smallest piece first (ties: lowest id); a neighbour tie goes to the lowest id. A piece with
    no neighbour is kept. Merging two adjacent connected pieces keeps them connected.
    """
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    if not ((sizes > 0) & (sizes < min_area)).any():
        return labels
    n = len(sizes)
    neighbours: list[dict[int, int]] = [{} for _ in range(n)]
    for (a, b), c in boundary_counts(labels).items():
        neighbours[a][b] = c
        neighbours[b][a] = c
    size = sizes.astype(np.int64).tolist()
    parent = list(range(n))
    heap = [(s, i) for i, s in enumerate(size) if 0 < s < min_area]
    heapq.heapify(heap)
    while heap:
        s, i = heapq.heappop(heap)
        if parent[i] != i or size[i] != s or s >= min_area:
            continue  # stale entry
        if not neighbours[i]:
            continue  # isolated: nothing to merge into
        target = min(neighbours[i], key=lambda j: (-neighbours[i][j], j))
        # merge i into target
        parent[i] = target
        size[target] += size[i]
        for j, c in neighbours[i].items():
            if j == target:
                continue
            neighbours[target][j] = neighbours[target].get(j, 0) + c
            neighbours[j][target] = neighbours[j].get(target, 0) + c
            del neighbours[j][i]
        del neighbours[target][i]
        neighbours[i] = {}
        if size[target] < min_area:
            heapq.heappush(heap, (size[target], target))
    # resolve chains: every id to its final root
    root = np.arange(n)
    for i in range(n):
        r = i
        while parent[r] != r:
            r = parent[r]
        root[i] = r
    return root[labels]
