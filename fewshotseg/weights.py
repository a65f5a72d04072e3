"""Weights that carry their preprocessing: the models shipped in the package, and how a
checkpoint says its inputs must be prepared.

As torchvision's weight enums carry their transforms, a fewshotseg checkpoint carries the side
its slices are resized to (``image_size``) and the intensity recipe its training scans went
through (``modality``, a key of `fewshotseg.preprocess.INTENSITY_RECIPES`). `preprocessing` reads
both; `fewshotseg.inference.SupportQueryPredictor.from_checkpoint` and ``.pretrained`` apply
them, so a user never has to know the recipe. The command line reads them here too.

`PRETRAINED` names the checkpoints shipped inside the package (nothing is ever downloaded) and
`pretrained_path` finds one. The checkpoint format itself (its keys, checks, content hash and
version) is `fewshotseg.checkpoints`.

Example:
    >>> from fewshotseg.checkpoints import load_checkpoint
    >>> preprocessing(load_checkpoint(pretrained_path("chaos-ssl")))
    Preprocessing(image_size=256, modality='mri')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PRETRAINED", "SHIPPED_DIR", "Preprocessing", "preprocessing", "pretrained_path"]

SHIPPED_DIR = Path(__file__).resolve().parent / "data"
"""The package's data folder, where the shipped checkpoints are."""
PRETRAINED: dict[str, str] = {"chaos-ssl": "chaos_ssl.pt"}
"""Checkpoints shipped inside the package: name -> file in `SHIPPED_DIR`.

``"chaos-ssl"``: ResNet-18 ALPNet trained self-supervised on unlabelled CHAOS T2-SPIR MRI
(256 x 256 input, MRI intensity recipe), 5.7 MB."""


def pretrained_path(name: str) -> Path:
    """The file of the shipped model ``name`` (a key of `PRETRAINED`).

    Raises:
        ValueError: ``name`` is not a shipped model (the message lists them).
        FileNotFoundError: this installation was built without the file.

    Example:
        >>> pretrained_path("chaos-ssl").name
        'chaos_ssl.pt'
        >>> pretrained_path("nope")
        Traceback (most recent call last):
        ...
        ValueError: unknown pretrained model 'nope'; available: ['chaos-ssl']
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
    path = SHIPPED_DIR / PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"the pretrained weights {path.name!r} are not in {path.parent}; this build of "
            "fewshotseg does not ship them"
        )
    return path


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint's inputs are prepared; ``None`` where the checkpoint does not say (files
    written before these keys existed).

    Attributes:
        image_size: the side slices are resized to for the network (the training size).
        modality: the intensity recipe of `fewshotseg.preprocess.apply_recipe` (``"mri"``,
            ``"ct"`` or ``"none"``) applied to whole volumes before slicing.

    Example:
        >>> Preprocessing(image_size=256, modality="mri")
        Preprocessing(image_size=256, modality='mri')
    """

    image_size: int | None = None
    modality: str | None = None


def preprocessing(checkpoint: dict[str, Any]) -> Preprocessing:
    """The `Preprocessing` a checkpoint carries (its ``image_size`` and ``modality`` entries).

    Args:
        checkpoint: a dict from `fewshotseg.checkpoints.load_checkpoint`, which has already
            checked both entries (an integer size in bounds, a known recipe).

    Example:
        >>> preprocessing({"model": {}, "image_size": 64, "modality": "ct"})
        Preprocessing(image_size=64, modality='ct')
        >>> preprocessing({"model": {}})  # an older file
        Preprocessing(image_size=None, modality=None)
    """
    size = checkpoint.get("image_size")
    modality = checkpoint.get("modality")
    return Preprocessing(
        image_size=None if size is None else int(size),
        modality=None if modality is None else str(modality),
    )
