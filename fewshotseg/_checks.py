"""Input checks that several modules share: arrays from numpy or torch, real-valued and finite
images, and integer label maps.

Each check raises `TypeError` or `ValueError` with a message that names the argument and says
what to pass instead. Checks that only one module needs (shapes of its own arguments, torch-side
checks of the predictor) stay in that module. torch is never imported here: a tensor is
recognised by its ``detach`` and ``cpu`` methods.

The public face of `to_label_map` is `fewshotseg.io.to_label_map` (also importable as
`fewshotseg.metrics.as_label_map`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_finite", "check_real", "to_label_map", "to_numpy"]


def to_numpy(x: Any, name: str, *, sequences: bool = False) -> np.ndarray:
    """A numpy array as it is, a torch tensor (any device) as a numpy array, else `TypeError`.

    Args:
        x: the argument.
        name: what to call it in the error message.
        sequences: also accept lists and tuples (through ``np.asarray``).

    Example:
        >>> import torch
        >>> to_numpy(torch.ones(2), "image").dtype, to_numpy([1, 2], "x", sequences=True).shape
        (dtype('float32'), (2,))
        >>> to_numpy("scan.nii.gz", "image")
        Traceback (most recent call last):
        ...
        TypeError: image must be a numpy array or torch tensor, got str; ...
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        return x.detach().cpu().numpy()
    if sequences and isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(
        f"{name} must be a numpy array or torch tensor, got {type(x).__name__}; "
        "convert it with np.asarray(...) first (load files with fewshotseg.io.load_volume)"
    )


def check_real(array: np.ndarray, name: str) -> None:
    """`TypeError` unless ``array`` holds real numbers (an integer or float dtype; not bool,
    complex or object).

    Example:
        >>> check_real(np.zeros(2, np.int16), "image")
        >>> check_real(np.zeros(2, bool), "image")
        Traceback (most recent call last):
        ...
        TypeError: image must have a real numeric dtype (real numbers: integer or float), got bool
    """
    kind = array.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"{name} must have a real numeric dtype (real numbers: integer or float), "
            f"got {array.dtype}"
        )


def check_finite(array: np.ndarray, name: str) -> None:
    """`ValueError` when a floating-point ``array`` holds NaN or infinite values.

    Example:
        >>> check_finite(np.array([1.0, np.inf]), "volume")
        Traceback (most recent call last):
        ...
        ValueError: volume contains NaN or infinite values; replace them first, e.g. ...
    """
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; replace them first, e.g. "
            f"np.nan_to_num(x, nan=x[np.isfinite(x)].min())"
        )


def to_label_map(array: Any, name: str = "labels") -> np.ndarray:
    """Check an integer label map and return it as a numpy integer array.

    The one dtype rule of fewshotseg's label maps: an array of an integer dtype is returned as
    it is (no copy); a bool array, or a float array holding whole numbers (label files are
    often stored as floats), becomes int32. Values must be >= 0 (0 is background).

    Args:
        array: numpy array, torch tensor (any device), list or tuple; at least 1-D.
        name: what to call it in error messages.

    Returns:
        The labels, same shape: ``array`` itself when it has an integer dtype, else int32.

    Raises:
        TypeError: not an array, or a dtype other than integer, bool or float.
        ValueError: a scalar; NaN, infinite, fractional or negative values; floats beyond
            the int32 range.

    Example:
        >>> to_label_map(np.array([0.0, 1.0, 4.0]))
        array([0, 1, 4], dtype=int32)
        >>> a = np.array([[0, 2]], np.int16); to_label_map(a) is a
        True
        >>> to_label_map(np.array([0.5, 1.0]), "pred")
        Traceback (most recent call last):
        ...
        ValueError: pred has non-integer values: a label map holds whole numbers ...
    """
    a = to_numpy(array, name, sequences=True)
    if a.ndim == 0:
        raise ValueError(f"{name} must be at least 1-D (a slice or a volume), got a scalar")
    if a.dtype.kind in "iu":
        out = a
    elif a.dtype.kind == "b":
        out = a.astype(np.int32)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(
                f"{name} contains NaN or infinite values; a label map holds whole numbers >= 0"
            )
        if not np.array_equal(a, np.rint(a)):
            raise ValueError(
                f"{name} has non-integer values: a label map holds whole numbers (0 = "
                "background). Was it resampled with linear interpolation? Use nearest (order=0) "
                "for labels; from probabilities, pass probabilities.argmax(0)"
            )
        info = np.iinfo(np.int32)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise ValueError(f"{name}: label values must fit in int32")
        out = a.astype(np.int32)
    else:
        raise TypeError(
            f"{name} must have an integer, bool or float dtype, got {a.dtype}; pass an integer "
            "label map (0 = background)"
        )
    if out.size and out.min() < 0:
        raise ValueError(
            f"{name} has negative values (down to {out.min()}); labels are 0 for background "
            "and positive integers for classes"
        )
    return out
