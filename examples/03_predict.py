"""Step 3: segment a whole held-out scan from one labelled support scan.

By default: the model shipped in the package (``SupportQueryPredictor.pretrained("chaos-ssl")``)
and the two CHAOS T2-SPIR scans shipped with it (support patient 8, query patient 2), about half
a minute on a CPU. ``--checkpoint PATH`` uses your own model (e.g. step 2's
``fewshotseg-examples/checkpoint/last.pt``; its input size and intensity recipe come with it),
``--data DIR`` reads patients 8 and 2 from a CHAOS folder instead.

``SupportQueryPredictor.segment_volume`` reads no query labels: it aligns the query's slices with
the support's by anatomy, segments each organ where the alignment puts it and keeps its largest
3D component. The query's labels are read afterwards only to print a Dice per organ. Writes
``OUT/prediction_2.nii.gz`` (``.npz`` without the ``[io]`` extra) and an overlay PNG (with the
``[viz]`` extra). The command line equivalent: ``fewshotseg predict``.

    python examples/03_predict.py [--checkpoint PATH] [--data DIR] [--out DIR]
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
    else:
        support, query = fss.datasets.chaos_t2spir(args.data, [8, 2])
    s_image, s_label = support.image.array, support.label
    q_image, q_label = query.image.array, query.label
    started = time.perf_counter()
    # raw intensities in: the predictor applies its checkpoint's intensity recipe itself
    prediction = predictor.segment_volume(s_image, s_label, q_image, classes=ORGANS)
    seconds = time.perf_counter() - started

    suffix = ".nii.gz" if importlib.util.find_spec("nibabel") else ".npz"
    path = args.out / f"prediction_{query.id}{suffix}"
    out = fss.io.save_volume(prediction.astype("uint8"), path, like=query.image)
    names = fss.datasets.CHAOS_T2SPIR.classes
    scores = fss.dice(prediction, q_label, classes=ORGANS)  # labels read only to score
    for c, d in scores.items():
        print(f"{names[c]:>12}: Dice {100 * d:5.1f} % (whole volume)")
    print(f"{q_image.shape[0]} slices in {seconds:.1f} s -> {out}")
    if importlib.util.find_spec("matplotlib") is None:
        print('no overlay: pip install "fewshotseg[viz]"')
        return
    from fewshotseg.viz import save_overlay

    png = save_overlay(
        q_image, q_label, prediction, classes=names, rot90=1,
        path=args.out / f"prediction_{query.id}.png",
    )  # fmt: skip
    print(f"overlay -> {png}")


def show_warning(message: Warning | str, *_: object) -> None:
    """Library warnings as one line each, as ``fewshotseg`` on the command line shows them."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: the shipped model")
    parser.add_argument("--data", type=Path, help="a CHAOS T2-SPIR folder (default: shipped scans)")
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
