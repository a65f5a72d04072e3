"""Where whole-volume segmentation loses an organ: its localisation in the query, or the rest.

Usage:
    python benchmarks/chaos_localisation.py --split validation --fold 3 --checkpoint X.pt
    python benchmarks/chaos_localisation.py --split test --fold 3 --checkpoint X.pt

For every query and organ (1-way, the organ alone, the default `VolumeConfig` otherwise) it
compares three ways of choosing the query slices the organ is segmented on:

- **aligned**: what `segment_volume` does (the support's extent carried through the slice
  alignment; no query labels);
- **evidence**: the aligned extent grown slice by slice at each end, by at most a quarter of its
  length, while the model's predicted area (p > the threshold, the organ segmented on every
  slice) stays at least half of its peak inside the aligned extent (no query labels; the best of
  the rules tried on the validation patients, docs/results.md);
- **oracle**: the query's true extent, mapped linearly onto the support's (what the paper
  protocol leaks from the query labels; the ceiling of localisation).

It prints, per organ, the mean extent IoU against the query's true slices and the 3D Dice each
extent gives. The query labels are read only to score, and by the oracle.

``--pairs`` instead scores variants of the slice alignment itself, without segmenting: the
extent IoU of every organ over every support/query pair of the fold's 16 training patients
(the last rows align each organ on its own, with descriptors of its neighbourhood).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
from chaos_volume import ORGANS, dice, fold_arguments, load_fold  # this folder is on sys.path

import fewshotseg as fss
from fewshotseg import volume
from fewshotseg.preprocess import apply_recipe
from fewshotseg.volume import VolumeConfig

CONFIG = VolumeConfig()
GROW, KEEP = 0.25, 0.5  # the evidence rule: grow by <= GROW x the extent while area >= KEEP x peak


def segment_organ(predictor, support, feats_q, cls, pos, inside, size) -> np.ndarray:
    """Probabilities ``(D, H, W)`` of organ ``cls`` on the query slices ``inside`` (0 elsewhere),
    each slice with its nearest aligned support slices, as `segment_with` does for one class."""
    proba = np.zeros((len(pos), *size), np.float32)
    zs = np.flatnonzero(inside)
    plan = volume._support_plan(CONFIG, support, cls, pos, zs)
    for start in range(0, zs.size, volume._SLICES_PER_CALL):
        part = slice(start, start + volume._SLICES_PER_CALL)
        voter = (predictor, feats_q[zs[part]], plan)
        proba[zs[part]] = volume._mean_foreground([voter], part, size)
    return proba


def encode_volume(predictor, image: np.ndarray) -> torch.Tensor:
    """Backbone features of a raw volume, after the predictor's intensity recipe."""
    if predictor.modality is not None:
        image = apply_recipe(image, predictor.modality)
    return predictor.encode_slices(np.asarray(image, np.float32))


def labels_from(proba: np.ndarray, inside: np.ndarray, cls: int) -> np.ndarray:
    """The default threshold and 3D clean-up, on the slices ``inside`` only."""
    labels = np.where((proba > CONFIG.threshold) & inside[:, None, None], cls, 0)
    return volume.clean_up(labels, [cls], largest_component=CONFIG.largest_component,
                           fill_holes=CONFIG.fill_holes)


def grown(inside: np.ndarray, area: np.ndarray) -> np.ndarray:
    """The evidence rule (module docstring)."""
    zs = np.flatnonzero(inside)
    if not len(zs):
        return inside
    out, room = inside.copy(), int(np.floor(GROW * len(zs) + 0.5))
    floor = KEEP * area[zs].max()
    for step, edge in ((-1, zs[0]), (1, zs[-1])):
        z = edge + step
        while 0 <= z < len(area) and abs(z - edge) <= room and area[z] >= floor:
            out[z] = True
            z += step
    return out


def oracle_positions(truth: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The query's true extent mapped linearly onto the support's; outside it, far away."""
    tz = np.flatnonzero(truth)
    pos = np.where(np.arange(len(truth)) < tz[0], -1e6, 1e6).astype(np.float64)
    span = max(tz[-1] - tz[0], 1)
    pos[tz[0] : tz[-1] + 1] = present[0] + (np.arange(tz[0], tz[-1] + 1) - tz[0]) * (
        present[-1] - present[0]) / span
    return pos


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# -------------------------------------------------------------------- alignment variants


def standardised_descriptors(features: torch.Tensor) -> np.ndarray:
    """`slice_descriptors` with each channel scaled to unit spread over the volume's slices."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(features.float(), 4).flatten(1)
    pooled = (pooled - pooled.mean(0)) / (pooled.std(0) + 1e-6)
    return torch.nn.functional.normalize(pooled, dim=1).double().numpy()


def line_through_path(query: np.ndarray, support: np.ndarray) -> np.ndarray:
    """A least-squares line through the warping path: positions without local warps."""
    path = np.array(volume.dtw_path(1.0 - query @ support.T), float)
    slope, offset = np.polyfit(path[:, 0], path[:, 1], 1)
    return slope * np.arange(len(query)) + offset


def affine_search(query: np.ndarray, support: np.ndarray) -> np.ndarray:
    """The line ``a z + b`` (a in [1/3, 3]) of least mean cost, covering >= half the shorter
    volume."""
    cost = 1.0 - query @ support.T
    n, m = cost.shape
    z = np.arange(n)
    best, line = np.inf, (1.0, 0.0)
    for a in np.exp(np.linspace(np.log(0.33), np.log(3), 61)):
        for b in np.linspace(-a * n, m, 4 * (m + n)):
            j = a * z + b
            ok = (j >= 0) & (j <= m - 1)
            if ok.sum() < 3 or ok.sum() * min(a, 1) < 0.5 * min(n, m):
                continue
            lo = np.floor(j[ok]).astype(int)
            w, hi = j[ok] - lo, np.minimum(lo + 1, m - 1)
            c = ((1 - w) * cost[z[ok], lo] + w * cost[z[ok], hi]).mean()
            if c < best:
                best, line = c, (a, b)
    return line[0] * z + line[1]


ALIGNMENTS = {  # name: (descriptors of a volume's features, positions from two descriptor sets)
    "relative depth": (volume.slice_descriptors,
                       lambda q, s: np.arange(len(q)) * len(s) / len(q)),
    "warping path (the default)": (volume.slice_descriptors, volume._aligned_positions),
    "warping path, standardised descriptors": (standardised_descriptors,
                                               volume._aligned_positions),
    "line through the warping path": (volume.slice_descriptors, line_through_path),
    "affine search": (volume.slice_descriptors, affine_search),
    "warping path, 2 x 2 descriptors": (lambda f: volume.slice_descriptors(f, 2),
                                        volume._aligned_positions),
    "warping path, 8 x 8 descriptors": (lambda f: volume.slice_descriptors(f, 8),
                                        volume._aligned_positions),
}


def neighbourhood_descriptors(features: torch.Tensor, box: tuple, grid: int) -> np.ndarray:
    """`slice_descriptors` of the features inside ``box`` (y0, y1, x0, x1 as fractions of the
    slice) only: the slices described by what lies around one organ."""
    h, w = features.shape[-2:]
    y0, y1 = max(int(np.floor(box[0] * h)), 0), min(int(np.ceil(box[1] * h)), h)
    x0, x1 = max(int(np.floor(box[2] * w)), 0), min(int(np.ceil(box[3] * w)), w)
    return volume.slice_descriptors(features[:, :, y0:y1, x0:x1], grid)


def organ_box(label: np.ndarray, cls: int, grow: float) -> tuple:
    """The in-plane box of ``cls`` over all its slices, grown by ``grow`` x its size each way."""
    ys, xs = np.nonzero((label == cls).any(axis=0))
    (h, w), (y0, y1), (x0, x1) = label.shape[1:], (ys.min(), ys.max() + 1), (xs.min(), xs.max() + 1)
    gy, gx = grow * (y1 - y0), grow * (x1 - x0)
    return ((y0 - gy) / h, (y1 + gy) / h, (x0 - gx) / w, (x1 + gx) / w)


NEIGHBOURHOODS = {  # name: (grow, grid, weight of the whole slice's descriptor)
    "warping path, the organ's neighbourhood, 2 x 2": (0.5, 2, 0.0),
    "warping path, the organ's neighbourhood, 4 x 4": (0.5, 4, 0.0),
    "warping path, half neighbourhood (2 x 2), half whole slice": (0.5, 2, 0.5),
}


def neighbourhood_positions(feats, label_s, cls, s, q, whole, setting) -> np.ndarray:
    """Query positions from descriptors of the support organ's neighbourhood (the same box in
    both volumes), optionally mixed with the whole slice's (a weighted sum of similarities)."""
    grow, grid, mix = setting
    box = organ_box(label_s, cls, grow)
    dq, ds = (neighbourhood_descriptors(feats[i], box, grid) for i in (q, s))
    if mix:
        dq = np.concatenate([np.sqrt(1 - mix) * dq, np.sqrt(mix) * whole[q]], axis=1)
        ds = np.concatenate([np.sqrt(1 - mix) * ds, np.sqrt(mix) * whole[s]], axis=1)
    return volume._aligned_positions(dq, ds)


def compare_alignments(predictor, cases, fold) -> None:
    """Extent IoU of each alignment over every ordered pair of the fold's training patients."""
    ids = [str(i) for i in [*fold.train, fold.support]]
    feats, extents = {}, {}
    for i in ids:
        feats[i] = encode_volume(predictor, cases[i].image.array)
        extents[i] = {c: (cases[i].label == c).any(axis=(1, 2)) for c in ORGANS}
    print("| alignment | " + " | ".join(ORGANS.values()) + " | **mean** |\n|" + " --- |" * 6)
    for name, (describe, position) in ALIGNMENTS.items():
        desc = {i: describe(feats[i]) for i in ids}

        def whole_slice(s, q, position=position, desc=desc):  # one alignment for every organ
            pos = position(desc[q], desc[s])
            return lambda c: pos

        print_row(name, pair_ious(ids, extents, whole_slice))
    whole = {i: volume.slice_descriptors(feats[i]) for i in ids}
    for name, setting in NEIGHBOURHOODS.items():

        def per_organ(s, q, setting=setting):  # one alignment per support organ
            return lambda c: neighbourhood_positions(feats, cases[s].label, c, s, q, whole, setting)

        print_row(name, pair_ious(ids, extents, per_organ))


def pair_ious(ids, extents, positions) -> dict[int, list[float]]:
    """Extent IoU per organ over every ordered support/query pair; ``positions(s, q)`` gives
    the query positions of an organ (a function of the organ)."""
    scores: dict[int, list[float]] = {c: [] for c in ORGANS}
    for s, q in itertools.permutations(ids, 2):
        organ_positions = positions(s, q)
        for c in ORGANS:
            present = np.flatnonzero(extents[s][c])
            if len(present) and extents[q][c].any():
                pos = organ_positions(c)
                scores[c].append(iou(volume._localise(CONFIG, [present], [pos]), extents[q][c]))
    return scores


def print_row(name: str, scores: dict[int, list[float]]) -> None:
    organ = [float(np.mean(v)) for v in scores.values()]
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in organ) +
          f" | **{np.mean(organ):.3f}** |", flush=True)


def main() -> None:
    parser = fold_arguments(__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the per-query results as JSON")
    parser.add_argument("--pairs", action="store_true",
                        help="compare alignment variants over the training patients' pairs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases, fold, ids = load_fold(args)
    predictor = fss.SupportQueryPredictor.from_checkpoint(
        args.checkpoint or fss.weights.pretrained_path("chaos-ssl"))
    if args.pairs:
        compare_alignments(predictor, cases, fold)
        return
    sup = cases[str(fold.support)]
    support = volume.prepare_support(predictor, sup.image.array, sup.label.astype(np.int64),
                                     classes=list(ORGANS))
    rows: dict[str, dict[int, dict]] = {}  # query -> organ -> scores
    for q in ids:
        truth_labels = cases[q].label
        feats_q = encode_volume(predictor, cases[q].image.array)
        pos = volume._query_positions(CONFIG, feats_q, support)
        size = tuple(truth_labels.shape[1:])
        rows[q] = {}
        for cls in ORGANS:
            truth = (truth_labels == cls).any(axis=(1, 2))
            if not truth.any():
                continue
            present = support.slices[cls]
            aligned = volume._localise(CONFIG, [present], [pos])
            every = np.ones(len(pos), bool)
            proba = segment_organ(predictor, support, feats_q, cls, pos, every, size)
            evidence = grown(aligned, (proba > CONFIG.threshold).sum(axis=(1, 2)))
            oracle_pos = oracle_positions(truth, present)
            oracle = segment_organ(predictor, support, feats_q, cls, oracle_pos, truth, size)
            rows[q][cls] = {
                "iou": {"aligned": iou(aligned, truth), "evidence": iou(evidence, truth)},
                "dice": {
                    "aligned": dice(labels_from(proba, aligned, cls), truth_labels, cls),
                    "evidence": dice(labels_from(proba, evidence, cls), truth_labels, cls),
                    "oracle": dice(labels_from(oracle, truth, cls), truth_labels, cls),
                },
            }
        print(f"query {q}: " + ", ".join(
            f"{ORGANS[cls]} {100 * r['dice']['aligned']:.0f}/{100 * r['dice']['oracle']:.0f}"
            for cls, r in rows[q].items()) + " (Dice aligned / oracle extent)", flush=True)
    print("\n| organ | extent IoU, aligned | extent IoU, evidence | Dice, aligned | "
          "Dice, evidence | Dice, oracle extent |\n| --- | --- | --- | --- | --- | --- |")
    columns = (("iou", "aligned"), ("iou", "evidence"), ("dice", "aligned"),
               ("dice", "evidence"), ("dice", "oracle"))
    means = {}  # per organ over the queries; the mean row is the mean of the organs
    for cls in ORGANS:
        keep = [organs[cls] for organs in rows.values() if cls in organs]
        means[ORGANS[cls]] = [np.mean([r[m][w] for r in keep]) for m, w in columns]
    means["mean"] = list(np.mean(list(means.values()), axis=0))
    for name, cells in means.items():
        print(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} | " +
              " | ".join(f"{100 * c:.2f}" for c in cells[2:]) + " |")
    if args.out:
        args.out.write_text(json.dumps({"fold": args.fold, "split": args.split,
                                        "support": str(fold.support), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
