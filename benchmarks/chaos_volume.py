"""Whole-volume segmentation on CHAOS without query labels: pipeline variants, Dice per organ.

Usage:
    python benchmarks/chaos_volume.py --split validation [--fold 0] [--variants all]
    python benchmarks/chaos_volume.py --split test --fold 0 [--checkpoint runs/X/last.pt]

``--split validation`` scores the fold's *training* patients as queries (their images were in
the model's training set, their labels never were; here the labels are read only to score):
this is where methods and defaults are chosen. ``--split test`` scores the fold's held-out
queries, to report. Support = the fold's support patient, raw intensities in (the predictor
applies the checkpoint's recipe), 3D Dice over every slice (the realistic protocol). Encoder
features are cached across variants (same inputs, same features), so each extra variant costs
only the prototype matching.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

import fewshotseg as fss
from fewshotseg import evaluation
from fewshotseg.datasets import chaos_t2spir
from fewshotseg.evaluation import Fold
from fewshotseg.volume import VolumeConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chaos_t2spir"
ORGANS = evaluation.CHAOS_CLASSES

DEFAULT_VARIANT = "+ threshold 0.6 (the default)"
_NO_CLEANUP = {"largest_component": False, "fill_holes": False}
VARIANTS: dict[str, VolumeConfig] = {
    # the steps one by one, from the old segment_volume to the default
    "relative depth, every slice (the old segment_volume)": VolumeConfig(
        localise="none", support="chunks", shots=1, threshold=0.5, **_NO_CLEANUP
    ),
    "+ largest 3D component (LCC)": VolumeConfig(
        localise="none", support="chunks", shots=1, threshold=0.5
    ),
    "+ only slices in the support's relative extent": VolumeConfig(
        localise="relative", support="chunks", shots=1, threshold=0.5
    ),
    "aligned extent instead of relative": VolumeConfig(support="chunks", shots=1, threshold=0.5),
    "+ nearest aligned support slice per query slice": VolumeConfig(shots=1, threshold=0.5),
    "+ hole filling": VolumeConfig(shots=1, threshold=0.5, fill_holes=True),
    "+ 3 nearest support slices (3 shots)": VolumeConfig(threshold=0.5),
    DEFAULT_VARIANT: VolumeConfig(),
    # the default with one thing changed
    "default, relative extent instead of aligned": VolumeConfig(localise="relative"),
    "default without LCC": VolumeConfig(largest_component=False),
    "default with hole filling": VolumeConfig(fill_holes=True),
    "default, 1 shot": VolumeConfig(shots=1),
    "default, threshold 0.7": VolumeConfig(threshold=0.7),
    "default, threshold 0.8": VolumeConfig(threshold=0.8),
    "default, margin 1": VolumeConfig(margin=1),
    "default, margin 2": VolumeConfig(margin=2),
    "default, margin 3": VolumeConfig(margin=3),
    "default, every slice (no localisation)": VolumeConfig(localise="none"),
}


class CachedPredictor(fss.SupportQueryPredictor):
    """Encoder features cached by input bytes (variants share them)."""

    cache: dict[str, torch.Tensor] = {}

    def encode_slices(self, images):  # type: ignore[override]
        arr = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        key = hashlib.sha1(arr.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = super().encode_slices(arr)
        return self.cache[key]


class FlipAveragedPredictor(CachedPredictor):
    """Test-time augmentation in feature space: each slice's features averaged with the
    mirrored features of its left-right mirror image (support and query alike)."""

    def _encode_batch(self, slices):  # type: ignore[override]
        direct = super()._encode_batch(slices)
        mirrored = super()._encode_batch(slices.flip(-1)).flip(-1)
        return (direct + mirrored) / 2


class ScaleAveragedPredictor(CachedPredictor):
    """Test-time augmentation in feature space: each slice also encoded at 7/8 and 9/8 of the
    network's input size (inside the training scale range 0.9-1.2; multiples of the output
    stride) and the features resized back and averaged."""

    def _encode_batch(self, slices):  # type: ignore[override]
        size = self.image_size
        x = slices.to(self.device)[:, None]
        direct = super()._encode_batch(slices).float()
        total = direct
        for side in (size * 7 // 8, size * 9 // 8):
            feats = self.model.encode(self._resize(x, (side, side))).float()
            total = total + torch.nn.functional.interpolate(
                feats, size=direct.shape[-2:], mode="bilinear", align_corners=False)
        return total / 3


HALVES = (", extent of the first alone", ", probabilities of the first alone")


@contextlib.contextmanager
def one_half(half: str):
    """Several supports with one half of `segment_with`'s rule only (a measurement, patched in
    for the call): the extent or the probabilities from the first support alone."""
    localise, mean_foreground = fss.volume._localise, fss.volume._mean_foreground
    if half == HALVES[0]:
        fss.volume._localise = lambda config, present, pos: localise(config, present[:1], pos[:1])
    elif half == HALVES[1]:
        fss.volume._mean_foreground = lambda voters, part, size: (
            mean_foreground(voters[:1], part, size))
    try:
        yield
    finally:
        fss.volume._localise, fss.volume._mean_foreground = localise, mean_foreground


def dice(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    p, t = pred == cls, truth == cls
    denom = p.sum() + t.sum()
    return float("nan") if denom == 0 else float(2 * (p & t).sum() / denom)


def organ_means(per_query: dict[str, dict]) -> dict:
    """Per organ, the mean Dice over the queries (NaN, organ absent from both, left out); the
    table's mean is the mean of these. Works on a run's results and on its JSON alike."""
    organs = sorted({organ for scores in per_query.values() for organ in scores})
    return {
        o: float(np.nanmean([s[o] for s in per_query.values() if o in s])) for o in organs
    }


def fold_arguments(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the options that choose a fold's scans and the model to score."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--split", choices=["validation", "test"], default="validation")
    parser.add_argument("--checkpoint", help="default: the shipped chaos-ssl model")
    return parser


def load_fold(args: argparse.Namespace) -> tuple[dict, Fold, list[str]]:
    """The CHAOS cases by id, the fold, and its query ids for ``args.split``."""
    cases = {c.id: c for c in chaos_t2spir(args.data)}
    fold = evaluation.cross_validation_folds(sorted(cases, key=int))[args.fold]
    ids = [str(i) for i in (fold.train if args.split == "validation" else fold.test)]
    return cases, fold, ids


def n4_corrected(case):
    """The case with its image divided by SimpleITK's N4 bias field (an experiment, not part of
    the method; SimpleITK is not a dependency): Otsu body mask, the field fitted on a 4x
    in-plane shrink, 4 levels of 50 iterations, the physical spacing of the scan."""
    import SimpleITK as sitk

    array = case.image.array.astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in case.image.spacing[::-1]])  # (x, y, z) in SimpleITK
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([50] * 4)
    n4.Execute(sitk.Shrink(image, [4, 4, 1]), sitk.Shrink(mask, [4, 4, 1]))
    field = np.exp(sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)))
    corrected = (array / field).astype(np.float32)
    return dataclasses.replace(case, image=dataclasses.replace(case.image, array=corrected))


NYUL_PERCENTILES = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)


def nyul_landmarks(array: np.ndarray) -> np.ndarray:
    """Nyul-Udupa landmarks: percentiles of the voxels above the scan's mean (the body)."""
    return np.percentile(array[array > array.mean()], NYUL_PERCENTILES)


def nyul_scale(arrays: list[np.ndarray]) -> np.ndarray:
    """The standard scale learned from unlabelled scans: each scan's landmarks mapped linearly
    so that its 1st and 99th percentiles land on 0 and 100, then averaged."""
    mapped = []
    for array in arrays:
        lm = nyul_landmarks(array)
        mapped.append(100 * (lm - lm[0]) / (lm[-1] - lm[0]))
    return np.mean(mapped, axis=0)


def nyul_standardised(case, scale: np.ndarray):
    """The case with its intensities mapped piecewise-linearly from its own landmarks onto
    ``scale``, extended linearly past both ends (an experiment, not part of the method)."""
    array = case.image.array.astype(np.float32)
    lm = nyul_landmarks(array)
    out = np.interp(array, lm, scale)
    low, high = array < lm[0], array > lm[-1]
    out[low] = scale[0] + (array[low] - lm[0]) * (scale[1] - scale[0]) / (lm[1] - lm[0])
    out[high] = scale[-1] + (array[high] - lm[-1]) * (scale[-1] - scale[-2]) / (lm[-1] - lm[-2])
    return dataclasses.replace(case, image=dataclasses.replace(case.image, array=out))


def group_supports(cases: dict, fold: int, n: int) -> list[str]:
    """The first ``n`` patients of the next fold's group: the protocol's support (the group's
    first patient) and the ones after it, the supports of the several-support rows."""
    folds = evaluation.cross_validation_folds(sorted(cases, key=int))
    return [str(i) for i in evaluation.support_scans(folds, fold, n)]


def main() -> None:
    parser = fold_arguments(__doc__)
    parser.add_argument("--variants", default="all", help="comma-separated indices or 'all'")
    parser.add_argument("--support", help="this patient as the support instead of the fold's "
                        "(ID1,ID2,...: these as several supports)")
    parser.add_argument("--supports", help="comma-separated counts of support scans, e.g. 1,2,3: "
                        "the first N of --support's patients, or else of the support's group "
                        "(the fold's support first); the queries leave out all of the largest "
                        "count's (default: 1, or every --support patient)")
    parser.add_argument("--queries", type=int, default=0, help="first N queries only (0 = all)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N queries")
    parser.add_argument("--halves", action="store_true",
                        help="with several supports, also each half of the rule alone: the "
                        "first support's extent with averaged probabilities, and the vote's "
                        "extent with the first support's probabilities")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", choices=["none", "flip", "scale"], default="none",
                        help="flip: average each slice's features with its mirror image's; "
                        "scale: with its features at 7/8 and 9/8 of the input size")
    parser.add_argument("--n4", action="store_true",
                        help="experiment: N4-correct every scan first (needs SimpleITK)")
    parser.add_argument("--nyul", action="store_true",
                        help="experiment: map every scan onto a Nyul-Udupa standard scale "
                        "learned from the fold's training images first")
    parser.add_argument("--ensemble", metavar="CHECKPOINT", action="append", default=[],
                        help="also this model (repeatable): the models' probabilities are "
                        "averaged (fewshotseg.PredictorEnsemble; one checkpoint per model)")
    parser.add_argument("--out", type=Path, help="write the per-query results as JSON")
    parser.add_argument("--device", default="cpu", help="timing: cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=4, help="timing: slices per call")
    parser.add_argument("--pair", help="timing: SUPPORT:Q1,Q2,... ids instead of --fold")
    parser.add_argument("--timing", action="store_true",
                        help="time the default pipeline against the old segment_volume instead")
    args = parser.parse_args()
    if args.n4 and args.nyul:
        raise SystemExit("--n4 and --nyul are alternatives: choose one")
    if args.ensemble and args.halves:
        raise SystemExit("--halves measures one model's rule: leave out --ensemble")
    torch.set_num_threads(args.threads)
    if args.timing:
        timing(args)
        return

    cases, fold, ids = load_fold(args)
    named = args.support.split(",") if args.support else []
    default = str(len(named) or 1)
    counts = sorted({int(n) for n in (args.supports or default).split(",")})
    unknown = [i for i in named if i not in cases]
    if unknown:
        known = ", ".join(sorted(cases, key=int))
        raise SystemExit(f"no patient {unknown} in {args.data} (it has {known})")
    if named and counts[-1] > len(named):
        raise SystemExit(f"--supports {counts[-1]} needs as many --support patients")
    if named:
        support_ids = named
    else:
        support_ids = group_supports(cases, args.fold, counts[-1])
    if args.split == "test" and set(support_ids) & set(ids):
        raise SystemExit(f"supports {support_ids} include some of the queries {ids}")
    ids = [q for q in ids if q not in support_ids][args.skip :]
    if args.queries:
        ids = ids[: args.queries]
    if args.n4:
        cases = {i: n4_corrected(cases[i]) for i in [*support_ids, *ids]}
    if args.nyul:
        scale = nyul_scale([cases[str(i)].image.array for i in fold.train])
        cases = {i: nyul_standardised(cases[i], scale) for i in [*support_ids, *ids]}
    kind = {"none": CachedPredictor, "flip": FlipAveragedPredictor,
            "scale": ScaleAveragedPredictor}[args.tta]
    predictor = kind.from_checkpoint(args.checkpoint or fss.weights.pretrained_path("chaos-ssl"))
    names = list(VARIANTS)
    chosen = names if args.variants == "all" else [names[int(i)] for i in args.variants.split(",")]
    models = [predictor, *(kind.from_checkpoint(path) for path in args.ensemble)]
    pairs = []  # (model, its prepared supports)
    for model in models:
        model.cache = {}  # each model its own feature cache
        pairs.append((model, [fss.volume.prepare_support(
            model, cases[i].image.array, cases[i].label.astype(np.int64), classes=list(ORGANS))
            for i in support_ids]))
    results: dict[str, dict[str, dict[int, float]]] = {}
    runs = [(name, n, "") for name in chosen for n in counts]
    if args.halves:
        runs += [(name, counts[-1], half) for name in chosen for half in HALVES]
    for name, n, half in runs:
        row = name if counts == [1] else f"{name}, {n} support{'s' * (n > 1)}{half}"
        start = time.perf_counter()
        per_query = {}
        for q in ids:
            case = cases[q]
            with one_half(half):  # several models: every model's first n supports vote
                pred = fss.volume.segment_with([p for p, _ in pairs],
                                               [s for _, sup in pairs for s in sup[:n]],
                                               case.image.array, config=VARIANTS[name])
            per_query[q] = {c: dice(pred, case.label, c) for c in ORGANS}
        results[row] = per_query
        organ = organ_means(per_query)
        cells = " | ".join(f"{100 * organ[c]:.1f}" for c in ORGANS)
        mean = 100 * np.nanmean(list(organ.values()))
        print(f"| {row} | {cells} | **{mean:.2f}** | {time.perf_counter() - start:.0f} s |",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps({"fold": args.fold, "split": args.split, "tta": args.tta,
                                        "ensemble": args.ensemble,
                                        "n4": args.n4, "nyul": args.nyul,
                                        "support": support_ids[0], "supports": support_ids,
                                        "queries": ids,
                                        "results": results}, indent=1))


def legacy_segment_volume(predictor, support_volume, support_labels, query_volume, classes):
    """The cost baseline: `SupportQueryPredictor.segment_volume` as it was in 0.1 (relative
    depth, every slice for every class, the protocol's 3 support slices by chunk, threshold
    0.5, no clean-up), kept here verbatim in substance so the ratio is against that code."""
    from fewshotseg.evaluation import support_slice_indices
    from fewshotseg.inference import _check_image, _to_tensor

    sup, lab, qry = support_volume, support_labels, query_volume
    depth_s, depth_q = sup.shape[0], qry.shape[0]
    query = _check_image(_to_tensor(qry, "query_volume"), "query_volume")
    supports, chunk_of = {}, {}
    for cls in classes:
        picks = support_slice_indices(lab, cls, parts=3)
        present = np.flatnonzero((lab == cls).any(axis=(1, 2)))
        lo, hi = int(present.min()), int(present.max())
        rel = np.arange(depth_q) * depth_s / depth_q
        span = max(hi - lo, 1e-9) / 3
        chunk_of[cls] = np.clip(((rel - lo) // span).astype(int), 0, 2)
        supports[cls] = [
            predictor.encode_support(sup[z], (lab[z] == cls).astype(np.int64)) for z in picks
        ]
    h, w = qry.shape[1:]
    best = np.zeros(qry.shape, np.float32)
    result = np.zeros(qry.shape, np.int64)
    with predictor._eval_mode(), torch.inference_mode(), predictor._autocast():
        for start in range(0, depth_q, predictor.batch_size):
            feats = predictor._encode_batch(query[start : start + predictor.batch_size])
            for cls in classes:
                parts_here = chunk_of[cls][start : start + len(feats)]
                for part in np.unique(parts_here):
                    idx = np.flatnonzero(parts_here == part)
                    support = supports[cls][int(part)]
                    proba = predictor._probabilities(feats[idx], support, (h, w))[:, 1]
                    proba = proba.cpu().numpy()
                    zs = start + idx
                    take = (proba > 0.5) & (proba > best[zs])
                    best[zs] = np.where(take, proba, best[zs])
                    result[zs] = np.where(take, cls, result[zs])
    return result


def timing(args: argparse.Namespace) -> None:
    """Seconds per query volume (4 organs), default pipeline vs the old segment_volume
    (relative depth, every slice, no clean-up), alternating, no feature cache; with
    ``--ensemble``, also the default pipeline with those models averaged in."""
    import platform
    import statistics

    cases = {c.id: c for c in chaos_t2spir(args.data)}
    if args.pair:  # "8:1,2,3,5": a folder holding only some patients (e.g. on a GPU machine)
        support_id, query_ids = args.pair.split(":")
        support, ids = cases[support_id], query_ids.split(",")
    else:
        fold = evaluation.cross_validation_folds(sorted(cases, key=int))[args.fold]
        support = cases[str(fold.support)]
        ids = [str(i) for i in (fold.train if args.split == "validation" else fold.test)]
    path = args.checkpoint or fss.weights.pretrained_path("chaos-ssl")
    predictor = fss.SupportQueryPredictor.from_checkpoint(
        path, device=args.device, batch_size=args.batch_size
    )
    old = VARIANTS["relative depth, every slice (the old segment_volume)"]  # as before 0.2
    configs = {"0.1's rule through the new pipeline": old, "default pipeline": VolumeConfig(),
               "default, 1 shot": VolumeConfig(shots=1)}
    rows: dict[str, list[float]] = {name: [] for name in configs}
    s_img, s_lab = support.image.array, support.label.astype(np.int64)
    queries = ids[: args.queries or len(ids)]
    legacy = "segment_volume of 0.1 (the baseline)"
    reused = "default, support prepared once for the fold's queries (per query)"
    three = "default, 3 supports prepared once for the fold's queries (per query)"
    rows = {legacy: [], **rows, reused: [], three: []}
    members = [predictor] + [fss.SupportQueryPredictor.from_checkpoint(
        other, device=args.device, batch_size=args.batch_size) for other in args.ensemble]
    ensemble = f"default, {len(members)} models averaged (PredictorEnsemble)"
    if args.ensemble:
        rows[ensemble] = []
    supports = [support]  # with --fold: and the next two of the support's group
    if not args.pair:
        supports += [cases[i] for i in group_supports(cases, args.fold, 3)[1:]]
    queries = [q for q in queries if q not in {c.id for c in supports}]
    # the 0.1 code took preprocessed volumes (the recipe is timed in the other rows)
    s_pre = fss.preprocess.apply_recipe(s_img, predictor.modality)
    for _ in range(2):
        for q in queries:
            q_pre = fss.preprocess.apply_recipe(cases[q].image.array, predictor.modality)
            start = time.perf_counter()
            legacy_segment_volume(predictor, s_pre, s_lab, q_pre, list(ORGANS))
            rows[legacy].append(time.perf_counter() - start)
            for name, config in configs.items():
                start = time.perf_counter()
                predictor.segment_volume(s_img, s_lab, cases[q].image.array, config=config,
                                         classes=list(ORGANS))
                rows[name].append(time.perf_counter() - start)
            if args.ensemble:
                start = time.perf_counter()
                fss.PredictorEnsemble(members).segment_volume(
                    s_img, s_lab, cases[q].image.array, classes=list(ORGANS))
                rows[ensemble].append(time.perf_counter() - start)
        # one support for every query of the fold: the first query pays the support's encoding
        start = time.perf_counter()
        prepared = predictor.encode_support_volume(s_img, s_lab, classes=list(ORGANS))
        for q in queries:
            predictor.segment_volume_with(prepared, cases[q].image.array)
        rows[reused].append((time.perf_counter() - start) / len(queries))
        if len(supports) == 3:
            start = time.perf_counter()
            several = [predictor.encode_support_volume(c.image.array, c.label.astype(np.int64),
                                                       classes=list(ORGANS)) for c in supports]
            for q in queries:
                predictor.segment_volume_with(several, cases[q].image.array)
            rows[three].append((time.perf_counter() - start) / len(queries))
    base = statistics.median(rows[legacy])
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {args.threads} threads")
    print(f"{where}, batch {args.batch_size}, "
          f"{len(rows[legacy])} volume runs each; the prepared-support row is the "
          f"mean over the fold's {len(queries)} queries, support encoding included, twice")
    print("| pipeline | s / volume (median) | ratio |\n| --- | --- | --- |")
    for name, times in rows.items():
        if not times:
            continue
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
