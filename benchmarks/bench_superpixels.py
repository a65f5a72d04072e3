"""Benchmark SuperpixelPseudolabeler: speed (1 vs 2 workers, vs the reference loop) and quality.

Speed: milliseconds per 256 x 256 slice and seconds per CHAOS volume for
- the reference notebook's loop, written here as the baseline: per slice, Felzenszwalb on the raw
  intensities (scale 1, sigma 1, min_size 400), body mask = raw > 50, largest component, hole
  filling, masked relabel;
- ``SuperpixelPseudolabeler()`` (2D) through ``label_many`` with 1 and 2 worker processes;
- ``SuperpixelPseudolabeler(mode="3d")`` with 1 and 2 workers.

Quality on the CHAOS volumes, 2D vs 3D: superpixels per slice / per volume, and achievable
segmentation accuracy (ASA) per organ: the fraction of the organ's voxels whose superpixel's
majority label (over all its voxels, background included) is that organ. Outside the body counts
as background. 2D superpixels are per slice, so each (slice, id) is one superpixel.

    python benchmarks/bench_superpixels.py            # all 20 CHAOS volumes (~4-5 min, 2 cores)
    python benchmarks/bench_superpixels.py --quick    # 2 volumes, a few slices (seconds)
    python benchmarks/bench_superpixels.py --out table.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fewshotseg.superpixels import SuperpixelPseudolabeler

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chaos_t2spir"
ORGANS = {1: "liver", 2: "R kidney", 3: "L kidney", 4: "spleen"}
SPACING = (7.7, 1.25, 1.25)  # CHAOS T2-SPIR as stored here (D, H, W), mm


def reference_loop(volume: np.ndarray) -> np.ndarray:
    """The reference notebook's per-slice pseudolabel loop (the baseline)."""
    from skimage.segmentation import felzenszwalb

    out = np.zeros(volume.shape, np.int32)
    for z, image in enumerate(volume):
        seg = felzenszwalb(image, scale=1, sigma=1, min_size=400)
        labels, n = ndi.label(image > 50)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = ndi.binary_fill_holes(labels == np.argmax(sizes))
        masked = (seg + 1) * body
        _, inverse = np.unique(masked, return_inverse=True)
        out[z] = inverse.reshape(image.shape)
    return out


def asa(superpixels: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    """Achievable segmentation accuracy per organ (0 = outside the body = background)."""
    n = int(superpixels.max()) + 1
    counts = np.zeros((n, 5), np.int64)
    np.add.at(counts, (superpixels.ravel(), truth.ravel()), 1)
    majority = counts.argmax(1)
    majority[0] = 0
    return {c: float((majority[superpixels[truth == c]] == c).mean()) for c in ORGANS}


def unique_per_slice(labels: np.ndarray) -> np.ndarray:
    """Turn per-slice ids into volume-unique ids (for ASA of 2D superpixels)."""
    offsets = np.concatenate([[0], np.cumsum(labels.reshape(len(labels), -1).max(1))[:-1]])
    return np.where(labels > 0, labels + offsets[:, None, None], 0)


def load(ids: list[int], n_slices: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    import nibabel as nib

    images, truths = [], []
    for i in ids:
        image = np.moveaxis(np.asarray(nib.load(DATA / f"image_{i}.nii.gz").dataobj), 2, 0)
        truth = np.moveaxis(np.asarray(nib.load(DATA / f"label_{i}.nii.gz").dataobj), 2, 0)
        if n_slices is not None:  # the middle slices
            start = max(0, len(image) // 2 - n_slices // 2)
            image, truth = image[start : start + n_slices], truth[start : start + n_slices]
        images.append(image)
        truths.append(truth.astype(np.int64))
    return images, truths


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 volumes, 8 slices each")
    parser.add_argument("--out", type=Path, help="also write the Markdown tables here")
    parser.add_argument("--volumes", type=int, help="use only the first N volumes (sorted ids)")
    parser.add_argument(
        "--timing-volumes", type=int, default=4, help="volumes for the 3D 1-vs-2-worker timing"
    )
    args = parser.parse_args()
    if not (DATA / "image_1.nii.gz").is_file():
        raise SystemExit(f"CHAOS data not found at {DATA}")
    ids = sorted(int(p.name[6:-7]) for p in DATA.glob("image_*.nii.gz"))
    if args.quick:
        ids = ids[:2]
    if args.volumes:
        ids = ids[: args.volumes]
    images, truths = load(ids, 8 if args.quick else None)
    n_slices = sum(len(v) for v in images)
    spacings = [SPACING] * len(images)
    lab2, lab3 = SuperpixelPseudolabeler(), SuperpixelPseudolabeler(mode="3d")

    # ---- speed ------------------------------------------------------------------------------
    load_before = os.getloadavg()[0]
    ref, t_ref = timed(lambda: [reference_loop(v) for v in images])
    out1, t1 = timed(lab2.label_many, images, workers=1, progress=False)
    out2, t2 = timed(lab2.label_many, images, workers=2, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(out1, out2, strict=True))
    k = min(len(images), 2 if args.quick else args.timing_volumes)
    sub = images[:k]
    vox1, t3_1 = timed(lab3.label_many, sub, spacings=spacings[:k], workers=1, progress=False)
    vox2, t3_2 = timed(lab3.label_many, sub, spacings=spacings[:k], workers=2, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(vox1, vox2, strict=True))
    rest = lab3.label_many(images[k:], spacings=spacings[k:], workers=2, progress=False)
    out3 = vox2 + rest

    per_vol = n_slices / len(images)
    rows = [
        ("reference loop (baseline)", 1, t_ref / n_slices * 1e3, t_ref / len(images), "1.00"),
        ("2d, label_many", 1, t1 / n_slices * 1e3, t1 / len(images), f"{t_ref / t1:.2f}"),
        ("2d, label_many", 2, t2 / n_slices * 1e3, t2 / len(images), f"{t_ref / t2:.2f}"),
    ]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, 1-min load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {len(images)} volumes, "
        f"{n_slices} slices ({per_vol:.1f} per volume), 256 x 256.",
        "",
        "| method | workers | ms / slice | s / volume | speed-up vs baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {m} | {w} | {ms:.1f} | {s:.2f} | {r} |" for m, w, ms, s, r in rows]
    lines += [
        f"| 3d, label_many ({k} volumes) | 1 | - | {t3_1 / k:.2f} | - |",
        f"| 3d, label_many ({k} volumes) | 2 | - | {t3_2 / k:.2f} | - |",
        "",
        f"2 workers over 1: **{t1 / t2:.2f}x** (2d), **{t3_1 / t3_2:.2f}x** (3d, {k} volumes). "
        "Outputs identical for 1 and 2 workers: yes (checked).",
        "",
    ]

    # ---- quality -----------------------------------------------------------------------------
    def quality(name: str, labels: list[np.ndarray], per_slice: bool) -> str:
        scores = []
        counts_slice, counts_vol = [], []
        for lab, truth in zip(labels, truths[: len(labels)], strict=True):
            flat = unique_per_slice(lab) if per_slice else lab
            scores.append(asa(flat, truth))
            counts_vol.append(int(flat.max()))
            body = (lab > 0).reshape(len(lab), -1).any(1)
            per = [len(np.unique(s[s > 0])) for s in lab[body]]
            counts_slice.append(np.mean(per) if per else 0.0)
        organ = [np.nanmean([s[c] for s in scores]) for c in ORGANS]
        return (
            f"| {name} | {len(labels)} | {np.mean(counts_slice):.1f} | {np.mean(counts_vol):.0f} | "
            + " | ".join(f"{100 * a:.1f}" for a in organ)
            + f" | {100 * np.mean(organ):.1f} |"
        )

    lines += [
        "| pseudolabels | volumes | superpixels / slice | superpixels / volume | "
        + " | ".join(f"ASA {o}" for o in ORGANS.values())
        + " | ASA mean |",
        "| --- " * 9 + "|",
        quality("reference loop (2d)", ref, True),
        quality("2d (defaults)", out2, True),
        quality("3d (defaults)", out3, False),
        "",
        "Superpixels / slice: distinct ids in each slice that has a body (3d: supervoxel pieces "
        "cut by the slice); ASA in %.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
