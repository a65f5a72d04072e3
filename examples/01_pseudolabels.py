"""Step 1 on CHAOS: superpixel pseudolabels of the training scans (images only, no labels).

Fold 0 of the paper's cross-validation trains on the 15 patients other than 1, 2, 3, 5 (the
queries) and 8 (the support). Pseudolabels are computed on the raw scans and written, with the
scans' geometry, to ``OUT/pseudolabels/image_N.superpixels.nii.gz`` (the data folder may be
read-only). The command line does the same: ``fewshotseg pseudolabel DATA/image_*.nii.gz``.

    python examples/01_pseudolabels.py [--data DIR] [--out DIR] [--quick | --paper] [--mode 3d]

Default: all 15 training scans, the paper's 2D settings, 2 processes (about a minute).
``--quick``: 1 scan, 1 process. ``--paper``: the same as the default (the pseudolabels are
the paper's already).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fewshotseg as fss
from fewshotseg.superpixels import pseudolabel_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chaos_t2spir"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CHAOS T2-SPIR folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "examples")
    parser.add_argument("--quick", action="store_true", help="1 scan, 1 process")
    parser.add_argument("--paper", action="store_true", help="the paper's settings (default)")
    parser.add_argument("--mode", choices=("2d", "3d"), default="2d")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    fold = fss.cross_validation_folds(fss.evaluation.CHAOS_PATIENT_IDS)[0]
    ids = fold.train[:1] if args.quick else fold.train
    cases = fss.datasets.chaos_t2spir(args.data, ids, labels=False)  # images only
    started = time.perf_counter()
    labels = fss.SuperpixelPseudolabeler(mode=args.mode).label_many(
        [c.image.array for c in cases],
        spacings=[c.image.spacing for c in cases],
        workers=1 if args.quick else args.workers,
        progress=False,
    )
    folder = args.out / "pseudolabels"
    for case, lab in zip(cases, labels, strict=True):
        path = folder / pseudolabel_path(case.image).name
        fss.io.save_volume(lab, path, like=case.image)
        print(f"patient {case.id}: {lab.max()} superpixels per slice at most -> {path}")
    print(f"{len(cases)} scans in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
