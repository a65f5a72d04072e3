"""Step 4: score a model with the few-shot evaluation protocols (1-way 1-shot, four organs).

By default: the shipped model (``SupportQueryPredictor.pretrained("chaos-ssl")``) on the two
shipped CHAOS T2-SPIR scans (support patient 8, query patient 2), about a minute on a CPU.
``--checkpoint PATH`` scores your own model (e.g. step 2's), ``--data DIR`` a CHAOS folder's fold
(``--fold``, default 0: support 8, queries 1, 2, 3, 5; train on that fold's training patients
only, as step 2 with ``--data`` does).

Protocols (``--protocols``): ``realistic`` (what a user gets: ``segment_volume``, no query
labels, every slice scored), ``paper`` (the paper's tables: the query's labels choose the organ's
slices and only those are scored) and ``whole_volume`` (every slice segmented and scored, the
chunks still from the query's labels). Prints a table per protocol and writes ``OUT/dice.csv``.
The command line equivalent: ``fewshotseg evaluate --data DIR``.

    python examples/04_evaluate.py [--checkpoint PATH] [--data DIR [--fold K]] [--protocols ...]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import fewshotseg as fss
from fewshotseg.demo import load_chaos_fold, load_demo_scans

ORGANS = [1, 2, 3, 4]  # liver, right kidney, left kidney, spleen


def load_predictor(checkpoint: Path | None, device: str) -> fss.SupportQueryPredictor:
    """Step 2's (or any) checkpoint, else the shipped model."""
    if checkpoint is None:
        predictor = fss.SupportQueryPredictor.pretrained("chaos-ssl", device=device)
    elif not checkpoint.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {checkpoint}; train one with examples/02_train.py, or leave out "
            "--checkpoint to use the shipped model"
        )
    else:
        predictor = fss.SupportQueryPredictor.from_checkpoint(checkpoint, device=device)
    if predictor.modality is None:  # an older checkpoint: the recipe step 2 uses
        predictor.modality = "mri"
    return predictor


def run(args: argparse.Namespace) -> None:
    predictor = load_predictor(args.checkpoint, args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data is None:
        support, query = load_demo_scans()
        queries, fold = [query], None
    else:
        support, queries = load_chaos_fold(args.data, args.fold)
        fold = args.fold
    recipe = predictor.modality
    tables = []
    for protocol in args.protocols:
        # segment_volume (realistic) takes raw scans and applies the recipe itself; the slice
        # protocols call predict, which takes slices as they are: apply the recipe here
        prepare = (lambda x: x) if protocol == "realistic" else (
            lambda x: fss.preprocess.apply_recipe(x, recipe)
        )  # fmt: skip
        started = time.perf_counter()
        table = fss.evaluate_fold(
            predictor,
            prepare(support.image.array),
            support.label,
            {q.id: (prepare(q.image.array), q.label) for q in queries},
            classes=ORGANS,
            protocol=protocol,
            class_names=fss.evaluation.CHAOS_CLASSES,
            support_id=support.id,
            setting=1,
            fold=fold,
        )
        print(table.to_markdown("summary"))
        print(
            f"{protocol}: mean Dice {100 * table.mean():.2f} % "
            f"({time.perf_counter() - started:.1f} s)\n"
        )
        tables.append(table)
    out = fss.ResultTable.concat(tables).save(args.out / "dice.csv")
    print(f"rows -> {out}")


def show_warning(message: Warning | str, *_: object) -> None:
    """Library warnings as one line each, as ``fewshotseg`` on the command line shows them."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    parser.add_argument("--data", type=Path, help="a CHAOS T2-SPIR folder (default: shipped scans)")
    parser.add_argument("--fold", type=int, default=0, help="with --data: the fold (0-4)")
    parser.add_argument(
        "--protocols", nargs="+", default=["realistic", "paper"],
        choices=list(fss.evaluation.PROTOCOLS), help="default: realistic paper",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("fewshotseg-examples"),
                        help="output folder (default: ./fewshotseg-examples)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restored on return
            warnings.showwarning = show_warning
            run(args)
    except (FileNotFoundError, ImportError, ValueError) as error:
        sys.exit(f"{Path(__file__).name}: {error}")


if __name__ == "__main__":
    main()
