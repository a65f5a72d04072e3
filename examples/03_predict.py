"""Step 3 on CHAOS: segment a held-out scan from a labelled support scan.

Support patient 8, query patient 2 (both outside fold 0's training set). For each organ the
support slices are the protocol's (middle slices of three chunks of the organ), matched to the
query by relative depth (`SupportQueryPredictor.segment_volume`: the query's labels are not
used). Writes ``OUT/prediction_2.nii.gz`` with the query's geometry and an overlay PNG, and prints
a whole-volume Dice per organ. The command line equivalent: ``fewshotseg predict``.

    python examples/03_predict.py [--checkpoint PATH] [--quick] [--image-size N]

The checkpoint defaults to step 2's; ``--image-size`` must be the size it was trained at
(256 by default, 64 with ``--quick``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fewshotseg as fss

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chaos_t2spir"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CHAOS T2-SPIR folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "examples")
    parser.add_argument("--checkpoint", type=Path, help="default: OUT/checkpoint/last.pt")
    parser.add_argument("--quick", action="store_true", help="64 x 64 network input")
    parser.add_argument("--paper", action="store_true", help="256 x 256 (the default)")
    parser.add_argument("--image-size", type=int, help="the size the model was trained at")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or args.out / "checkpoint" / "last.pt"
    image_size = args.image_size or (64 if args.quick else 256)

    support, query = fss.datasets.chaos_t2spir(args.data, [8, 2])
    predictor = fss.SupportQueryPredictor.from_checkpoint(
        checkpoint, device=args.device, image_size=image_size
    )
    started = time.perf_counter()
    prediction = predictor.segment_volume(
        fss.preprocess.mri(support.image.array),  # the training recipe
        support.label,
        fss.preprocess.mri(query.image.array),
        classes=[1, 2, 3, 4],
    )
    seconds = time.perf_counter() - started
    out = fss.io.save_volume(
        prediction.astype("uint8"), args.out / "prediction_2.nii.gz", like=query.image
    )
    names = fss.datasets.CHAOS_T2SPIR.classes
    scores = fss.dice(prediction, query.label, classes=[1, 2, 3, 4])
    for c, d in scores.items():
        print(f"{names[c]:>12}: Dice {100 * d:5.1f} % (whole volume)")
    print(f"{query.image.shape[0]} slices in {seconds:.1f} s -> {out}")
    try:
        from fewshotseg.viz import save_overlay

        png = save_overlay(
            query.image.array,
            query.label,
            prediction,
            classes=names,
            rot90=1,
            path=args.out / "prediction_2.png",
        )
        print(f"overlay -> {png}")
    except ImportError:
        print('no overlay: pip install "fewshotseg[viz]"')


if __name__ == "__main__":
    main()
