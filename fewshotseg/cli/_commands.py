"""The subcommands: ``args`` (from `fewshotseg.cli.build_parser`) in, exit status out.

Each ``cmd_*`` is what one subcommand runs; heavy imports (torch, the model) happen inside them
so that ``fewshotseg --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fewshotseg.cli._common import (
    CLIError,
    _device,
    _load_labels,
    _load_predictor,
    _load_scan,
    expand_paths,
    logger,
)
from fewshotseg.io import DERIVED_TAGS, PREDICTION_TAG

_BACKBONE_BY_PRESET = {"cpu": "resnet18", "paper": "deeplabv3_resnet101"}


def _train_config(args: argparse.Namespace) -> Any:
    from fewshotseg.training import TrainConfig

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    preset = TrainConfig.cpu_preset if args.preset == "cpu" else TrainConfig
    config, base = preset(**overrides), preset()
    if "lr" not in overrides and config.batch_size != base.batch_size:
        # the loss is the batch mean, so the preset's lr belongs to the preset's batch size
        scale = config.batch_size / base.batch_size
        logger.warning(
            "--batch-size %d keeps the %s preset's lr %g, chosen for batch %d; scaled with the "
            "batch it would be --lr %g (and --lr-step %d keeps the decay per episode)",
            config.batch_size, args.preset, config.lr, base.batch_size, config.lr * scale,
            max(1, round(config.lr_step / scale)),
        )
    return config


def _label_dtype(max_value: int) -> Any:
    import numpy as np

    if max_value <= np.iinfo(np.uint8).max:
        return np.uint8
    if max_value <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


def _scan_id(path: Path) -> str:
    """A scan's id as ``evaluate --data`` reads it: ``image_7.nii.gz`` -> ``7``; other names
    keep their stem (``patient_7.mha`` -> ``patient_7``)."""
    from fewshotseg.io import split_suffix

    stem = split_suffix(path)[0]
    return stem[len("image_") :] if stem.startswith("image_") and len(stem) > 6 else stem


def _select_scans(scans: list[Path], args: argparse.Namespace) -> list[Path]:
    """The scans left by ``--fold`` (its training scans: neither its queries nor its support)
    and ``--exclude``; with ``--show-split``, print the split too."""
    from fewshotseg.folds import cross_validation_folds

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


def cmd_pseudolabel(args: argparse.Namespace) -> int:
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
    labels, reports = labeler.label_many(
        [v.array for v in volumes],
        spacings=[v.spacing for v in volumes],
        workers=args.workers,
        progress=not args.quiet,
        names=[scan.name for scan, _ in targets],
        return_reports=True,
    )  # a scan whose body mask looks wrong gets a warning (a log line) naming it
    for (_, target), volume, lab, report in zip(targets, volumes, labels, reports, strict=True):
        save_volume(lab.astype("int32"), target, like=volume)
        count = int(lab.max())
        unit = "superpixels per slice at most" if args.mode == "2d" else "supervoxels"
        print(f"wrote {target} ({count} {unit})\n  {report}")
    print(f"{len(targets)} scan(s) labelled in {time.perf_counter() - started:.1f} s")
    return 0


def _pseudolabels_for(args: argparse.Namespace, volumes: list[Any]) -> list[Any]:
    """Explicit --pseudolabels, else files found next to the scans (or in --pseudolabel-dir),
    else computed now (not saved)."""
    from fewshotseg.superpixels import SuperpixelPseudolabeler, pseudolabel_path

    if args.pseudolabels:
        files = _one_per_scan(
            expand_paths(args.pseudolabels, what="pseudolabel"), volumes, "pseudolabel files"
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


def cmd_train(args: argparse.Namespace) -> int:
    from fewshotseg.training import (
        CHECKPOINT_NAME,
        Trainer,
        close_distributed,
        init_distributed,
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
    model, config, image_size, modality = _model_to_train(args, config, resume)
    sampler = _training_sampler(args, scans, config, image_size, modality)
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
    del trainer  # its DDP wrapper holds the process group
    close_distributed()
    return 0


def _model_to_train(
    args: argparse.Namespace, config: Any, resume: Path
) -> tuple[Any, Any, int, str]:
    """``(model, config, image_size, modality)``: the run's own when ``resume`` exists (the
    optimiser settings not given again on this command line stay the run's), else new ones."""
    import torch

    from fewshotseg.models import AdaptiveLocalPrototypePool, ALPNet
    from fewshotseg.training import _OPTIMIZER_SETTINGS, load_checkpoint
    from fewshotseg.weights import preprocessing

    modality = args.modality or "mri"
    if not resume.is_file():
        torch.manual_seed(config.seed)  # the initial weights are part of a reproducible run
        pool = AdaptiveLocalPrototypePool(local=not args.no_local)
        model = ALPNet(
            backbone=args.backbone or _BACKBONE_BY_PRESET[args.preset],
            backbone_weights=args.backbone_weights,
            feature_dim=args.feature_dim,
            pool=pool,
        )
        return model, config, args.image_size or 256, modality
    ckpt = load_checkpoint(resume)
    model = ALPNet.from_config(ckpt["model_config"])
    carried = preprocessing(ckpt)  # the run's own size and recipe
    image_size = carried.image_size or args.image_size or 256
    modality = carried.modality or modality
    # a flag that is given changes an optimiser setting: Trainer.load applies and records it
    saved = ckpt.get("config", {})
    kept = {k: saved[k] for k in _OPTIMIZER_SETTINGS
            if k in saved and getattr(args, k, None) is None}  # fmt: skip
    logger.info(
        "resuming %s from step %d (model and optimiser settings from the checkpoint)",
        resume,
        int(ckpt["step"]),
    )
    return model, dataclasses.replace(config, **kept), image_size, modality


def _training_sampler(
    args: argparse.Namespace, scans: list[Path], config: Any, image_size: int, modality: str
) -> Any:
    """The superpixel episode sampler over the scans (the intensity recipe applied), with
    setting 2's exclusions when ``--exclude-classes`` is given."""
    from fewshotseg.episodes import EpisodeSampler
    from fewshotseg.preprocess import apply_recipe

    volumes = [_load_scan(s, args.axis) for s in scans]
    pseudo = _pseudolabels_for(args, volumes)
    exclude_from = None
    if args.exclude_classes:
        files = _one_per_scan(
            expand_paths(args.exclude_labels, what="label"), volumes, "--exclude-labels files"
        )
        exclude_from = [
            _load_labels(f, args.axis, v, "label") for f, v in zip(files, volumes, strict=True)
        ]
    images = [apply_recipe(v.array, modality) for v in volumes]
    del volumes
    return EpisodeSampler(
        images,
        pseudo,
        mode="superpixel",
        image_size=image_size,
        augment=None if args.no_augment else _augmentation(modality, args.bias_field),
        exclude_classes=args.exclude_classes or (),
        exclude_from=exclude_from,
        min_foreground=args.min_foreground,
        seed=config.seed,
    )


def _augmentation(modality: str, bias_field: float | None) -> Any:
    """The recipe's transform for the modality; ``--bias-field`` overrides its bias field."""
    from fewshotseg.transforms import AugmentConfig

    config = AugmentConfig.for_modality(modality)
    if bias_field is None:
        return config
    return dataclasses.replace(config, bias_field=bias_field)


def _plot_training_curve(run: Path) -> None:
    """``metrics.png`` beside the run's ``metrics.csv``, when matplotlib is installed."""
    if not (run / "metrics.csv").is_file():
        return
    try:
        from fewshotseg.viz import save_training_curve

        print(f"training curve: {save_training_curve(run)} (from {run / 'metrics.csv'})")
    except ImportError:
        logger.info('no training curve PNG without matplotlib: pip install "fewshotseg[viz]"')


def cmd_predict(args: argparse.Namespace) -> int:
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
    supports = [(support, labels, label_path)]
    for extra_scan, extra_label in args.add_support:
        scan_path, extra_path = expand_paths([extra_scan, extra_label])
        scan = _load_scan(scan_path, args.axis)
        supports.append(
            (scan, _load_labels(extra_path, args.axis, scan, "support label"), extra_path)
        )
    if args.support_slices and len(supports) > 1:
        raise CLIError("--support-slices picks slices of one support scan; drop --add-support")
    for _, label_map, path in supports:
        missing = [c for c in classes if not (label_map == c).any()]
        if missing or not classes:
            raise CLIError(
                f"the support label {str(path)!r} has no voxel of class(es) "
                f"{missing or 'any'}; choose classes it contains (--classes)"
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
        scans, label_maps = [s.array for s, _, _ in supports], [lab for _, lab, _ in supports]
        prediction = predictor.segment_volume(scans, label_maps, query.array, classes=classes)
    prediction = np.asarray(prediction)
    out = Path(args.out) if args.out else sibling_path(query_path, PREDICTION_TAG)
    save_volume(prediction.astype(_label_dtype(int(prediction.max(initial=0)))), out, like=query)
    seconds = time.perf_counter() - started
    counts = {int(c): int((prediction == c).sum()) for c in classes}
    print(f"wrote {out} ({query.shape[0]} slices in {seconds:.1f} s; voxels per class {counts})")
    if args.overlay:
        more = f" + {len(supports) - 1} more" if len(supports) > 1 else ""
        _write_overlay(args, query.array, prediction, classes, f"{query_path.name}: prediction "
                       f"from {support_path.name}{more}")  # fmt: skip
    return 0


def _write_overlay(
    args: argparse.Namespace, image: Any, prediction: Any, classes: Sequence[int], title: str
) -> None:
    """``--overlay``: a few query slices chosen by each class's extent in the prediction (where
    the support's classes were localised, `fewshotseg.viz.extent_slices`), organs named."""
    from fewshotseg.viz import extent_slices, overlay_slices, slice_extents

    names = _class_names(args, classes)
    unnamed = [c for c in classes if names[c] == f"class {c}"]
    if unnamed:
        logger.info(
            "the overlay calls class(es) %s 'class N': name them with --class-names VALUE=NAME "
            "or --dataset",
            ", ".join(map(str, unnamed)),
        )
    extents = slice_extents(prediction)
    missing = [names[c] for c in classes if c not in extents]
    if missing:
        title += f" (nothing found: {', '.join(missing)})"
    zs = extent_slices(prediction, 4)
    fig = overlay_slices(image, prediction, zs, classes=names, rot90=1, title=title)
    Path(args.overlay).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.overlay, dpi=100)
    found = ", ".join(f"{names[c]} in {lo}-{hi}" for c, (lo, hi) in extents.items() if c in names)
    print(f"wrote {args.overlay} (slices {', '.join(map(str, zs))}; segmented: {found or 'none'})")


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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fewshotseg.datasets import DATASETS
    from fewshotseg.evaluation import evaluate_fold
    from fewshotseg.preprocess import apply_recipe

    if (args.data is None) == (args.images is None):
        raise CLIError("evaluate needs either --data DIR or --images ... --labels ...")
    if args.supports < 1 or (args.supports > 1 and args.protocol != "realistic"):
        raise CLIError(
            f"--supports {args.supports}: give 1, or more with --protocol realistic (the paper's "
            "and the whole-volume protocols take one support scan)"
        )
    scans, fold_index = _evaluation_scans(args)
    predictor, modality = _load_predictor(args)
    supports, queries = scans[: args.supports], scans[args.supports :]
    info = DATASETS.get(args.dataset) if args.dataset else None
    classes = _evaluated_classes(args, supports[0][2], info)
    names = dict(info.classes) if info is not None else None
    # the realistic protocol gives segment_volume raw volumes (the predictor applies the recipe)
    recipe = "none" if args.protocol == "realistic" else modality
    s_ids = [s_id for s_id, _, _ in supports]
    started = time.perf_counter()
    table = evaluate_fold(  # lists of one support are that support (evaluate_pair)
        predictor,
        [apply_recipe(s_vol.array, recipe) for _, s_vol, _ in supports],
        [s_lab for _, _, s_lab in supports],
        _LazyQueries({q_id: (q_vol, q_lab) for q_id, q_vol, q_lab in queries}, recipe),
        classes,
        protocol=args.protocol,
        ways=1 if args.ways == "1" else "all",
        class_names=names,
        support_id=s_ids,
        setting=args.setting,
        fold=fold_index,
        progress=not args.quiet,
    )
    print(
        f"support{'s' if len(s_ids) > 1 else ''} {', '.join(s_ids)}, queries "
        f"{', '.join(q for q, _, _ in queries)}; protocol {args.protocol}, setting "
        f"{args.setting}, {args.ways}-way, intensity recipe {modality}"
    )
    print(table.to_markdown("summary"))
    print(table.to_markdown("rows"))
    print(f"mean Dice {100 * table.mean():.2f} % in {time.perf_counter() - started:.1f} s")
    if args.out:
        print(f"wrote {table.save(args.out)}")
    return 0


def _evaluation_scans(args: argparse.Namespace) -> tuple[list[tuple[str, Any, Any]], int | None]:
    """``[(id, volume, labels), ...]`` with the ``--supports`` first, and the fold index: the
    fold's supports and queries of ``--data``, or ``--images``/``--labels`` in order (no fold)."""
    from fewshotseg.datasets import chaos_t2spir, find_cases, load_image_label_folder
    from fewshotseg.folds import cross_validation_folds, support_scans

    if args.data is not None:
        files = find_cases(args.data, "image_*", label_pattern="label_*", require_labels=False)
        ids = sorted((int(f.id) for f in files if f.id.isdigit() and f.label_path), key=int)
        if not ids:
            raise CLIError(f"no labelled image_N / label_N pairs in {args.data!r}")
        folds = cross_validation_folds(ids, args.folds)
        if not 0 <= args.fold < len(folds):
            raise CLIError(f"--fold must be in 0..{len(folds) - 1}, got {args.fold}")
        fold = folds[args.fold]
        group = len(fold.test)
        if args.supports > group:
            raise CLIError(f"--supports {args.supports}: a fold of {args.data!r} has {group} "
                           f"scans per group, so at most {group} supports")
        loader = chaos_t2spir if args.dataset == "chaos_t2spir" else load_image_label_folder
        cases = loader(args.data, [*support_scans(folds, args.fold, args.supports), *fold.test])
        return [(c.id, c.image, c.label) for c in cases], args.fold
    images = expand_paths(args.images, skip_tags=DERIVED_TAGS)
    labels = expand_paths(args.labels or [], what="label")
    if len(images) != len(labels) or len(images) < args.supports + 1:
        raise CLIError(
            f"--images and --labels need the same number of files, at least "
            f"{args.supports + 1} (the first {args.supports} the support"
            f"{'s' if args.supports > 1 else ''}); got {len(images)} and {len(labels)}"
        )
    scans = []
    for img, lab in zip(images, labels, strict=True):
        vol = _load_scan(img, args.axis)
        scans.append((img.name, vol, _load_labels(lab, args.axis, vol, "label")))
    return scans, None


def _evaluated_classes(args: argparse.Namespace, support_labels: Any, info: Any) -> list[int]:
    """Setting 2's group, else ``--classes``, else the dataset's evaluated classes, else every
    class of the support."""
    import numpy as np

    from fewshotseg.datasets import SETTING2_GROUPS
    from fewshotseg.folds import excluded_classes

    if args.setting == 2:
        if args.group is None:
            raise CLIError(f"--setting 2 needs --group ({' or '.join(SETTING2_GROUPS)})")
        return list(excluded_classes(2, args.group))
    if args.classes:
        return args.classes
    if info is not None:
        return list(info.evaluated_classes)
    return [int(v) for v in np.unique(support_labels) if v != 0]


class _LazyQueries(dict):  # type: ignore[type-arg]
    """``{id: (volume, labels)}`` that preprocesses each query image when it is read."""

    def __init__(self, items: dict[str, tuple[Any, Any]], modality: str) -> None:
        super().__init__(items)
        self.modality = modality

    def __getitem__(self, key: str) -> tuple[Any, Any]:
        from fewshotseg.preprocess import apply_recipe

        vol, lab = super().__getitem__(key)
        return apply_recipe(vol.array, self.modality), lab


def cmd_demo(args: argparse.Namespace) -> int:
    from fewshotseg.demo import format_report, run_demo
    from fewshotseg.weights import PRETRAINED, SHIPPED_DIR, pretrained_path

    if args.checkpoint is None:
        try:
            pretrained_path("chaos-ssl")
        except FileNotFoundError:
            raise CLIError(
                f"the shipped weights {PRETRAINED['chaos-ssl']!r} are missing from this "
                f"installation ({SHIPPED_DIR}); run the demo with your own model: fewshotseg "
                "demo --checkpoint PATH (a checkpoint from 'fewshotseg train')"
            ) from None
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


def _one_per_scan(files: list, volumes: list, what: str) -> list:
    """``files``, if there is one per scan; else a one-line error."""
    if len(files) != len(volumes):
        raise CLIError(
            f"got {len(volumes)} scans but {len(files)} {what}; pass one per scan, in the same "
            "order"
        )
    return files
