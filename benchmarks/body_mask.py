"""Benchmark the automatic body mask on the 20 CHAOS T2-SPIR scans: the previous rule vs the
current one (``fewshotseg.body_mask``).

Per scan, in 2D mode (per slice, as the labeler runs by default) and in 3D mode (per volume):

- organ containment: the share of the labelled organ voxels (liver, kidneys, spleen) inside the
  mask, the worst organ of the scan and all organs together;
- the area of the mask relative to the previous rule's (1.00 = the same number of voxels);
- the share of the coverage report's non-air voxels (``fewshotseg.body_mask.non_air_mask``)
  inside each mask;
- which rule chose the threshold (per slice in 2D), and the seconds per volume of each rule
  (mask only: threshold, largest component, closing, hole filling).

The previous rule: normalise between the 0.5th and 99.5th percentiles, threshold at half the Otsu
threshold, largest component, closing, hole filling (``threshold=`` in the image's units gives
exactly that mask through the same code).

    python benchmarks/body_mask.py            # all 20 scans (~1 min on 2 cores)
    python benchmarks/body_mask.py --volumes 2
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fewshotseg.body_mask import body_mask, estimate_background, non_air_mask

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chaos_t2spir"


def previous_threshold(image: np.ndarray) -> float | None:
    """Half the Otsu threshold of the percentile-normalised image, in the image's units."""
    from skimage.filters import threshold_otsu

    low, high = np.percentile(image, (0.5, 99.5))
    if not high > low:
        low, high = image.min(), image.max()
        if not high > low:
            return None
    norm = np.clip((image - low) / (high - low), 0.0, 1.0)
    return float(low + 0.5 * threshold_otsu(norm) * (high - low))


def previous_mask(image: np.ndarray) -> np.ndarray:
    threshold = previous_threshold(image)
    if threshold is None:
        return np.zeros(image.shape, bool)
    return body_mask(image, threshold=threshold)


def masks(volume: np.ndarray, mode: str, rule) -> tuple[np.ndarray, float]:
    """The masks of one rule (per slice in 2D mode) and the seconds they took."""
    start = time.perf_counter()
    out = np.stack([rule(s) for s in volume]) if mode == "2d" else rule(volume)
    return out, time.perf_counter() - start


def non_air(volume: np.ndarray, mode: str) -> np.ndarray:
    """The coverage report's non-air estimate (per slice in 2D mode)."""
    units = list(volume) if mode == "2d" else [volume]
    out = [non_air_mask(u, estimate_background(u)) for u in units]
    return np.stack(out) if mode == "2d" else out[0]


def cpu_name() -> str:
    """``lscpu``'s model name (else /proc/cpuinfo's, else the platform's)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def row(i: int, mode: str, image: np.ndarray, truth: np.ndarray) -> tuple[str, dict]:
    """One table row and its figures."""
    before, t_before = masks(image, mode, previous_mask)
    after, t_after = masks(image, mode, body_mask)
    units = list(image) if mode == "2d" else [image]
    rules = Counter(b.rule for b in (estimate_background(u) for u in units) if b is not None)
    organs = [c for c in (1, 2, 3, 4) if (truth == c).any()]
    worst_before = min(float(before[truth == c].mean()) for c in organs)
    worst_after = min(float(after[truth == c].mean()) for c in organs)
    air = non_air(image, mode)
    kept_before, kept_after = before[air].mean(), after[air].mean()
    ratio = after.sum() / max(1, before.sum())
    text = (
        f"| {i} | {mode} | {before[truth > 0].mean():.4f} ({worst_before:.4f}) "
        f"| {after[truth > 0].mean():.4f} ({worst_after:.4f}) | {ratio:.2f} "
        f"| {kept_before:.3f} / {kept_after:.3f} "
        f"| {', '.join(f'{k} {v}' for k, v in sorted(rules.items()))} "
        f"| {t_before:.2f} / {t_after:.2f} |"
    )
    figures = {"ratio": ratio, "worst before": worst_before, "worst after": worst_after,
               "kept before": kept_before, "kept after": kept_after,
               "t before": t_before, "t after": t_after}  # fmt: skip
    return text, figures


def main() -> None:
    import nibabel as nib

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, help="only the first N scans (sorted ids)")
    args = parser.parse_args()
    ids = sorted(int(p.name[6:-7]) for p in DATA.glob("image_*.nii.gz"))[: args.volumes]
    if not ids:
        raise SystemExit(f"CHAOS data not found at {DATA}")
    print(f"CPU: {cpu_name()}\n")
    print(
        "| scan | mode | organ voxels inside, previous (worst organ) | now (worst organ) "
        "| area now / previous | non-air kept, previous / now | rule (units) "
        "| s per volume, previous / now |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    warm = np.add.outer(np.arange(64.0), np.arange(64.0)) % 50
    body_mask(warm), previous_mask(warm)  # imports and first calls out of the timing
    figures: dict[str, list[dict]] = {"2d": [], "3d": []}
    for i in ids:
        image = np.moveaxis(np.asarray(nib.load(DATA / f"image_{i}.nii.gz").dataobj), 2, 0)
        truth = np.moveaxis(np.asarray(nib.load(DATA / f"label_{i}.nii.gz").dataobj), 2, 0)
        for mode in ("2d", "3d"):
            text, numbers = row(i, mode, image.astype(np.float64), truth)
            print(text)
            figures[mode].append(numbers)
    print()
    for mode, rows in figures.items():
        columns = {key: np.array([r[key] for r in rows]) for key in rows[0]}
        get = columns.__getitem__
        print(
            f"- {mode}: area now / previous median {np.median(get('ratio')):.2f} "
            f"(range {get('ratio').min():.2f}-{get('ratio').max():.2f}); worst organ of any "
            f"scan: previous {get('worst before').min():.4f}, now {get('worst after').min():.4f}; "
            f"non-air kept, lowest scan: previous {get('kept before').min():.3f}, now "
            f"{get('kept after').min():.3f}; s per volume (mean): previous "
            f"{get('t before').mean():.2f}, now {get('t after').mean():.2f}"
        )


if __name__ == "__main__":
    main()
