"""Step 2 on CHAOS: self-supervised training of ALPNet on superpixel episodes (fold 0).

Reads the pseudolabels of step 1 from ``OUT/pseudolabels`` (computed here when missing), applies
the MRI intensity recipe (clip the top 0.5 %, z-score) and trains. Checkpoints go to
``OUT/checkpoint/last.pt``; rerunning resumes from there. The command line equivalent:
``fewshotseg train DATA/image_*.nii.gz --checkpoint-dir DIR``.

    python examples/02_train.py [--data DIR] [--out DIR] [--quick | --paper] [--iterations N]

Default (CPU): ResNet-18 backbone, 256 x 256, ``TrainConfig.cpu_preset()`` (8000 steps, about
an hour on 2 cores). ``--paper``: DeepLabV3-ResNet101 (COCO weights from the torch hub cache if
present), 100k steps (a GPU). ``--quick``: tiny backbone, 1 scan, 64 x 64, 5 steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fewshotseg as fss
from fewshotseg.models.backbones import coco_weights_path
from fewshotseg.superpixels import pseudolabel_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chaos_t2spir"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CHAOS T2-SPIR folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "examples")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny backbone, seconds")
    mode.add_argument("--paper", action="store_true", help="the paper's settings (GPU)")
    parser.add_argument("--iterations", type=int, help="override the number of steps")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)

    fold = fss.cross_validation_folds(fss.evaluation.CHAOS_PATIENT_IDS)[0]
    ids = fold.train[:1] if args.quick else fold.train
    cases = fss.datasets.chaos_t2spir(args.data, ids, labels=False)  # never the labels
    pseudo = []
    for case in cases:
        path = args.out / "pseudolabels" / pseudolabel_path(case.image).name
        if path.is_file():
            pseudo.append(fss.io.load_label_map(path))
        else:
            print(f"patient {case.id}: no pseudolabels at {path}; computing them")
            pseudo.append(fss.SuperpixelPseudolabeler()(case.image.array))
    images = [fss.preprocess.mri(c.image.array) for c in cases]

    checkpoint_dir = str(args.out / "checkpoint")
    if args.quick:
        image_size, backbone, weights = 64, "tiny", None
        config = fss.TrainConfig(
            iterations=args.iterations or 5,
            checkpoint_dir=checkpoint_dir,
            log_every=1,
            progress=False,
        )
    elif args.paper:
        image_size, backbone = 256, "deeplabv3_resnet101"
        weights = "coco" if coco_weights_path(backbone).is_file() else None
        overrides = {"iterations": args.iterations} if args.iterations else {}
        config = fss.TrainConfig(checkpoint_dir=checkpoint_dir, **overrides)
    else:
        image_size, backbone, weights = 256, "resnet18", None
        overrides = {"iterations": args.iterations} if args.iterations else {}
        config = fss.TrainConfig.cpu_preset(checkpoint_dir=checkpoint_dir, **overrides)
    min_foreground = max(1, round(100 * (image_size / 256) ** 2))
    sampler = fss.EpisodeSampler(
        images, pseudo, image_size=image_size, min_foreground=min_foreground, seed=config.seed
    )
    model = fss.ALPNet(backbone=backbone, backbone_weights=weights)
    trainer = fss.Trainer(model, sampler, config, device=args.device)
    started = time.perf_counter()
    history = trainer.fit()  # resumes from checkpoint_dir/last.pt when it is there
    loss = f", last loss {history.loss[-1]:.3f}" if history.loss else ""
    print(
        f"{backbone} at {image_size} px: step {trainer.step} of {config.iterations} in "
        f"{time.perf_counter() - started:.1f} s{loss}; checkpoint {checkpoint_dir}/last.pt"
    )


if __name__ == "__main__":
    main()
