"""Cross-validation folds and the paper's two settings: which scans and classes a run uses.

A fold names its query scans, its support scan and its training scans
(:func:`cross_validation_folds`, the rule METHOD.md fixes for CHAOS, for any list of ids). A
setting says which classes a model may have seen in training: setting 1 removes nothing,
setting 2 removes every training slice that shows a class of the test group
(:func:`excluded_classes`, :func:`setting_runs`). `fewshotseg.evaluation` runs the protocols
over these folds; ``fewshotseg train --fold`` uses the same split.

Example:
    >>> f = cross_validation_folds(range(8), n_folds=4)[1]
    >>> f.test, f.support, f.train
    ((2, 3), 4, (0, 1, 5, 6, 7))
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fewshotseg.datasets import CHAOS_CLASSES, SETTING2_GROUPS, _natural_key

__all__ = [
    "Fold",
    "SettingRun",
    "cross_validation_folds",
    "excluded_classes",
    "setting_runs",
    "support_scans",
]


def _check_class(cls: Any) -> int:
    if isinstance(cls, (bool, np.bool_)) or not isinstance(cls, (int, np.integer)) or cls <= 0:
        raise ValueError(f"a class must be a positive integer label value, got {cls!r}.")
    return int(cls)


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold.

    Attributes:
        index: fold number ``k`` (0-based).
        test: the query scans' ids (the k-th group).
        support: the support scan's id (the first id of the next group, wrapping around).
        train: every other id (images only for self-supervised training).

    Example:
        >>> f = cross_validation_folds(["a", "b", "c", "d"], n_folds=2)[1]
        >>> f.index, f.test, f.support, f.train
        (1, ('c', 'd'), 'a', ('b',))
    """

    index: int
    test: tuple[Hashable, ...]
    support: Hashable
    train: tuple[Hashable, ...]


def _sorted_ids(ids: Sequence[Hashable]) -> list[Hashable]:
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return sorted(ids, key=lambda i: int(i))  # type: ignore[call-overload]
    if all(isinstance(i, str) for i in ids):
        return sorted(ids, key=lambda i: _natural_key(str(i)))
    raise TypeError(
        "patient_ids must be all integers or all strings, got "
        f"{sorted({type(i).__name__ for i in ids})}."
    )


def cross_validation_folds(patient_ids: Iterable[Hashable], n_folds: int = 5) -> list[Fold]:
    """The paper's cross-validation folds (CHAOS as METHOD.md fixes them), for any id list.

    Ids are sorted (integers by value; strings in natural order, so ``"2" < "10"``) and cut into
    ``n_folds`` consecutive groups of ``g = len(ids) // n_folds``. Fold ``k`` tests
    ``ids[g k : g k + g]``; its support scan is ``ids[(g k + g) mod len(ids)]`` (the first of the
    next group); training uses the other ``len(ids) - g - 1`` scans. For the 20 CHAOS patients,
    fold 0 tests 1, 2, 3, 5 with support 8.

    Args:
        patient_ids: distinct scan ids, all int or all str.
        n_folds: number of folds, >= 2.

    Returns:
        ``n_folds`` :class:`Fold` objects.

    Raises:
        ValueError: duplicate ids, ``n_folds < 2``, or ``len(ids)`` not a multiple of ``n_folds``
            (drop or add scans so that every fold has the same size).

    Example:
        >>> from fewshotseg.datasets import CHAOS_PATIENT_IDS
        >>> f = cross_validation_folds(CHAOS_PATIENT_IDS)[0]
        >>> f.test, f.support, len(f.train)
        ((1, 2, 3, 5), 8, 15)
    """
    ids = list(patient_ids)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"patient_ids has duplicates: {ids}.")
    if not ids or len(ids) % n_folds:
        raise ValueError(
            f"{len(ids)} patient ids cannot be split into {n_folds} equal folds; pass a number of "
            f"scans divisible by n_folds (e.g. drop {len(ids) % n_folds} scans or change n_folds)."
        )
    ids = _sorted_ids(ids)
    g = len(ids) // n_folds
    folds = []
    for k in range(n_folds):
        test = tuple(ids[g * k : g * k + g])
        support = ids[(g * k + g) % len(ids)]
        train = tuple(i for i in ids if i not in test and i != support)
        folds.append(Fold(index=k, test=test, support=support, train=train))
    return folds


def support_scans(folds: Sequence[Fold], index: int, n: int = 1) -> tuple[Hashable, ...]:
    """The ``n`` support scans of fold ``index`` when it takes several: its support first, then
    the scans after it in its group (the next fold's queries).

    The extra supports are training scans of this fold: self-supervised training read their
    images, never their labels, so labelling them as supports stays few-shot (docs/results.md,
    "Several support scans").

    Args:
        folds: the folds of :func:`cross_validation_folds`.
        index: the fold.
        n: number of support scans, from 1 to the size of a group.

    Returns:
        ``n`` scan ids; the first is ``folds[index].support``.

    Example:
        >>> from fewshotseg.datasets import CHAOS_PATIENT_IDS
        >>> support_scans(cross_validation_folds(CHAOS_PATIENT_IDS), 0, n=3)
        (8, 10, 13)
    """
    if not 0 <= index < len(folds):
        raise ValueError(f"index must be in 0..{len(folds) - 1}, got {index!r}.")
    group = folds[(index + 1) % len(folds)].test
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(group):
        raise ValueError(f"n must be an integer from 1 to {len(group)} (a group), got {n!r}.")
    assert group[0] == folds[index].support
    return tuple(group[:n])


def excluded_classes(
    setting: int,
    group: str | Iterable[int] | None = None,
    *,
    groups: Mapping[str, Sequence[int]] = SETTING2_GROUPS,
) -> tuple[int, ...]:
    """Classes whose slices are removed from training in the paper's setting 1 or 2.

    Setting 1 removes nothing (training images may show the test organs). Setting 2 removes every
    training slice that contains a class of the test group (pass the result as
    ``EpisodeSampler(exclude_classes=...)``).

    Args:
        setting: 1 or 2.
        group: setting 2's test group: a name in ``groups`` (``"upper"`` = liver + spleen,
            ``"lower"`` = kidneys for CHAOS) or the class ids themselves. Ignored for setting 1.
        groups: named groups of class ids (default :data:`fewshotseg.datasets.SETTING2_GROUPS`).

    Returns:
        The class ids to exclude, ascending.

    Example:
        >>> excluded_classes(1, "upper"), excluded_classes(2, "upper"), excluded_classes(2, [3])
        ((), (1, 4), (3,))
    """
    if setting not in (1, 2) or isinstance(setting, bool):
        raise ValueError(f"setting must be 1 or 2, got {setting!r}.")
    if setting == 1:
        return ()
    if group is None:
        raise ValueError(f"setting 2 needs the test group: one of {sorted(groups)} or class ids.")
    if isinstance(group, str):
        if group not in groups:
            raise ValueError(f"unknown group {group!r}; known groups: {sorted(groups)}.")
        members = groups[group]
    else:
        members = list(group)
    return tuple(sorted({_check_class(c) for c in members}))


@dataclass(frozen=True)
class SettingRun:
    """One training/evaluation run of a setting.

    Attributes:
        name: the group's name (``"all"`` in setting 1).
        classes: the classes evaluated with this run's model.
        exclude: the classes whose slices are removed from its training set.

    Example:
        >>> run = setting_runs(1, classes=[1, 2])[0]
        >>> run.name, run.classes, run.exclude
        ('all', (1, 2), ())
    """

    name: str
    classes: tuple[int, ...]
    exclude: tuple[int, ...]


def setting_runs(
    setting: int,
    classes: Iterable[int] = tuple(CHAOS_CLASSES),
    *,
    groups: Mapping[str, Sequence[int]] = SETTING2_GROUPS,
) -> list[SettingRun]:
    """The models a setting needs (per fold): which classes each evaluates and excludes.

    Setting 1: one model for every class, nothing excluded. Setting 2: one model per group,
    trained without the group's slices and evaluated on the group's classes.

    Example:
        >>> [(r.name, r.classes, r.exclude) for r in setting_runs(2)]
        [('upper', (1, 4), (1, 4)), ('lower', (2, 3), (2, 3))]
    """
    cls = tuple(_check_class(c) for c in classes)
    if setting == 1:
        return [SettingRun(name="all", classes=cls, exclude=())]
    runs = []
    for name in groups:
        members = excluded_classes(setting, name, groups=groups)
        evaluated = tuple(c for c in cls if c in members)
        if evaluated:
            runs.append(SettingRun(name=name, classes=evaluated, exclude=members))
    missing = [c for c in cls if not any(c in r.classes for r in runs)]
    if missing:
        raise ValueError(f"classes {missing} belong to no group of {dict(groups)}; add a group.")
    return runs
