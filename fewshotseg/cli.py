"""Command line: ``fewshotseg ...`` / ``python -m fewshotseg ...``.

Subcommands (each has ``--help``):

- ``pseudolabel``: scans -> superpixel pseudolabel files next to them (or in ``--out-dir``);
- ``train``: scans [+ pseudolabels] -> a checkpoint folder (resumable; works under ``torchrun``);
- ``predict``: support image + support label + query -> label file (+ PNG overlay);
- ``evaluate``: checkpoint + labelled scans -> Dice table (printed, and CSV/JSON with ``--out``);
- ``demo``: the main job: the shipped model on the shipped CHAOS scans, paper protocol.

Every scan goes through the same intensity recipe (``--modality``, default ``mri``: clip the
top 0.5 %, z-score), in training and at prediction; ``train`` records it in the checkpoint and
``predict``/``evaluate`` reuse it. Pseudolabels are computed on the raw scans (the labeler
normalises by itself). Errors print one line, ``fewshotseg: error: ...``, and exit with status 1
(2 for bad arguments); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import logging
import os
import re
import sys
import time
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fewshotseg._version import __version__
from fewshotseg.io import DERIVED_TAGS, PREDICTION_TAG, PSEUDOLABEL_TAG

__all__ = ["CLIError", "build_parser", "main"]

logger = logging.getLogger("fewshotseg")

_GLOB_CHARS = re.compile(r"[*?\[]")
_MODALITIES = ("mri", "ct", "none")
_BACKBONE_BY_PRESET = {"cpu": "resnet18", "paper": "deeplabv3_resnet101"}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the way to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fewshotseg: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------------ helpers


def _natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part
    )


def expand_paths(
    items: Sequence[str], *, what: str = "scan", skip_tags: Sequence[str] = ()
) -> list[Path]:
    """Expand paths and glob patterns (``data/image_*.nii.gz``) in order, natural-sorted per
    pattern. A pattern that matches nothing or a missing path is an error naming it. Files
    tagged ``.<tag>.`` for a tag in ``skip_tags`` (our own outputs: pseudolabels, predictions)
    are left out of pattern matches."""
    out: list[Path] = []
    for item in items:
        if _GLOB_CHARS.search(item):
            matches = sorted(glob.glob(os.path.expanduser(item)), key=_natural_key)
            matches = [m for m in matches if not any(f".{t}." in Path(m).name for t in skip_tags)]
            if not matches:
                raise CLIError(f"no {what} file matches {item!r}")
            out.extend(Path(m) for m in matches)
        else:
            path = Path(os.path.expanduser(item))
            if not path.exists():
                parent = path.parent.resolve()
                raise CLIError(f"{what} not found: {item!r} (looked in {str(parent)!r})")
            out.append(path)
    return out


def _device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def _load_scan(path: Path, axis: int) -> Any:
    from fewshotseg.io import load_volume

    return load_volume(path, axis=axis)


def _load_labels(path: Path, axis: int, like: Any, what: str) -> Any:
    from fewshotseg.io import load_label_map

    labels = load_label_map(path, axis=axis)
    if like is not None and labels.shape != like.shape:
        raise CLIError(
            f"{what} {str(path)!r} has shape {labels.shape} but its scan {str(like.path)!r} has "
            f"{like.shape}; pass them in the same order"
        )
    return labels


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of a Google-style docstring."""
    docs: dict[str, str] = {}
    names: list[str] = []
    in_attrs = False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        match = re.match(r"^ {8}([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for n in names:
                docs[n] = match.group(2).strip()
        elif line.startswith(" " * 12) and names:
            for n in names:
                docs[n] += " " + stripped
        elif stripped:
            break
    return docs


def _amp_value(text: str) -> bool | str:
    """``--amp`` values: auto, on/true/1, off/false/0."""
    value = {"auto": "auto", "on": True, "true": True, "1": True, "off": False, "false": False,
             "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return value


def _add_inference_amp_flags(parser: argparse.ArgumentParser) -> None:
    """``--amp`` (on), ``--amp auto``, ``--no-amp`` (the default) for the predictor."""
    parser.add_argument(
        "--amp",
        nargs="?",
        const=True,
        type=_amp_value,
        default=False,
        metavar="auto",
        help="mixed precision: bf16 on a CPU that runs it natively (AVX512-BF16, AMX) and on "
        "CUDA; 'auto' is silent where it is not available (default: off, float32)",
    )
    parser.add_argument("--no-amp", dest="amp", action="store_false", help=argparse.SUPPRESS)


def _add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, generated from the dataclass so they cannot drift.

    Every flag defaults to None, meaning "the preset's value"."""
    from fewshotseg.training import TrainConfig

    group = parser.add_argument_group(
        "training settings (fewshotseg.TrainConfig; default: the --preset's value)"
    )
    hints = typing.get_type_hints(TrainConfig)
    docs = _field_docs(TrainConfig)
    paper, cpu = TrainConfig(), TrainConfig.cpu_preset()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        p_val, c_val = getattr(paper, f.name), getattr(cpu, f.name)
        default = f"paper: {p_val}" + ("" if c_val == p_val else f", cpu: {c_val}")
        text = f"{docs.get(f.name, f.name)} ({default})".replace("%", "%%")
        if f.name == "amp":  # True, False or "auto": --amp, --amp auto, --no-amp
            group.add_argument(flag, nargs="?", const=True, type=_amp_value, default=None,
                               metavar="auto", help=text)
            group.add_argument("--no-amp", dest="amp", action="store_false", help=argparse.SUPPRESS)
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind in (int, float):
            group.add_argument(
                flag, type=kind, default=None, metavar=kind.__name__.upper(), help=text
            )
        else:
            group.add_argument(
                flag, type=str, default=None, metavar=f.name.split("_")[-1].upper(), help=text
            )


def _train_config(args: argparse.Namespace) -> Any:
    from fewshotseg.training import TrainConfig

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    if args.preset == "cpu":
        return TrainConfig.cpu_preset(**overrides)
    return TrainConfig(**overrides)


def _checkpoint_file(path: str) -> Path:
    file = Path(path)
    if file.is_dir():
        for name in ("last.pt", "best.pt"):
            if (file / name).is_file():
                return file / name
        raise CLIError(f"no checkpoint (last.pt or best.pt) in the folder {str(file)!r}")
    if not file.is_file():
        raise CLIError(f"checkpoint not found: {path!r} (looked in {str(file.parent.resolve())!r})")
    return file


def _load_predictor(args: argparse.Namespace) -> tuple[Any, str]:
    """The predictor from ``--checkpoint`` or ``--pretrained``, and the modality it wants."""
    from fewshotseg.inference import _DATA, PRETRAINED, SupportQueryPredictor
    from fewshotseg.training import load_checkpoint

    device = _device(args.device)
    kwargs: dict[str, Any] = {"device": device, "amp": getattr(args, "amp", False)}
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if getattr(args, "checkpoint", None):
        path = _checkpoint_file(args.checkpoint)
    elif not args.pretrained:
        raise CLIError("name a model: --checkpoint PATH or --pretrained NAME (e.g. chaos-ssl)")
    else:
        name = args.pretrained
        if name not in PRETRAINED:
            raise CLIError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
        path = _DATA / PRETRAINED[name]
        if not path.is_file():
            raise CLIError(
                f"the pretrained weights {name!r} ({path.name}) are not shipped with this "
                "installation; pass --checkpoint PATH (a checkpoint from 'fewshotseg train')"
            )
    ckpt = load_checkpoint(path)
    trained_on = ckpt.get("modality")
    modality = args.modality or str(trained_on or "mri")
    del ckpt
    if args.modality and trained_on and args.modality != trained_on:
        warnings.warn(
            f"--modality {args.modality}, but {path.name} was trained with the {trained_on} "
            "intensity recipe: the network will see inputs unlike its training",
            UserWarning,
            stacklevel=2,
        )
    data_modality = _dataset_modality(getattr(args, "dataset", None))
    if data_modality and data_modality != modality:
        warnings.warn(
            f"--dataset {args.dataset} is {data_modality.upper()}, but the {modality} "
            f"intensity recipe is applied ({path.name} was trained on "
            f"{str(trained_on or 'unknown').upper()} data); pass --modality {data_modality} "
            "and a model trained on that modality",
            UserWarning,
            stacklevel=2,
        )
    predictor = SupportQueryPredictor.from_checkpoint(path, **kwargs)
    predictor.modality = modality  # segment_volume applies it to raw volumes itself
    logger.info(
        "model %s on %s, image size %d, intensity recipe %s",
        path,
        device,
        predictor.image_size,
        modality,
    )
    return predictor, modality


def _dataset_modality(name: str | None) -> str | None:
    """``"ct"`` or ``"mri"`` for one of the paper's datasets (by ``DatasetInfo.modality``)."""
    from fewshotseg.datasets import DATASETS

    info = DATASETS.get(name) if name else None
    if info is None:
        return None
    return "ct" if info.modality.upper().startswith("CT") else "mri"


def _label_dtype(max_value: int) -> Any:
    import numpy as np

    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


# ---------------------------------------------------------------------------- subcommands


def _scan_id(path: Path) -> str:
    """A scan's id as ``evaluate --data`` reads it: ``image_7.nii.gz`` -> ``7``; other names
    keep their stem (``patient_7.mha`` -> ``patient_7``)."""
    from fewshotseg.io import split_suffix

    stem = split_suffix(path)[0]
    return stem[len("image_") :] if stem.startswith("image_") and len(stem) > 6 else stem


def _select_scans(scans: list[Path], args: argparse.Namespace) -> list[Path]:
    """The scans left by ``--fold`` (its training scans: neither its queries nor its support)
    and ``--exclude``; with ``--show-split``, print the split too."""
    from fewshotseg.evaluation import cross_validation_folds

    if args.fold is None and not args.exclude and not args.show_split:
        return scans
    if getattr(args, "pseudolabels", None) or getattr(args, "exclude_labels", None):
        raise CLIError(
            "--fold/--exclude pick scans by id, so they cannot be matched with files listed "
            "in order (--pseudolabels, --exclude-labels); keep the pseudolabels next to the "
            "scans or in --pseudolabel-dir"
        )
    ids = [_scan_id(s) for s in scans]
    names = dict(zip(ids, (s.name for s in scans), strict=True))
    held: dict[str, list[str]] = {}
    header = f"{len(scans)} scans, no fold"
    if args.fold is not None:
        keys: list[Any] = [int(i) for i in ids] if all(i.isdigit() for i in ids) else ids
        try:
            folds = cross_validation_folds(keys, args.folds)
        except ValueError as err:
            raise CLIError(f"--fold: {err}") from None
        if not 0 <= args.fold < len(folds):
            raise CLIError(f"--fold must be in 0..{len(folds) - 1}, got {args.fold}")
        fold = folds[args.fold]
        held["support"] = [str(fold.support)]
        held["queries"] = [str(i) for i in fold.test]
        header = (
            f"fold {args.fold} of {args.folds} over {len(scans)} scans (the rule of "
            "'fewshotseg evaluate --data')"
        )
    exclude = [str(e) for e in args.exclude or []]
    unknown = [e for e in exclude if e not in names and e not in names.values()]
    if unknown:
        raise CLIError(
            f"--exclude {' '.join(unknown)}: no such scan id or file name among the scans "
            f"(ids: {', '.join(ids)})"
        )
    held["excluded"] = [i for i in ids if i in exclude or names[i] in exclude]
    dropped = {i for group in held.values() for i in group}
    chosen = [s for s, i in zip(scans, ids, strict=True) if i not in dropped]
    if args.show_split:
        print(header)
        print(f"  train ({len(chosen)}): {', '.join(s.name for s in chosen)}")
        for what, group in held.items():
            if group:
                print(f"  {what} ({len(group)}): {', '.join(names[i] for i in group)}")
    else:
        logger.info("%s: %d scan(s) left to train on", header, len(chosen))
    if not chosen:
        raise CLIError("--fold/--exclude left no scans")
    return chosen


def _add_fold_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fold",
        type=int,
        default=None,
        help="keep only this fold's training scans: the scans are cut into --folds folds by "
        "id (image_N -> N) exactly as 'evaluate --data' does, and the fold's queries and "
        "support are left out",
    )
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument(
        "--exclude", nargs="+", metavar="ID", help="leave out these scans (ids or file names)"
    )
    p.add_argument(
        "--show-split",
        action="store_true",
        help="print which scans --fold/--exclude keep and leave out, then stop",
    )


def _cmd_pseudolabel(args: argparse.Namespace) -> int:
    from fewshotseg.io import save_volume
    from fewshotseg.superpixels import SuperpixelPseudolabeler, pseudolabel_path

    scans = expand_paths(args.scans, skip_tags=(args.tag, PREDICTION_TAG))
    scans = _select_scans(scans, args)
    if args.show_split:
        return 0
    options = {k: getattr(args, k) for k in ("scale", "sigma", "min_size", "body_threshold")}
    labeler = SuperpixelPseudolabeler(
        mode=args.mode, **{k: v for k, v in options.items() if v is not None}
    )
    targets = []
    for scan in scans:
        target = pseudolabel_path(scan, tag=args.tag)
        if args.out_dir is not None:
            target = Path(args.out_dir) / target.name
        if target.exists() and not args.overwrite:
            print(f"kept {target} (exists; --overwrite to recompute)")
            continue
        targets.append((scan, target))
    if not targets:
        return 0
    volumes = [_load_scan(scan, args.axis) for scan, _ in targets]
    started = time.perf_counter()
    labels = labeler.label_many(
        [v.array for v in volumes],
        spacings=[v.spacing for v in volumes],
        workers=args.workers,
        progress=not args.quiet,
        names=[scan.name for scan, _ in targets],
    )
    for (_, target), volume, lab in zip(targets, volumes, labels, strict=True):
        save_volume(lab.astype("int32"), target, like=volume)
        count = int(lab.max())
        unit = "superpixels per slice at most" if args.mode == "2d" else "supervoxels"
        print(f"wrote {target} ({count} {unit})")
    print(f"{len(targets)} scan(s) labelled in {time.perf_counter() - started:.1f} s")
    return 0


def _pseudolabels_for(args: argparse.Namespace, volumes: list[Any]) -> list[Any]:
    """Explicit --pseudolabels, else files found next to the scans (or in --pseudolabel-dir),
    else computed now (not saved)."""
    from fewshotseg.superpixels import SuperpixelPseudolabeler, pseudolabel_path

    if args.pseudolabels:
        files = expand_paths(args.pseudolabels, what="pseudolabel")
        if len(files) != len(volumes):
            raise CLIError(
                f"got {len(volumes)} scans but {len(files)} pseudolabel files; pass one per scan, "
                "in the same order"
            )
        return [
            _load_labels(f, args.axis, v, "pseudolabel")
            for f, v in zip(files, volumes, strict=True)
        ]
    found: list[Any] = []
    missing: list[int] = []
    for i, v in enumerate(volumes):
        file = pseudolabel_path(v)
        if args.pseudolabel_dir is not None:
            file = Path(args.pseudolabel_dir) / file.name
        if file.is_file():
            found.append(_load_labels(file, args.axis, v, "pseudolabel"))
        else:
            found.append(None)
            missing.append(i)
    if missing:
        logger.info(
            "computing %s pseudolabels of %d scan(s) (save them once with "
            "'fewshotseg pseudolabel')",
            args.mode,
            len(missing),
        )
        labeler = SuperpixelPseudolabeler(mode=args.mode)
        computed = labeler.label_many(
            [volumes[i].array for i in missing],
            spacings=[volumes[i].spacing for i in missing],
            workers=args.workers,
            progress=not args.quiet,
            names=[_volume_name(volumes[i], i) for i in missing],
        )
        for i, lab in zip(missing, computed, strict=True):
            found[i] = lab
    return found


def _volume_name(volume: Any, index: int) -> str:
    """A scan's file name for messages (``image_7.nii.gz``), else ``scan <index>``."""
    path = getattr(volume, "path", None)
    return Path(path).name if path is not None else f"scan {index}"


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from fewshotseg.episodes import AugmentConfig, EpisodeSampler
    from fewshotseg.models import AdaptiveLocalPrototypePool, ALPNet
    from fewshotseg.preprocess import apply_recipe
    from fewshotseg.training import (
        _OPTIMIZER_SETTINGS,
        CHECKPOINT_NAME,
        Trainer,
        init_distributed,
        load_checkpoint,
    )

    if args.checkpoint_dir is None and not args.show_split:
        raise CLIError(
            "train needs --checkpoint-dir DIR (where checkpoints go; a run there resumes)"
        )
    if args.exclude_classes and not args.exclude_labels:
        raise CLIError(
            "--exclude-classes needs --exclude-labels (the label files saying where "
            "those classes are, one per scan)"
        )
    config = _train_config(args)
    scans = expand_paths(args.scans, skip_tags=DERIVED_TAGS)
    scans = _select_scans(scans, args)
    if args.show_split:
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = str(init_distributed())
    else:
        device = _device(args.device)

    resume = Path(args.checkpoint_dir) / CHECKPOINT_NAME
    image_size = args.image_size
    modality = args.modality or "mri"
    if resume.is_file():
        ckpt = load_checkpoint(resume)
        model = ALPNet.from_config(ckpt["model_config"])
        image_size = int(ckpt.get("image_size", image_size or 256))
        modality = str(ckpt.get("modality", modality))
        # optimiser settings not given again on this command line stay the run's own (a flag
        # that is given changes them: Trainer.load applies and records it)
        saved = ckpt.get("config", {})
        kept = {k: saved[k] for k in _OPTIMIZER_SETTINGS
                if k in saved and getattr(args, k, None) is None}  # fmt: skip
        config = dataclasses.replace(config, **kept)
        logger.info(
            "resuming %s from step %d (model and optimiser settings from the checkpoint)",
            resume,
            int(ckpt["step"]),
        )
        del ckpt
    else:
        image_size = image_size or 256
        torch.manual_seed(config.seed)  # the initial weights are part of a reproducible run
        pool = AdaptiveLocalPrototypePool(local=not args.no_local)
        model = ALPNet(
            backbone=args.backbone or _BACKBONE_BY_PRESET[args.preset],
            backbone_weights=args.backbone_weights,
            feature_dim=args.feature_dim,
            pool=pool,
        )

    volumes = [_load_scan(s, args.axis) for s in scans]
    pseudo = _pseudolabels_for(args, volumes)
    exclude_from = None
    if args.exclude_classes:
        files = expand_paths(args.exclude_labels, what="label")
        if len(files) != len(volumes):
            raise CLIError(
                f"got {len(volumes)} scans but {len(files)} --exclude-labels files; "
                "pass one per scan, in the same order"
            )
        exclude_from = [
            _load_labels(f, args.axis, v, "label") for f, v in zip(files, volumes, strict=True)
        ]
    images = [apply_recipe(v.array, modality) for v in volumes]
    del volumes
    sampler = EpisodeSampler(
        images,
        pseudo,
        mode="superpixel",
        image_size=image_size,
        augment=None if args.no_augment else AugmentConfig(),
        exclude_classes=args.exclude_classes or (),
        exclude_from=exclude_from,
        min_foreground=args.min_foreground,
        seed=config.seed,
    )
    metadata = {"image_size": int(image_size), "modality": modality}
    trainer = Trainer(model, sampler, config, device=device, metadata=metadata)
    started = time.perf_counter()
    history = trainer.fit()
    if trainer.rank == 0:
        final = f", last loss {history.loss[-1]:.4f}" if history.loss else ""
        print(
            f"trained to step {trainer.step} of {config.iterations} in "
            f"{time.perf_counter() - started:.1f} s on {device}{final}; checkpoint: {resume}"
        )
        _plot_training_curve(Path(args.checkpoint_dir))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _plot_training_curve(run: Path) -> None:
    """``metrics.png`` beside the run's ``metrics.csv``, when matplotlib is installed."""
    if not (run / "metrics.csv").is_file():
        return
    try:
        from fewshotseg.viz import save_training_curve

        print(f"training curve: {save_training_curve(run)} (from {run / 'metrics.csv'})")
    except ImportError:
        logger.info('no training curve PNG without matplotlib: pip install "fewshotseg[viz]"')


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from fewshotseg.io import save_volume, sibling_path
    from fewshotseg.preprocess import apply_recipe

    support_path, label_path, query_path = expand_paths(
        [args.support, args.support_label, args.query]
    )
    support = _load_scan(support_path, args.axis)
    labels = _load_labels(label_path, args.axis, support, "support label")
    query = _load_scan(query_path, args.axis)
    predictor, modality = _load_predictor(args)
    classes = args.classes or [int(v) for v in np.unique(labels) if v != 0]
    missing = [c for c in classes if not (labels == c).any()]
    if missing or not classes:
        raise CLIError(
            f"the support label {str(label_path)!r} has no voxel of class(es) "
            f"{missing or 'any'}; choose classes it contains"
        )
    started = time.perf_counter()
    if args.support_slices:
        s_img = apply_recipe(support.array, modality)
        q_img = apply_recipe(query.array, modality)
        zs = args.support_slices
        bad = [z for z in zs if not -support.shape[0] <= z < support.shape[0]]
        if bad:
            raise CLIError(
                f"--support-slices {bad} out of range: the support has {support.shape[0]} slices"
            )
        mask = np.where(np.isin(labels[zs], classes), labels[zs], 0)
        prediction = predictor.predict(s_img[zs], mask, q_img)
    else:
        # raw volumes: the predictor applies its intensity recipe (modality) itself
        prediction = predictor.segment_volume(support.array, labels, query.array, classes=classes)
    prediction = np.asarray(prediction)
    out = Path(args.out) if args.out else sibling_path(query_path, PREDICTION_TAG)
    save_volume(prediction.astype(_label_dtype(int(prediction.max(initial=0)))), out, like=query)
    seconds = time.perf_counter() - started
    counts = {int(c): int((prediction == c).sum()) for c in classes}
    print(f"wrote {out} ({query.shape[0]} slices in {seconds:.1f} s; voxels per class {counts})")
    if args.overlay:
        from fewshotseg.viz import overlay_slices, spread_slices

        names = _class_names(args, classes)
        # slices spread over the query extent the support was matched to (what was segmented)
        zs = spread_slices(prediction, 3)
        fig = overlay_slices(query.array, prediction, zs, classes=names, rot90=1,
                             title=f"{query_path.name}: prediction")  # fmt: skip
        Path(args.overlay).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.overlay, dpi=100)
        print(f"wrote {args.overlay} (slices {', '.join(map(str, zs))})")
    return 0


def _class_names(args: argparse.Namespace, classes: Sequence[int]) -> dict[int, str]:
    """Names for the overlay's legend: ``--class-names``, else ``--dataset``'s, else "class N"."""
    from fewshotseg.datasets import DATASETS

    names = {int(c): f"class {c}" for c in classes}
    if getattr(args, "dataset", None):
        names.update({c: n for c, n in DATASETS[args.dataset].classes.items() if c in names})
    for item in getattr(args, "class_names", None) or []:
        value, sep, name = item.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip():
            raise CLIError(f"--class-names takes VALUE=NAME items (e.g. 1=liver), got {item!r}")
        names[int(value)] = name.strip()
    return names


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from fewshotseg.datasets import DATASETS, chaos_t2spir, find_cases, load_image_label_folder
    from fewshotseg.evaluation import (
        SETTING2_GROUPS,
        cross_validation_folds,
        evaluate_fold,
        excluded_classes,
    )
    from fewshotseg.preprocess import apply_recipe

    if (args.data is None) == (args.images is None):
        raise CLIError("evaluate needs either --data DIR or --images ... --labels ...")
    if args.data is not None:
        files = find_cases(args.data, "image_*", label_pattern="label_*", require_labels=False)
        ids = sorted((int(f.id) for f in files if f.id.isdigit() and f.label_path), key=int)
        if not ids:
            raise CLIError(f"no labelled image_N / label_N pairs in {args.data!r}")
        folds = cross_validation_folds(ids, args.folds)
        if not 0 <= args.fold < len(folds):
            raise CLIError(f"--fold must be in 0..{len(folds) - 1}, got {args.fold}")
        fold = folds[args.fold]
        loader = chaos_t2spir if args.dataset == "chaos_t2spir" else load_image_label_folder
        cases = loader(args.data, [fold.support, *fold.test])
        scans = [(c.id, c.image, c.label) for c in cases]
        fold_index: int | None = args.fold
    else:
        images = expand_paths(args.images, skip_tags=DERIVED_TAGS)
        labels = expand_paths(args.labels or [], what="label")
        if len(images) != len(labels) or len(images) < 2:
            raise CLIError(
                f"--images and --labels need the same number of files, at least 2 "
                f"(the first is the support); got {len(images)} and {len(labels)}"
            )
        scans = []
        for img, lab in zip(images, labels, strict=True):
            vol = _load_scan(img, args.axis)
            scans.append((img.name, vol, _load_labels(lab, args.axis, vol, "label")))
        fold_index = None

    predictor, modality = _load_predictor(args)
    (s_id, s_vol, s_lab), queries = scans[0], scans[1:]
    info = DATASETS.get(args.dataset) if args.dataset else None
    if args.setting == 2:
        if args.group is None:
            raise CLIError(f"--setting 2 needs --group ({' or '.join(SETTING2_GROUPS)})")
        classes = list(excluded_classes(2, args.group))
    elif args.classes:
        classes = args.classes
    elif info is not None:
        classes = list(info.evaluated_classes)
    else:
        classes = [int(v) for v in np.unique(s_lab) if v != 0]
    names = dict(info.classes) if info is not None else None
    # the realistic protocol gives segment_volume raw volumes (the predictor applies the recipe)
    recipe = "none" if args.protocol == "realistic" else modality
    s_img = apply_recipe(s_vol.array, recipe)
    started = time.perf_counter()
    table = evaluate_fold(
        predictor,
        s_img,
        s_lab,
        _LazyQueries({q_id: (q_vol, q_lab) for q_id, q_vol, q_lab in queries}, recipe),
        classes,
        protocol=args.protocol,
        ways=1 if args.ways == "1" else "all",
        class_names=names,
        support_id=s_id,
        setting=args.setting,
        fold=fold_index,
        progress=not args.quiet,
    )
    print(
        f"support {s_id}, queries {', '.join(q for q, _, _ in queries)}; protocol "
        f"{args.protocol}, setting {args.setting}, {args.ways}-way, intensity recipe {modality}"
    )
    print(table.to_markdown("summary"))
    print(table.to_markdown("rows"))
    print(f"mean Dice {100 * table.mean():.2f} % in {time.perf_counter() - started:.1f} s")
    if args.out:
        print(f"wrote {table.save(args.out)}")
    return 0


class _LazyQueries(dict):  # type: ignore[type-arg]
    """``{id: (volume, labels)}`` that preprocesses each query image when it is read."""

    def __init__(self, items: dict[str, tuple[Any, Any]], modality: str) -> None:
        super().__init__(items)
        self.modality = modality

    def __getitem__(self, key: str) -> tuple[Any, Any]:
        from fewshotseg.preprocess import apply_recipe

        vol, lab = super().__getitem__(key)
        return apply_recipe(vol.array, self.modality), lab


def _cmd_demo(args: argparse.Namespace) -> int:
    from fewshotseg.demo import format_report, run_demo
    from fewshotseg.inference import _DATA, PRETRAINED

    if args.checkpoint is None and not (_DATA / PRETRAINED["chaos-ssl"]).is_file():
        raise CLIError(
            f"the shipped weights {PRETRAINED['chaos-ssl']!r} are missing from this installation "
            f"({_DATA}); run the demo with your own model: fewshotseg demo --checkpoint PATH "
            "(a checkpoint from 'fewshotseg train')"
        )
    if args.fold is not None and args.data is None:
        raise CLIError(
            "--fold needs --data DIR (a CHAOS folder); the shipped scans are one support and "
            "one query, not folds"
        )
    args.pretrained = "chaos-ssl"
    predictor, modality = _load_predictor(args)
    result = run_demo(
        predictor,
        data=args.data,
        fold=args.fold or 0,
        protocol=args.protocol,
        modality=modality,
        overlay=args.out,
        progress=not args.quiet,
    )
    print(format_report(result, device=str(predictor.device)))
    return 0


# --------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``fewshotseg`` argument parser with its five subcommands."""
    parser = _Parser(
        prog="fewshotseg",
        description="Few-shot medical image segmentation trained without annotations (SSL-ALPNet).",
        epilog="Run 'fewshotseg demo' first; 'fewshotseg COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"fewshotseg {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    scans_opts = argparse.ArgumentParser(add_help=False)
    scans_opts.add_argument(
        "--axis",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="file axis (NIfTI order) to slice along (default 2, axial)",
    )
    model_opts = argparse.ArgumentParser(add_help=False)
    source = model_opts.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", metavar="PATH", help="a checkpoint file, or a folder holding last.pt"
    )
    source.add_argument(
        "--pretrained",
        metavar="NAME",
        default=None,
        help="a model shipped with the package (e.g. chaos-ssl)",
    )
    model_opts.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    model_opts.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="network input size (default: the checkpoint's)",
    )
    model_opts.add_argument(
        "--modality",
        choices=_MODALITIES,
        default=None,
        help="intensity recipe (default: the checkpoint's, else mri)",
    )
    _add_inference_amp_flags(model_opts)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # pseudolabel
    p = sub.add_parser(
        "pseudolabel",
        parents=[common, scans_opts],
        help="scans -> superpixel pseudolabel files",
        description="Compute superpixel pseudolabels of unlabeled scans and write them next to "
        "each scan (image_1.nii.gz -> image_1.superpixels.nii.gz) or into --out-dir.",
    )
    p.add_argument("scans", nargs="+", help="scan files, DICOM folders or glob patterns")
    p.add_argument(
        "--mode",
        choices=("2d", "3d"),
        default="2d",
        help="2d: Felzenszwalb per slice (the paper's); 3d: supervoxels",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--min-size", type=int, help="granularity (default 400 px in 2d, 5000 in 3d)")
    p.add_argument("--scale", type=float, help="2d only: Felzenszwalb scale (default 10)")
    p.add_argument("--sigma", type=float, help="smoothing (default 0.8 px in 2d, 1 mm in 3d)")
    p.add_argument(
        "--body-threshold",
        type=float,
        help="intensity above which a voxel may be body (default automatic)",
    )
    p.add_argument("--out-dir", help="write here instead of next to the scans")
    p.add_argument("--tag", default=PSEUDOLABEL_TAG, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="recompute existing files")
    _add_fold_flags(p)
    p.set_defaults(func=_cmd_pseudolabel)

    # train
    p = sub.add_parser(
        "train",
        parents=[common, scans_opts],
        help="scans [+ pseudolabels] -> checkpoint (resumable)",
        description="Self-supervised training on superpixel episodes. Rerunning with the same "
        "--checkpoint-dir resumes (raise --iterations to train longer). Under torchrun each "
        "process trains on its own episode stream (DistributedDataParallel).",
    )
    p.add_argument("scans", nargs="+", help="scan files, DICOM folders or glob patterns")
    p.add_argument(
        "--pseudolabels",
        nargs="+",
        metavar="PATH",
        help="pseudolabel files, one per scan in the same order (default: found next "
        "to the scans or in --pseudolabel-dir, else computed now)",
    )
    p.add_argument("--pseudolabel-dir", help="folder of 'fewshotseg pseudolabel --out-dir'")
    _add_fold_flags(p)
    p.add_argument(
        "--mode",
        choices=("2d", "3d"),
        default="2d",
        help="pseudolabel mode when they are computed now",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for computing pseudolabels")
    p.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu: resnet18, 8000 steps (20-90 min on 2 cores depending on the CPU; the log "
        "gives the measured time per step and an ETA after 5 steps); paper: "
        "deeplabv3_resnet101, 100k steps (a GPU; add --backbone-weights coco as the "
        "paper did). Default cpu",
    )
    p.add_argument(
        "--backbone",
        help="resnet18, deeplabv3_resnet50, deeplabv3_resnet101, tiny (default: the preset's)",
    )
    p.add_argument(
        "--backbone-weights",
        metavar="coco|PATH",
        help="coco (from the torch hub cache, never downloaded) or a weights file",
    )
    p.add_argument("--feature-dim", type=int, default=256, help="feature channels (default 256)")
    p.add_argument(
        "--no-local", action="store_true", help="class-level prototypes only (the PANet ablation)"
    )
    p.add_argument("--image-size", type=int, default=None, help="episode size (default 256)")
    p.add_argument(
        "--min-foreground",
        type=int,
        default=100,
        help="smallest superpixel (pixels at --image-size) used as foreground",
    )
    p.add_argument("--no-augment", action="store_true", help="no random transform of the query")
    p.add_argument(
        "--modality",
        choices=_MODALITIES,
        default=None,
        help="intensity recipe applied to every scan (default mri)",
    )
    p.add_argument(
        "--exclude-classes",
        type=int,
        nargs="+",
        metavar="C",
        help="setting 2: drop every slice that holds one of these label values",
    )
    p.add_argument(
        "--exclude-labels",
        nargs="+",
        metavar="PATH",
        help="label files saying where --exclude-classes are, one per scan",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    _add_train_config_flags(p)
    p.set_defaults(func=_cmd_train)

    # predict
    p = sub.add_parser(
        "predict",
        parents=[common, scans_opts, model_opts],
        help="support image + label + query -> label file",
        description="Segment a query scan from a labelled support scan, no query labels needed "
        "(SupportQueryPredictor.segment_volume): the query's slices are aligned with the "
        "support's by anatomy, each organ is segmented only where the alignment puts it, with "
        "its nearest support slices, and kept as its largest 3D component.",
    )
    p.add_argument("support", help="support scan")
    p.add_argument("support_label", help="its label file")
    p.add_argument("query", help="query scan")
    p.add_argument("-o", "--out", help="label file to write (default: QUERY.prediction.<suffix>)")
    p.add_argument(
        "--overlay",
        metavar="PNG",
        help="also write an overlay PNG: three slices spread over the segmented extent",
    )
    p.add_argument(
        "--class-names",
        nargs="+",
        metavar="VALUE=NAME",
        help="names for the overlay's legend, e.g. 1=liver 4=spleen",
    )
    p.add_argument(
        "--dataset",
        choices=("chaos_t2spir", "synapse_ct", "mscmrseg_bssfp"),
        help="take the class names from one of the paper's datasets (and warn when its "
        "modality differs from the model's)",
    )
    p.add_argument(
        "--classes",
        type=int,
        nargs="+",
        metavar="C",
        help="label values to segment (default: all in the support label)",
    )
    p.add_argument(
        "--support-slices",
        type=int,
        nargs="+",
        metavar="Z",
        help="use these support slices together for every query slice instead",
    )
    p.set_defaults(func=_cmd_predict)

    # evaluate
    p = sub.add_parser(
        "evaluate",
        parents=[common, scans_opts, model_opts],
        help="checkpoint + labelled scans -> Dice table",
        description="Score a model with the few-shot protocol: on a fold of an image_N/label_N "
        "folder (--data), or on --images/--labels where the first pair is the support.",
    )
    p.add_argument("--data", help="folder in the image_N / label_N layout (e.g. CHAOS)")
    p.add_argument("--fold", type=int, default=0, help="fold index (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--images", nargs="+", help="scans; the first is the support")
    p.add_argument("--labels", nargs="+", help="their label files, same order")
    p.add_argument(
        "--dataset",
        choices=("chaos_t2spir", "synapse_ct", "mscmrseg_bssfp"),
        help="class names and evaluated classes of one of the paper's datasets",
    )
    p.add_argument("--classes", type=int, nargs="+", metavar="C", help="label values to score")
    p.add_argument(
        "--protocol",
        choices=("paper", "whole_volume", "realistic"),
        default="paper",
        help="paper: the query's labels pick the scored slices and support chunks (the paper's "
        "tables); whole_volume: every slice scored, chunks still from the query's labels; "
        "realistic: segment_volume with no query labels, every slice scored (what a user gets)",
    )
    p.add_argument(
        "--setting",
        type=int,
        choices=(1, 2),
        default=1,
        help="the paper's setting: 1 (default; training may have seen the test organs) or 2 "
        "(the model was trained with --exclude-classes of one group; scores that group only, "
        "needs --group)",
    )
    p.add_argument(
        "--group",
        choices=("upper", "lower"),
        help="with --setting 2: the test group (upper: liver + spleen, lower: kidneys)",
    )
    p.add_argument(
        "--ways",
        choices=("1", "all"),
        default="1",
        help="1 (the paper's, one class per pass) or all (N-way)",
    )
    p.add_argument("--out", help="write the rows to a .csv or .json file")
    p.set_defaults(func=_cmd_evaluate)

    # demo
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the shipped model on the shipped CHAOS scans (the main job)",
        description="Segment liver, kidneys and spleen of CHAOS patient 2 from support patient "
        "8 (shipped with the package), with the paper's protocol; print the Dice per organ and "
        "the time, and write an overlay PNG.",
    )
    p.add_argument(
        "--data",
        help="a CHAOS-layout folder: fold --fold of it (support 8, queries 1, 2, 3, 5 for fold 0)",
    )
    p.add_argument(
        "--fold", type=int, default=None, help="with --data: which fold (0-4, default 0)"
    )
    p.add_argument("--checkpoint", metavar="PATH", help="your own checkpoint instead")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--protocol",
        choices=("paper", "whole_volume"),
        default="paper",
        help="paper (default): the query's labels pick the scored slices, as in the paper's "
        "tables; whole_volume: every slice segmented and scored",
    )
    p.add_argument(
        "--out",
        default="fewshotseg-demo.png",
        help="overlay PNG to write (default fewshotseg-demo.png)",
    )
    p.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--modality", choices=_MODALITIES, default=None, help=argparse.SUPPRESS)
    _add_inference_amp_flags(p)
    p.set_defaults(func=_cmd_demo)
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Through ``tqdm.write``: an active progress bar is cleared and redrawn below the line
        instead of the line running into it."""
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the command line: one log line, no source line."""
    logger.warning("warning: %s", message)


def _setup_logging(args: argparse.Namespace) -> tuple[int, logging.Handler]:
    """Route the library's log records to stderr; returns what to undo afterwards."""
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    previous = logger.level
    logger.setLevel(level)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return previous, handler


def _resume_hint(args: argparse.Namespace) -> str:
    """Where an interrupted run's checkpoint is and how to go on."""
    folder = getattr(args, "checkpoint_dir", None)
    if folder is None:
        return "checkpoint saved, rerun to resume"
    return (
        f"checkpoint saved in {Path(folder) / 'last.pt'}; resume with the same command "
        "(it continues from there)"
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(
        err,
        (
            CLIError,
            FileNotFoundError,
            ValueError,
            TypeError,
            ImportError,
            FileExistsError,
            PermissionError,
        ),
    ):
        return text
    return f"{type(err).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    previous, handler = _setup_logging(args)
    try:
        with warnings.catch_warnings():  # library warnings become log lines (restored after)
            warnings.showwarning = _log_warning
            return int(args.func(args))
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signal_number", None)  # training.TrainingInterrupted
        if signum is None:
            print("fewshotseg: interrupted", file=sys.stderr)
            return 130
        print(f"fewshotseg: {stop}; {_resume_hint(args)}", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        if args.debug:
            raise
        print(f"fewshotseg: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:  # leave the library's logger as it was (main may run inside another program)
        logger.removeHandler(handler)
        logger.setLevel(previous)
