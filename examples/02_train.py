"""Step 2: self-supervised training of ALPNet on superpixel episodes (no labels used).

By default this trains a tiny network (64 x 64 input, 20 steps, seconds) on the shipped scan of
CHAOS patient 8 (the support scan of steps 3 and 4; the query, patient 2, is not trained on),
to show the loop end to end; it learns little. ``--cpu`` trains with the CPU recipe
(ResNet-18, 256 x 256, ``TrainConfig.cpu_preset()``: 6250 steps of 4 episodes, ~1-2 h on 2 cores;
the shipped model was trained with it) and
``--paper`` the paper's (DeepLabV3-ResNet101, 100k steps, a GPU). With ``--data DIR`` (a CHAOS
folder) it trains on fold 0's training patients (all 15 with ``--cpu``/``--paper``, else the
first one), which step 4 can then evaluate without a leak.

Pseudolabels are read from step 1's ``OUT/pseudolabels`` (computed here when missing); images go
through the MRI intensity recipe (clip the top 0.5 %, z-score). Checkpoints go to
``OUT/checkpoint/last.pt``; rerunning resumes from there (a finished run does nothing more; add
``--iterations N`` to go on). The command line equivalent:
``fewshotseg train DATA/image_*.nii.gz --checkpoint-dir DIR``.

    python examples/02_train.py [--data DIR] [--out DIR] [--cpu | --paper] [--iterations N]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

import fewshotseg as fss
from fewshotseg.demo import load_demo_scans
from fewshotseg.models.backbones import coco_weights_path


def load_pseudolabels(out: Path, scan_id: str, image) -> object:
    """Step 1's pseudolabels of one scan, or freshly computed ones."""
    for suffix in (".nii.gz", ".npz"):
        path = out / "pseudolabels" / f"image_{scan_id}.superpixels{suffix}"
        if path.is_file():
            return fss.io.load_label_map(path)
    print(f"patient {scan_id}: no pseudolabels from step 1 in {out / 'pseudolabels'}; computing")
    return fss.SuperpixelPseudolabeler()(image)


def run(args: argparse.Namespace) -> None:
    full = args.cpu or args.paper
    if args.data is None:
        support, _ = load_demo_scans()
        scans = [(support.id, support.image.array)]
    else:
        fold = fss.cross_validation_folds(fss.evaluation.CHAOS_PATIENT_IDS)[0]
        ids = fold.train if full else fold.train[:1]
        cases = fss.datasets.chaos_t2spir(args.data, ids, labels=False)  # never the labels
        scans = [(c.id, c.image.array) for c in cases]
    pseudo = [load_pseudolabels(args.out, scan_id, image) for scan_id, image in scans]
    images = [fss.preprocess.mri(image) for _, image in scans]

    checkpoint_dir = str(args.out / "checkpoint")
    overrides = {"iterations": args.iterations} if args.iterations else {}
    if args.paper:
        image_size, backbone = 256, "deeplabv3_resnet101"
        weights = "coco" if coco_weights_path(backbone).is_file() else None
        config = fss.TrainConfig(checkpoint_dir=checkpoint_dir, **overrides)
    elif args.cpu:
        image_size, backbone, weights = 256, "resnet18", None
        config = fss.TrainConfig.cpu_preset(checkpoint_dir=checkpoint_dir, **overrides)
    else:  # a tiny budget: the loop end to end in seconds
        image_size, backbone, weights = 64, "tiny", None
        torch.set_num_threads(1)  # a tiny network: more threads only add synchronisation
        config = fss.TrainConfig(
            iterations=args.iterations or 20,
            checkpoint_dir=checkpoint_dir,
            log_every=5,
            progress=False,
        )
    min_foreground = max(1, round(100 * (image_size / 256) ** 2))
    sampler = fss.EpisodeSampler(
        images,
        pseudo,
        image_size=image_size,
        min_foreground=min_foreground,
        seed=config.seed,
        augment=fss.AugmentConfig.for_modality("mri"),  # the recipe's: with a bias field
    )
    model = fss.ALPNet(backbone=backbone, backbone_weights=weights)
    # image_size and modality travel with the checkpoint: the predictor reuses them
    trainer = fss.Trainer(
        model, sampler, config, device=args.device,
        metadata={"image_size": image_size, "modality": "mri"},
    )  # fmt: skip
    started = time.perf_counter()
    history = trainer.fit()  # resumes from checkpoint_dir/last.pt when it is there
    loss = f", last loss {history.loss[-1]:.3f}" if history.loss else ""
    print(
        f"{backbone} at {image_size} px on {len(scans)} scan(s): step {trainer.step} of "
        f"{config.iterations} in {time.perf_counter() - started:.1f} s{loss}; "
        f"checkpoint {checkpoint_dir}/last.pt"
    )


def show_warning(message: Warning | str, *_: object) -> None:
    """Library warnings as one line each, as ``fewshotseg`` on the command line shows them."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a CHAOS T2-SPIR folder (default: shipped scan)")
    parser.add_argument("--out", type=Path, default=Path("fewshotseg-examples"),
                        help="output folder (default: ./fewshotseg-examples)")  # fmt: skip
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--cpu", action="store_true", help="the CPU recipe (6250 x 4 episodes)")
    budget.add_argument("--paper", action="store_true", help="the paper's settings (GPU)")
    budget.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument("--iterations", type=int, help="override the number of steps")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restored on return
            warnings.showwarning = show_warning
            run(args)
    except (FileNotFoundError, ImportError, ValueError) as error:
        sys.exit(f"{Path(__file__).name}: {error}")


if __name__ == "__main__":
    main()
