"""Step 4 on CHAOS: the paper's evaluation protocol on fold 0 (support 8; queries 1, 2, 3, 5).

1-way 1-shot, liver, right kidney, left kidney, spleen; the paper's protocol (scored inside each
organ's ground-truth range: the numbers of the paper's tables) and the whole-volume variant
(every slice scored). Prints both tables and writes ``OUT/fold0_dice.csv``. The command line
equivalent: ``fewshotseg evaluate --checkpoint PATH --data DIR``.

    python examples/04_evaluate.py [--checkpoint PATH] [--quick] [--image-size N]

``--quick``: one query, 64 x 64 network input (the size step 2 trained at with ``--quick``).
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
    parser.add_argument("--quick", action="store_true", help="one query, 64 x 64")
    parser.add_argument("--paper", action="store_true", help="all four queries, 256 x 256")
    parser.add_argument("--image-size", type=int, help="the size the model was trained at")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or args.out / "checkpoint" / "last.pt"
    image_size = args.image_size or (64 if args.quick else 256)

    fold = fss.cross_validation_folds(fss.evaluation.CHAOS_PATIENT_IDS)[0]
    queries = fold.test[:1] if args.quick else fold.test
    support, *query_cases = fss.datasets.chaos_t2spir(args.data, [fold.support, *queries])
    predictor = fss.SupportQueryPredictor.from_checkpoint(
        checkpoint, device=args.device, image_size=image_size
    )
    prepared = {c.id: (fss.preprocess.mri(c.image.array), c.label) for c in query_cases}
    tables = []
    for protocol in ("paper", "whole_volume"):
        started = time.perf_counter()
        table = fss.evaluate_fold(
            predictor,
            fss.preprocess.mri(support.image.array),
            support.label,
            prepared,
            classes=[1, 2, 3, 4],
            protocol=protocol,
            class_names=fss.evaluation.CHAOS_CLASSES,
            support_id=support.id,
            setting=1,
            fold=fold.index,
        )
        print(table.to_markdown("summary"))
        print(
            f"{protocol}: mean Dice {100 * table.mean():.2f} % "
            f"({time.perf_counter() - started:.1f} s)\n"
        )
        tables.append(table)
    out = fss.ResultTable.concat(tables).save(args.out / "fold0_dice.csv")
    print(f"rows -> {out}")


if __name__ == "__main__":
    main()
