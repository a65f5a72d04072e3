"""Step 1: superpixel pseudolabels of unlabelled scans (images only, labels never read).

By default this runs on the two CHAOS T2-SPIR scans shipped inside the package (patients 8 and
2, ``fewshotseg.demo.load_demo_scans``), in about ten seconds. With ``--data DIR`` (a CHAOS
folder: ``image_N.nii.gz``) it labels the training patients of fold 0 of the paper's
cross-validation instead (the 15 patients other than 1, 2, 3, 5, the queries, and 8, the
support; ``--all`` for all 15, else the first one). Pseudolabels go to
``OUT/pseudolabels/image_N.superpixels.nii.gz`` with each scan's geometry (``.npz`` when nibabel,
the ``[io]`` extra, is not installed). The command line does the same:
``fewshotseg pseudolabel DATA/image_*.nii.gz``.

    python examples/01_pseudolabels.py [--data DIR [--all]] [--out DIR] [--mode 3d]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import fewshotseg as fss
from fewshotseg.demo import load_demo_scans


def output_suffix() -> str:
    """NIfTI when nibabel is installed (the ``[io]`` extra), else numpy's ``.npz``."""
    return ".nii.gz" if importlib.util.find_spec("nibabel") else ".npz"


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    if args.data is None:  # the shipped scans
        cases = load_demo_scans()  # datasets.Case records, like the folder loaders give
        source = "shipped CHAOS scans"
    else:
        fold = fss.cross_validation_folds(fss.evaluation.CHAOS_PATIENT_IDS)[0]
        ids = fold.train if args.all else fold.train[:1]
        cases = fss.datasets.chaos_t2spir(args.data, ids, labels=False)  # images only
        source = str(args.data)
    labels = fss.SuperpixelPseudolabeler(mode=args.mode).label_many(
        [c.image.array for c in cases],
        spacings=[c.image.spacing for c in cases],
        workers=args.workers,
        progress=False,
        names=[f"patient {c.id}" for c in cases],
    )
    folder = args.out / "pseudolabels"
    for case, lab in zip(cases, labels, strict=True):
        path = folder / f"image_{case.id}.superpixels{output_suffix()}"
        fss.io.save_volume(lab, path, like=case.image)  # the scan's geometry
        print(f"patient {case.id}: up to {lab.max()} superpixels per slice -> {path}")
    print(f"{len(cases)} scans ({source}) in {time.perf_counter() - started:.1f} s")


def show_warning(message: Warning | str, *_: object) -> None:
    """Library warnings as one line each, as ``fewshotseg`` on the command line shows them."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a CHAOS T2-SPIR folder (default: shipped scans)")
    parser.add_argument("--all", action="store_true", help="with --data: all 15 training scans")
    parser.add_argument("--out", type=Path, default=Path("fewshotseg-examples"),
                        help="output folder (default: ./fewshotseg-examples)")  # fmt: skip
    parser.add_argument("--mode", choices=("2d", "3d"), default="2d")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # the default now
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restored on return
            warnings.showwarning = show_warning
            run(args)
    except (FileNotFoundError, ImportError, ValueError) as error:
        sys.exit(f"{Path(__file__).name}: {error}")


if __name__ == "__main__":
    main()
