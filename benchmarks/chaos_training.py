"""Self-supervised training and few-shot evaluation on CHAOS T2-SPIR (the paper's Abd-MRI).

Steps (each a subcommand; runs keep their state under ``runs/``, which git ignores):

    python benchmarks/chaos_training.py pseudolabel [--mode 2d --min-size 400 --name 2d]
    python benchmarks/chaos_training.py train --run NAME [--fold 0 --setting 1 --group upper
        --backbone resnet18 --iterations 8000 --lr 1e-3 --image-size 256]
    python benchmarks/chaos_training.py evaluate --run NAME [--untrained] [--step-label ...]
    python benchmarks/chaos_training.py export --run NAME --out fewshotseg/data/chaos_ssl.pt
    python benchmarks/chaos_training.py summarize runs/eval/*.json   # the cross-fold table

Training sees only the images of the fold's 15 training patients and their superpixel
pseudolabels, never a label (setting 2 uses the labels only to drop the slices that contain
the test group's organs, as the protocol prescribes). Evaluation: support patient = first of the
next group, queries = the fold's 4 patients, the paper's protocol and the whole-volume variant,
1-way, per organ, and the realistic protocol (``segment_volume`` on the raw volumes, no query
labels). Intensities: ``fewshotseg.preprocess.mri`` (clip the top 0.5 %, z-score) for
training and evaluation alike; pseudolabels are computed on the raw volumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fewshotseg as fss
from fewshotseg import evaluation, preprocess
from fewshotseg.datasets import CHAOS_CLASSES, SETTING2_GROUPS, chaos_t2spir
from fewshotseg.results import summarize_folds

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chaos_t2spir"
RUNS = ROOT / "runs"
ORGANS = CHAOS_CLASSES

log = logging.getLogger("chaos")


def load_cases(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{patient id: (image, label)}`` from the CHAOS folder or a file written by ``pack``."""
    if data.suffix == ".npz":
        with np.load(data) as packed:
            ids = sorted((k[6:] for k in packed.files if k.startswith("image_")), key=int)
            return {
                i: (packed[f"image_{i}"].astype(np.float32), packed[f"label_{i}"].astype(np.int64))
                for i in ids
            }
    cases = chaos_t2spir(data)
    return {c.id: (c.image.array, c.label.astype(np.int64)) for c in cases}


def cmd_pack(args: argparse.Namespace) -> None:
    """One compressed file with every scan (uint16) and label (uint8), for a machine without
    nibabel or the shared folder (the GPU machine); ``--data FILE.npz`` reads it back."""
    arrays = {}
    for i, (image, label) in load_cases(args.data).items():
        if not (np.array_equal(image, np.round(image)) and 0 <= image.min() <= image.max() < 2**16):
            raise ValueError(f"patient {i}: intensities are not whole numbers in uint16 range")
        arrays[f"image_{i}"] = image.astype(np.uint16)
        arrays[f"label_{i}"] = label.astype(np.uint8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    log.info("packed %d scans into %s (%.1f MB)", len(arrays) // 2, out, out.stat().st_size / 1e6)


def fold_split(ids: list[str], fold: int) -> evaluation.Fold:
    return evaluation.cross_validation_folds(ids, n_folds=5)[fold]


def pseudo_path(mode: str) -> Path:
    return RUNS / f"pseudolabels_{mode}.npz"


def cmd_pseudolabel(args: argparse.Namespace) -> None:
    cases = load_cases(args.data)
    options = {"min_size": args.min_size, "scale": args.scale}
    labeler = fss.SuperpixelPseudolabeler(
        mode=args.mode, **{k: v for k, v in options.items() if v is not None}
    )
    ids = list(cases)
    start = time.perf_counter()
    spacing = (7.7, 1.25, 1.25)
    labels = labeler.label_many(
        [cases[i][0] for i in ids], spacings=[spacing] * len(ids), workers=args.workers
    )
    RUNS.mkdir(exist_ok=True)
    name = args.name or args.mode
    np.savez_compressed(pseudo_path(name), **{i: lab for i, lab in zip(ids, labels, strict=True)})
    per_slice = [len(np.unique(s[s > 0])) for lab in labels for s in lab if s.any()]
    log.info(
        "pseudolabels %r (%s) for %d scans in %.1f s: %.1f superpixels per non-empty slice",
        name,
        labeler,
        len(ids),
        time.perf_counter() - start,
        float(np.mean(per_slice)),
    )


class ShiftedQuerySampler(fss.EpisodeSampler):
    """Research probe (issue 15: a model that can say "absent"): the query is a slice up to
    ``query_shift`` slices from the support's, in the same scan, with the support's 3D
    supervoxel as its class, so it may show none of it (an all-background target). Needs
    pseudolabels whose ids persist across slices (``pseudolabel --mode 3d``)."""

    def __init__(self, *args, query_shift: int, **kwargs) -> None:
        self.query_shift = int(query_shift)
        super().__init__(*args, **kwargs)

    def _choose(self, index, rng):
        info = super()._choose(index, rng)
        depth = self._images[info.support_scan].shape[0]
        z = info.query_slice
        low, high = max(0, z - self.query_shift), min(depth, z + self.query_shift + 1)
        return dataclasses.replace(info, query_slice=int(rng.integers(low, high)))


def build_sampler(args: argparse.Namespace, cases, train_ids: list[str]) -> fss.EpisodeSampler:
    pseudo = np.load(pseudo_path(args.pseudo_mode))
    images = [preprocess.mri(cases[i][0]) for i in train_ids]
    labels = [pseudo[i] for i in train_ids]
    kwargs = {}
    if args.setting == 2:
        kwargs["exclude_classes"] = evaluation.excluded_classes(2, args.group)
        kwargs["exclude_from"] = [cases[i][1] for i in train_ids]
    if args.query_shift:
        if args.setting == 2 or not args.pseudo_mode.startswith("3d"):
            raise SystemExit("--query-shift needs 3D pseudolabels (--pseudo-mode 3d...) and "
                             "setting 1 (a shifted query could show an excluded organ)")
        kwargs["query_shift"] = args.query_shift
    kind = ShiftedQuerySampler if args.query_shift else fss.EpisodeSampler
    return kind(
        images,
        labels,
        mode="superpixel",
        image_size=args.image_size,
        min_foreground=args.min_foreground,
        seed=args.seed,
        augment=fss.AugmentConfig(bias_field=args.bias_field, gamma=tuple(args.gamma)),
        **kwargs,
    )


def run_dir(args: argparse.Namespace) -> Path:
    return RUNS / args.run


def cmd_train(args: argparse.Namespace) -> None:
    cases = load_cases(args.data)
    fold = fold_split(sorted(cases, key=int), args.fold)
    train_ids = [str(i) for i in fold.train]
    sampler = build_sampler(args, cases, train_ids)
    log.info("training on %d scans: %s (%s)", len(train_ids), train_ids, sampler)
    torch.set_num_threads(args.threads)
    # every step has the same shapes, so cuDNN's per-shape algorithm search pays for itself
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)  # the initial weights are part of a reproducible run
    model = fss.ALPNet(
        backbone=args.backbone, pool=fss.AdaptiveLocalPrototypePool(local=not args.panet)
    )
    config = fss.TrainConfig(
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_step=args.lr_step,
        lr_gamma=args.lr_gamma,
        seed=args.seed,
        checkpoint_dir=str(run_dir(args)),
        checkpoint_every=args.checkpoint_every,
        snapshot_every=args.snapshot_every,
        num_workers=args.workers,
        log_every=50,
        progress=args.progress,
        amp={"off": False, "on": True, "auto": "auto"}[args.amp],
    )
    run_dir(args).mkdir(parents=True, exist_ok=True)
    (run_dir(args) / "args.json").write_text(json.dumps(vars(args), default=str, indent=1))
    metadata = {"image_size": args.image_size, "modality": "mri"}
    trainer = fss.Trainer(model, sampler, config, device=args.device, metadata=metadata)
    try:
        trainer.fit()
    except fss.TrainingInterrupted as stop:
        log.warning("%s; rerun the same command to resume", stop)
        return
    log.info("done: step %d, %.0f s", trainer.step, trainer.history.seconds)


def evaluate_model(models: list[fss.ALPNet], args: argparse.Namespace, cases) -> fss.ResultTable:
    """The three protocols on a fold's queries; several models: their ensemble."""
    fold = fold_split(sorted(cases, key=int), args.fold)
    support = str(fold.support if args.support is None else args.support)
    if support in {str(t) for t in fold.test}:
        raise SystemExit(f"--support {support} is one of fold {args.fold}'s queries {fold.test}")
    members = [
        fss.SupportQueryPredictor(
            m, device=args.device, image_size=args.image_size, batch_size=8, modality="mri"
        )
        for m in models
    ]
    predictor = members[0] if len(members) == 1 else fss.PredictorEnsemble(members)
    classes = list(ORGANS) if args.setting == 1 else list(SETTING2_GROUPS[args.group])
    prepare = preprocess.mri
    if args.match_histogram:
        # Test-time experiment: map each scan's raw intensities onto the pooled histogram of the
        # fold's training images before the usual recipe (an outlier support, patient 36, is the
        # case in point). Not part of the method; off by default.
        pooled = np.concatenate([cases[str(t)][0].ravel() for t in fold.train])
        ref_values, ref_counts = np.unique(pooled, return_counts=True)
        ref_quantiles = np.cumsum(ref_counts) / pooled.size

        def prepare(image: np.ndarray) -> np.ndarray:
            _, inverse, counts = np.unique(image, return_inverse=True, return_counts=True)
            mapped = np.interp(np.cumsum(counts) / image.size, ref_quantiles, ref_values)
            return preprocess.mri(mapped[inverse].reshape(image.shape).astype(np.float32))

    prepared = {str(q): (prepare(cases[str(q)][0]), cases[str(q)][1]) for q in fold.test}
    # realistic: segment_volume gets raw intensities and applies the predictor's recipe itself
    raw = {str(q): cases[str(q)] for q in fold.test}
    tables = []
    for protocol in ("paper", "whole_volume", "realistic"):
        as_given = protocol == "realistic" and not args.match_histogram
        queries = raw if as_given else prepared
        tables.append(
            evaluation.evaluate_fold(
                predictor,
                cases[support][0] if as_given else prepare(cases[support][0]),
                cases[support][1],
                queries,
                classes,
                protocol=protocol,
                class_names=ORGANS,
                support_id=support,
                setting=args.setting,
                fold=args.fold,
            )
        )
    return fss.ResultTable.concat(tables)


def cmd_evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.ensemble and args.untrained:
        raise SystemExit("--ensemble averages trained runs: leave out --untrained")
    cases = load_cases(args.data)
    if args.untrained:
        torch.manual_seed(args.seed)
        models = [fss.ALPNet(
            backbone=args.backbone, pool=fss.AdaptiveLocalPrototypePool(local=not args.panet)
        )]
        name = f"untrained_{args.backbone}{'_panet' if args.panet else ''}"
        step = 0
    else:
        models, steps = [], []
        for run in [args.run, *args.ensemble]:
            ckpt = fss.training.load_checkpoint(RUNS / run / args.checkpoint)
            models.append(fss.ALPNet.from_config(ckpt["model_config"]))
            models[-1].load_state_dict(ckpt["model"])
            steps.append(int(ckpt["step"]))
        name, step = "+".join([args.run, *args.ensemble]), steps[0]
    start = time.perf_counter()
    table = evaluate_model([m.eval() for m in models], args, cases)
    seconds = time.perf_counter() - start
    out_dir = RUNS / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = (
        f"{name}_fold{args.fold}_s{args.setting}"
        + (f"_{args.group}" if args.setting == 2 else "")
        + (f"_support{args.support}" if args.support is not None else "")
        + ("_histmatch" if args.match_histogram else "")
        + f"_step{step}"
    )
    table.save(out_dir / f"{stem}.json")
    print(f"## {stem} (evaluated in {seconds:.0f} s)")
    print(table.to_markdown("summary"))
    for protocol in ("paper", "whole_volume"):
        sub = table.filter(protocol=protocol)
        per = sub.per_class()
        cells = ", ".join(f"{ORGANS[c]} {100 * v:.1f}" for c, v in per.items())
        print(f"{protocol}: mean {100 * sub.mean():.2f} ({cells})")


def cmd_export(args: argparse.Namespace) -> None:
    ckpt = fss.training.load_checkpoint(run_dir(args) / args.checkpoint)
    small = {
        "model": {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()},
        "model_config": ckpt["model_config"],
        "image_size": args.image_size,
        "step": ckpt["step"],
        "config": ckpt["config"],
        "version": ckpt["version"],
        "modality": "mri",
        "training_data": (
            f"CHAOS T2-SPIR images (no labels) of the 15 patients outside fold {args.fold}"
            + (f", without the slices showing the {args.group} organs (setting 2)"
               if args.setting == 2 else "")
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, out)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)


def cmd_summarize(args: argparse.Namespace) -> None:
    """The cross-fold table of ``fewshotseg.results.summarize_folds`` from evaluation files; the
    training step is read from each file name (``..._step7000.json``)."""
    steps = [re.search(r"_step(\d+)", Path(path).stem) for path in args.files]
    print(
        summarize_folds(
            [fss.ResultTable.load(path) for path in args.files],
            steps=[int(m.group(1)) if m else None for m in steps],
            protocol=args.protocol,
            class_names=ORGANS,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("pseudolabel")
    p.add_argument("--mode", choices=["2d", "3d"], default="2d")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--min-size", type=int, help="granularity (default: the labeler's)")
    p.add_argument("--scale", type=float, help="Felzenszwalb scale, 2d only")
    p.add_argument("--name", help="pseudolabel set name (default: the mode); train --pseudo-mode")

    p = sub.add_parser("pack")
    p.add_argument("--out", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", default="ssl")
    common.add_argument("--fold", type=int, default=0)
    common.add_argument("--setting", type=int, choices=[1, 2], default=1)
    common.add_argument("--group", choices=["upper", "lower"], default="upper")
    common.add_argument("--backbone", default="resnet18")
    common.add_argument("--image-size", type=int, default=256)
    common.add_argument("--panet", action="store_true", help="local=False (PANet baseline)")
    common.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", parents=[common])
    p.add_argument("--iterations", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=1000)
    p.add_argument("--lr-gamma", type=float, default=0.98)
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="keep step_NNNNNN.pt every N steps (a learning curve); 0: last.pt only")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers making episodes")
    p.add_argument("--pseudo-mode", default="2d", help="pseudolabel set name: 2d, 3d or a --name")
    p.add_argument("--min-foreground", type=int, default=100)
    p.add_argument("--bias-field", type=float, default=0.0,
                   help="largest log-gain of the smooth intensity field (AugmentConfig.bias_field)")
    p.add_argument("--gamma", type=float, nargs=2, default=[0.5, 1.5], metavar=("LOW", "HIGH"),
                   help="range of the gamma exponent (AugmentConfig.gamma; the paper's 0.5 1.5)")
    p.add_argument("--query-shift", type=int, default=0,
                   help="probe: the query is a slice up to N slices from the support's (3D "
                   "pseudolabels; it may not show the supervoxel); 0: the same slice")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--amp", choices=["off", "on", "auto"], default="off",
                   help="mixed precision (bf16 on a CPU that runs it natively)")

    p = sub.add_parser("evaluate", parents=[common])
    p.add_argument("--untrained", action="store_true")
    p.add_argument("--checkpoint", default="last.pt")
    p.add_argument("--support", type=int, help="another support patient than the fold's")
    p.add_argument("--ensemble", metavar="RUN", action="append", default=[],
                   help="also this run's --checkpoint (repeatable): the models' probabilities "
                   "averaged (fewshotseg.PredictorEnsemble), scored with all three protocols")
    p.add_argument(
        "--match-histogram", action="store_true",
        help="experiment: match every scan to the fold's pooled training histogram first",
    )

    p = sub.add_parser("export", parents=[common])
    p.add_argument("--checkpoint", default="last.pt")
    p.add_argument("--out", required=True)

    p = sub.add_parser("summarize", help="cross-fold Markdown table from evaluate's files")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--protocol", choices=evaluation.PROTOCOLS, default="paper",
                   help="whose per-organ Dice to show (the means of all three are shown)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    {
        "pack": cmd_pack,
        "pseudolabel": cmd_pseudolabel,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "export": cmd_export,
        "summarize": cmd_summarize,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
