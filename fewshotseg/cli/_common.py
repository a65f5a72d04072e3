"""What several subcommands share: the one-line error, paths and globs, devices, scans and
labels read from files, and the predictor a checkpoint or a shipped model gives."""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("fewshotseg")

_GLOB_CHARS = re.compile(r"[*?\[]")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def expand_paths(
    items: Sequence[str], *, what: str = "scan", skip_tags: Sequence[str] = ()
) -> list[Path]:
    """Expand paths and glob patterns (``data/image_*.nii.gz``) in order, natural-sorted per
    pattern. A pattern that matches nothing or a missing path is an error naming it. Files
    tagged ``.<tag>.`` for a tag in ``skip_tags`` (our own outputs: pseudolabels, predictions)
    are left out of pattern matches."""
    from fewshotseg.datasets import _natural_key  # the order cases are read in

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
    """The predictor from ``--checkpoint`` or ``--pretrained`` (each file read once), and the
    modality it wants: ``--modality``, else the recipe the checkpoint carries, else mri.
    Several ``--checkpoint`` give a `fewshotseg.PredictorEnsemble` (probabilities averaged)."""
    from fewshotseg.ensemble import PredictorEnsemble
    from fewshotseg.inference import SupportQueryPredictor
    from fewshotseg.weights import PRETRAINED, pretrained_path

    device = _device(args.device)
    kwargs: dict[str, Any] = {"device": device, "amp": getattr(args, "amp", False)}
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    checkpoints = getattr(args, "checkpoint", None)
    if isinstance(checkpoints, str):  # the demo takes one
        checkpoints = [checkpoints]
    if checkpoints:
        paths = [_checkpoint_file(c) for c in checkpoints]
    elif not args.pretrained:
        raise CLIError("name a model: --checkpoint PATH or --pretrained NAME (e.g. chaos-ssl)")
    else:
        name = args.pretrained
        try:
            paths = [pretrained_path(name)]
        except ValueError as err:  # not a shipped model: the message lists them
            raise CLIError(str(err)) from None
        except FileNotFoundError:
            raise CLIError(
                f"the pretrained weights {name!r} ({PRETRAINED[name]}) are not shipped with this "
                "installation; pass --checkpoint PATH (a checkpoint from 'fewshotseg train')"
            ) from None
    members = [SupportQueryPredictor.from_checkpoint(path, **kwargs) for path in paths]
    # the recipes the checkpoints carry (None: one does not say)
    carried = {m.modality for m in members if m.modality is not None}
    if len(carried) > 1 and not args.modality:
        raise CLIError(
            f"the checkpoints were trained with different intensity recipes ({sorted(carried)}); "
            "an ensemble needs models trained for the same kind of scan"
        )
    modality = args.modality or str(next(iter(carried), "mri"))
    for path, member in zip(paths, members, strict=True):
        trained_on = member.modality
        if args.modality and trained_on and args.modality != trained_on:
            warnings.warn(
                f"--modality {args.modality}, but {path.name} was trained with the {trained_on} "
                "intensity recipe: the network will see inputs unlike its training",
                UserWarning,
                stacklevel=2,
            )
        member.modality = modality  # segment_volume applies it to raw volumes itself
    data_modality = _dataset_modality(getattr(args, "dataset", None))
    if data_modality and data_modality != modality:
        warnings.warn(
            f"--dataset {args.dataset} is {data_modality.upper()}, but the {modality} "
            f"intensity recipe is applied (the model was trained on "
            f"{str(next(iter(carried), 'unknown')).upper()} data); pass --modality "
            f"{data_modality} and a model trained on that modality",
            UserWarning,
            stacklevel=2,
        )
    for path, member in zip(paths, members, strict=True):
        logger.info(
            "model %s on %s, image size %d, intensity recipe %s",
            path,
            device,
            member.image_size,
            modality,
        )
    if len(members) > 1:
        logger.info("%d models: their probabilities are averaged (an ensemble)", len(members))
        return PredictorEnsemble(members), modality
    return members[0], modality


def _dataset_modality(name: str | None) -> str | None:
    """``"ct"`` or ``"mri"`` for one of the paper's datasets (by ``DatasetInfo.modality``)."""
    from fewshotseg.datasets import DATASETS

    info = DATASETS.get(name) if name else None
    if info is None:
        return None
    return "ct" if info.modality.upper().startswith("CT") else "mri"

