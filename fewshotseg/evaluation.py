"""Few-shot evaluation protocols on labeled volumes.

The protocol of the SSL-ALPNet paper's tables (from SE-Net), as ``docs/evaluation.md`` and
METHOD.md pin it, for one support scan and one query scan, per class ``c``:

1. Support slices: list the slices of the support scan that contain ``c``; with ``parts = 3`` the
   support slices are ``lst[int(p * len(lst))]`` for ``p = 1/6, 1/2, 5/6``
   (:func:`support_slice_indices`; ``p = (2 i + 1) / (2 parts)`` in general).
2. Query chunks: the query's own ground-truth range ``[z_min, z_max]`` of ``c`` is split into
   ``parts`` equal chunks; slice ``z`` is in chunk
   ``min(parts - 1, int((z - z_min) // ((z_max - z_min) / parts)))`` (:func:`query_chunks`).
   Chunk ``i`` is segmented with support slice ``i`` (1-way 1-shot).
3. Scoring: ``"paper"`` scores only the slices in ``[z_min, z_max]``; ``"whole_volume"`` segments
   and scores every slice (slices below ``z_min`` use support slice 0, above ``z_max`` the last),
   so false positives outside the organ count. Dice per scan and class comes from the voxel
   counts summed over the scored slices (a 3D Dice). Tables average over query scans, then over
   classes; a class absent from both prediction and ground truth is NaN and left out.

Predictors are used by duck typing: any object with
``predict(support_img, support_mask, query) -> labels`` (or a plain callable with that signature),
where ``support_img`` is ``(K, H, W)`` float32, ``support_mask`` ``(K, H, W)`` int64 labels (0
background, classes keep their label values), ``query`` ``(D, H', W')`` float32, and the result is
a ``(D, H', W')`` integer label map using the support's label values (numpy or torch).
:class:`fewshotseg.inference.SupportQueryPredictor` is one. The support is fixed within a call,
so the protocol calls ``predict`` once per (class, chunk) with all of that chunk's query slices
stacked (once per chunk with ``ways="all"``).

What the protocols produce and run over lives next door, and is re-exported here so that
``from fewshotseg.evaluation import ResultTable`` keeps working: the result table in
`fewshotseg.results`, the folds and settings in `fewshotseg.folds`, the support slices and query
chunks of steps 1-2 in `fewshotseg.chunks`, the CHAOS patient ids, class names and setting-2
groups in `fewshotseg.datasets`.

Example:
    >>> import numpy as np
    >>> labels = np.zeros((12, 8, 8), dtype=np.int64)
    >>> labels[2:10, 2:6, 2:6] = 1
    >>> image = labels.astype(np.float32)
    >>> oracle = lambda s_img, s_mask, q: np.rint(q).astype(np.int64)  # reads the answer
    >>> table = evaluate_pair(oracle, image, labels, image, labels, classes=[1])
    >>> table.rows[0].dice
    1.0
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from fewshotseg._checks import check_real, to_label_map, to_numpy
from fewshotseg.chunks import (
    _check_parts,
    _volume_labels,
    chunk_centres,
    chunk_of,
    class_slices,
    query_chunks,
    support_slice_indices,
)
from fewshotseg.datasets import CHAOS_CLASSES, CHAOS_PATIENT_IDS, SETTING2_GROUPS
from fewshotseg.folds import (
    Fold,
    SettingRun,
    _check_class,
    cross_validation_folds,
    excluded_classes,
    setting_runs,
    support_scans,
)
from fewshotseg.metrics import assd, confusion_counts, hd95
from fewshotseg.results import PROTOCOLS, ResultRow, ResultTable, SummaryRow

__all__ = [
    "CHAOS_CLASSES",
    "CHAOS_PATIENT_IDS",
    "PROTOCOLS",
    "SETTING2_GROUPS",
    "Fold",
    "ResultRow",
    "ResultTable",
    "SettingRun",
    "SummaryRow",
    "chunk_centres",
    "chunk_of",
    "class_slices",
    "cross_validation_folds",
    "evaluate_cross_validation",
    "evaluate_fold",
    "evaluate_pair",
    "excluded_classes",
    "query_chunks",
    "setting_runs",
    "support_scans",
    "support_slice_indices",
]

logger = logging.getLogger(__name__)

ProtocolName = Literal["paper", "whole_volume", "realistic"]


def __getattr__(name: str) -> Any:
    if name == "Protocol":  # renamed in 0.2 (issue 18): it shadowed typing.Protocol
        warnings.warn(
            "fewshotseg.evaluation.Protocol is deprecated and will be removed in the next "
            "release; it is now called ProtocolName",
            DeprecationWarning,
            stacklevel=2,
        )
        return ProtocolName
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _volume_image(image: Any, name: str) -> np.ndarray:
    image = to_numpy(image, name)
    if image.dtype != np.bool_:
        check_real(image, name)
    if image.ndim != 3:
        raise ValueError(
            f"{name} must be a (D, H, W) volume with slices along axis 0, got shape {image.shape}."
        )
    return image.astype(np.float32, copy=False)



# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


def _predict_fn(predictor: Any) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Any]:
    fn = getattr(predictor, "predict", None)
    if callable(fn):
        return fn
    if callable(predictor):
        return predictor
    raise TypeError(
        "predictor must have a predict(support_img, support_mask, query) method (e.g. "
        f"SupportQueryPredictor) or be such a callable, got {type(predictor).__name__}."
    )


def _run_predict(fn: Callable, s_img: np.ndarray, s_mask: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = to_label_map(fn(s_img, s_mask, q), "predictor output")
    if out.shape != q.shape:
        raise ValueError(
            f"the predictor returned shape {out.shape} for a query of shape {q.shape}; it must "
            "return one label per query voxel."
        )
    return out


def _ways_str(ways: Any) -> str:
    if ways == "all":
        return "all"
    if not isinstance(ways, bool) and isinstance(ways, (int, np.integer)) and ways == 1:
        return "1"
    raise ValueError(
        f"ways must be 1 (one class per pass, the paper's protocol) or 'all' (every class in "
        f"one N-way pass), got {ways!r}."
    )


def evaluate_pair(
    predictor: Any,
    support_image: Any,
    support_labels: Any,
    query_image: Any,
    query_labels: Any,
    classes: Iterable[int],
    *,
    protocol: ProtocolName = "paper",
    ways: int | Literal["all"] = 1,
    parts: int = 3,
    class_names: Mapping[int, str] | None = None,
    query_id: Hashable = "query",
    support_id: Hashable = "support",
    setting: int | None = None,
    fold: int | None = None,
    distances: bool = False,
    spacing: Sequence[float] | None = None,
    progress: bool = False,
) -> ResultTable:
    """Score one query scan against one support scan with the few-shot protocol.

    1-way (``ways=1``, the paper's): for each class and chunk ``i``, one ``predict`` call with
    support slice ``i`` of that class (mask = the class, keeping its label value) and the chunk's
    query slices stacked; the class is read back as ``prediction == class``.

    N-way (``ways="all"``, not the paper's protocol): for each chunk ``i``, one ``predict`` call
    whose shots are the chunk-``i`` support slices of every class (deduplicated, ascending), each
    annotated with all requested classes (other labels set to 0), and whose query is the union of
    every class's chunk-``i`` slices. Each class is still scored on its own scored slices, from the
    pass of its own chunk. Classes compete in one softmax here, so numbers differ from 1-way.

    Several support scans (the realistic protocol only): lists of support volumes and of their
    labels go to ``segment_volume`` as they are (the supports vote on each class's extent and
    average their probabilities); ``support_id`` may then list their ids. A list of one is
    that one support, in every protocol.

    Args:
        predictor: object with ``predict(support_img, support_mask, query)`` or such a callable
            (see the module docstring for shapes).
        support_image: ``(D_s, H, W)`` support volume (real numbers), numpy or torch; or a list
            of them (``protocol="realistic"``).
        support_labels: ``(D_s, H, W)`` integer labels of the support; must contain every class.
            A list, one per volume, with a list of support volumes.
        query_image: ``(D, H', W')`` query volume; the in-plane size may differ from the support.
        query_labels: ``(D, H', W')`` integer ground truth of the query.
        classes: class label values to evaluate.
        protocol: ``"paper"`` (score the query's ground-truth range), ``"whole_volume"``
            (segment and score every slice; chunks still from the query's labels) or
            ``"realistic"`` (``predictor.segment_volume(support_image, support_labels,
            query_image)`` with no query labels; every slice scored; 1-way only).
        ways: ``1`` or ``"all"``.
        parts: support slices / query chunks per class (3 in the paper).
        class_names: ``{class_id: name}``; default ``"class_<id>"``.
        query_id: id of the query scan for the table (stored as a string).
        support_id: id of the support scan; a sequence of ids with several (recorded joined by
            ``+``, e.g. ``"8+10+13"``).
        setting: the paper's setting (1 or 2) to record, or None.
        fold: fold index to record, or None.
        distances: also compute HD95 and ASSD over the scored slices (slower).
        spacing: voxel size ``(D, H, W)`` of the query for the distances (default 1 = voxels).
        progress: show a progress bar over ``predict`` calls.

    Returns:
        A :class:`ResultTable` with one row per class, in the order of ``classes``.

    Raises:
        ValueError: shapes/labels are invalid, a class is missing from the support, an unknown
            protocol or ways, or the predictor returns the wrong shape.
        TypeError: the predictor has no ``predict`` and is not callable.

    Example:
        >>> lab = np.zeros((9, 6, 6), dtype=np.int64); lab[2:7, 1:4, 1:4] = 1
        >>> zeros = lambda s_img, s_mask, q: np.zeros(q.shape, dtype=np.int64)
        >>> evaluate_pair(zeros, lab, lab, lab, lab, [1]).rows[0].dice
        0.0
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    ways_s = _ways_str(ways)
    parts = _check_parts(parts)
    classes = [_check_class(c) for c in classes]
    if not classes:
        raise ValueError("classes is empty; pass the label values to evaluate, e.g. [1, 2, 3, 4].")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}.")
    s_img, s_lab = _supports(support_image, support_labels, protocol)
    q_img = _volume_image(query_image, "query_image")
    q_lab = _volume_labels(query_labels, "query_labels")
    if q_img.shape != q_lab.shape:
        raise ValueError(
            f"query_image {q_img.shape} and query_labels {q_lab.shape} differ in shape."
        )
    names = dict(class_names or {})
    if protocol == "realistic":
        if ways_s != "1":
            raise ValueError("the realistic protocol is 1-way (segment_volume); use ways=1.")
        # The query labels are not read before the prediction exists: they only score it.
        volume = _segment_volume_fn(predictor)(s_img, s_lab, q_img, classes=classes)
        predicted = to_label_map(volume, "segment_volume output")
        if predicted.shape != q_img.shape:
            raise ValueError(
                f"segment_volume returned shape {predicted.shape} for a query of shape "
                f"{q_img.shape}."
            )
        pred = {c: predicted == c for c in classes}
        chunks = {c: [list(range(q_lab.shape[0]))] for c in classes}
    else:
        pred, chunks = _protocol_predictions(
            _predict_fn(predictor), s_img, s_lab, q_img, q_lab, classes,
            whole=protocol == "whole_volume", ways_s=ways_s, parts=parts, query_id=query_id,
            progress=progress,
        )
    rows = [
        _score_row(
            pred[c], q_lab, c, chunks[c], distances=distances, spacing=spacing,
            scan=str(query_id), class_name=str(names.get(c, f"class_{c}")), protocol=protocol,
            setting=setting, fold=fold, support=_support_name(support_id), ways=ways_s,
            parts=parts,
        )
        for c in classes
    ]
    return ResultTable(rows)


def _supports(support_image: Any, support_labels: Any, protocol: str) -> tuple[Any, Any]:
    """The support volume and labels, checked; lists of them for several support scans (a list
    of one is that one support)."""
    if not isinstance(support_image, (list, tuple)):
        return _one_support(support_image, support_labels, "")
    if not isinstance(support_labels, (list, tuple)) or len(support_labels) != len(support_image):
        raise ValueError(
            f"a list of {len(support_image)} support volumes needs a list of as many label "
            "volumes in support_labels."
        )
    if not support_image:
        raise ValueError("support_image is an empty list; pass at least one support volume.")
    if len(support_image) == 1:
        return _one_support(support_image[0], support_labels[0], "")
    if protocol != "realistic":
        raise ValueError(
            f"several support scans need protocol='realistic'; the {protocol!r} protocol takes "
            "its support slices from one scan."
        )
    pairs = [
        _one_support(img, lab, f"[{i}]")
        for i, (img, lab) in enumerate(zip(support_image, support_labels, strict=True))
    ]
    return [img for img, _ in pairs], [lab for _, lab in pairs]


def _one_support(image: Any, labels: Any, index: str) -> tuple[np.ndarray, np.ndarray]:
    s_img = _volume_image(image, f"support_image{index}")
    s_lab = _volume_labels(labels, f"support_labels{index}")
    if s_img.shape != s_lab.shape:
        raise ValueError(
            f"support_image{index} {s_img.shape} and support_labels{index} {s_lab.shape} differ "
            "in shape."
        )
    return s_img, s_lab


def _support_name(support_id: Any) -> str:
    if isinstance(support_id, (list, tuple)):
        return "+".join(str(i) for i in support_id)
    return str(support_id)


def _segment_volume_fn(predictor: Any) -> Callable[..., Any]:
    fn = getattr(predictor, "segment_volume", None)
    if not callable(fn):
        raise TypeError(
            "the realistic protocol needs a predictor with segment_volume(support_volume, "
            f"support_labels, query_volume, classes=...), e.g. SupportQueryPredictor; got "
            f"{type(predictor).__name__}."
        )
    return fn


def _protocol_predictions(
    fn: Callable, s_img: np.ndarray, s_lab: np.ndarray, q_img: np.ndarray, q_lab: np.ndarray,
    classes: list[int], *, whole: bool, ways_s: str, parts: int, query_id: Hashable,
    progress: bool,
) -> tuple[dict[int, np.ndarray], dict[int, list[list[int]]]]:
    """The paper's and the whole-volume protocols: the query's labels choose the chunks."""
    sup_idx = {c: support_slice_indices(s_lab, c, parts=parts) for c in classes}
    chunks = {c: query_chunks(q_lab, c, parts=parts, whole_volume=whole) for c in classes}
    pred = {c: np.zeros(q_lab.shape, dtype=bool) for c in classes}  # class c predicted where
    bar = {"disable": not progress, "desc": f"query {query_id}", "leave": False}
    run = _predict_one_way if ways_s == "1" else _predict_all_ways
    run(fn, s_img, s_lab, q_img, classes, sup_idx, chunks, pred, parts=parts, bar=bar)
    return pred, chunks


def _predict_one_way(
    fn: Callable, s_img: np.ndarray, s_lab: np.ndarray, q_img: np.ndarray, classes: list[int],
    sup_idx: dict[int, list[int]], chunks: dict[int, list[list[int]]],
    pred: dict[int, np.ndarray], *, parts: int, bar: dict[str, Any],
) -> None:
    """1-way: one call per (class, chunk), the class's support slice of that chunk as the
    shot; fills ``pred[c]`` on the chunk's slices."""
    calls = [(c, i) for c in classes for i in range(parts) if chunks[c][i]]
    for c, i in tqdm(calls, **bar):
        z_s, zs = sup_idx[c][i], chunks[c][i]
        s_mask = np.where(s_lab[z_s : z_s + 1] == c, c, 0).astype(np.int64)
        out = _run_predict(fn, s_img[z_s : z_s + 1], s_mask, q_img[zs])
        pred[c][zs] = out == c


def _predict_all_ways(
    fn: Callable, s_img: np.ndarray, s_lab: np.ndarray, q_img: np.ndarray, classes: list[int],
    sup_idx: dict[int, list[int]], chunks: dict[int, list[list[int]]],
    pred: dict[int, np.ndarray], *, parts: int, bar: dict[str, Any],
) -> None:
    """N-way: one call per chunk, every class's support slice of that chunk as a shot (each
    annotated with all classes) and the union of the classes' chunk slices as the query."""
    keep = np.isin(s_lab, classes)
    calls = [i for i in range(parts) if any(chunks[c][i] for c in classes)]
    for i in tqdm(calls, **bar):
        shots = sorted({sup_idx[c][i] for c in classes})
        s_mask = np.where(keep[shots], s_lab[shots], 0).astype(np.int64)
        zs = sorted({z for c in classes for z in chunks[c][i]})
        out = _run_predict(fn, s_img[shots], s_mask, q_img[zs])
        pos = {z: k for k, z in enumerate(zs)}
        for c in classes:
            if chunks[c][i]:
                pred[c][chunks[c][i]] = out[[pos[z] for z in chunks[c][i]]] == c


def _score_row(
    predicted: np.ndarray, q_lab: np.ndarray, c: int, chunks: list[list[int]], *,
    distances: bool, spacing: Sequence[float] | None, **fields: Any,
) -> ResultRow:
    """Score one class over the scored slices (the union of its chunks) as a 3D Dice."""
    scored = sorted(z for ch in chunks for z in ch)
    p_c, t_c = predicted[scored], q_lab[scored] == c
    counts = confusion_counts(p_c, t_c, classes=[1])[1]
    h = a = math.nan
    if distances and scored:
        # scored slices are contiguous (the range, or the whole volume): a valid sub-volume
        sp = None if spacing is None else tuple(spacing)
        h = hd95(p_c, t_c, classes=[1], spacing=sp)[1]
        a = assd(p_c, t_c, classes=[1], spacing=sp)[1]
    logger.debug("query %s class %s: dice %.4f (%s)", fields["scan"], c, counts.dice, counts)
    return ResultRow(
        class_id=c, dice=counts.dice, iou=counts.iou, tp=counts.tp, fp=counts.fp,
        fn=counts.fn, n_slices=len(scored), hd95=h, assd=a, **fields,
    )


def evaluate_fold(
    predictor: Any,
    support_image: Any,
    support_labels: Any,
    queries: Mapping[Hashable, tuple[Any, Any]],
    classes: Iterable[int],
    *,
    protocol: ProtocolName = "paper",
    ways: int | Literal["all"] = 1,
    parts: int = 3,
    class_names: Mapping[int, str] | None = None,
    support_id: Hashable = "support",
    setting: int | None = None,
    fold: int | None = None,
    distances: bool = False,
    spacings: Mapping[Hashable, Sequence[float]] | None = None,
    progress: bool = False,
) -> ResultTable:
    """Score every query scan of a fold against one support scan (:func:`evaluate_pair` each).

    Args:
        predictor: see :func:`evaluate_pair`.
        support_image: ``(D_s, H, W)`` support volume; or a list of them (several support
            scans, realistic protocol).
        support_labels: its ``(D_s, H, W)`` integer labels; or a list, one per volume.
        queries: ``{scan_id: (image, labels)}``, each ``(D, H, W)``; a lazy mapping works (each
            scan is read once).
        classes: class label values to evaluate.
        protocol, ways, parts, class_names, setting, fold, distances: as in :func:`evaluate_pair`.
        support_id: id of the support scan (a sequence of ids with several).
        spacings: ``{scan_id: (D, H, W) voxel size}`` for the distances; missing ids use 1.
        progress: show a progress bar over query scans.

    Returns:
        A :class:`ResultTable` with one row per (query scan, class).

    Example:
        >>> lab = np.zeros((9, 6, 6), dtype=np.int64); lab[2:7, 1:4, 1:4] = 1
        >>> oracle = lambda s_img, s_mask, q: np.rint(q).astype(np.int64)
        >>> t = evaluate_fold(oracle, lab, lab, {"a": (lab, lab), "b": (lab, lab)}, [1], fold=0)
        >>> [(r.scan, r.dice) for r in t]
        [('a', 1.0), ('b', 1.0)]
    """
    classes = list(classes)
    tables = []
    for scan_id in tqdm(list(queries), disable=not progress, desc="queries"):
        item = queries[scan_id]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"queries[{scan_id!r}] must be an (image, labels) pair.")
        image, labels = item
        tables.append(
            evaluate_pair(
                predictor,
                support_image,
                support_labels,
                image,
                labels,
                classes,
                protocol=protocol,
                ways=ways,
                parts=parts,
                class_names=class_names,
                query_id=scan_id,
                support_id=support_id,
                setting=setting,
                fold=fold,
                distances=distances,
                spacing=None if spacings is None else spacings.get(scan_id),
            )
        )
    return ResultTable.concat(tables)


def evaluate_cross_validation(
    predictors: Any,
    scans: Mapping[Hashable, tuple[Any, Any]],
    classes: Iterable[int],
    *,
    n_folds: int = 5,
    protocol: ProtocolName = "paper",
    ways: int | Literal["all"] = 1,
    parts: int = 3,
    class_names: Mapping[int, str] | None = None,
    setting: int | None = None,
    distances: bool = False,
    spacings: Mapping[Hashable, Sequence[float]] | None = None,
    progress: bool = False,
    supports: int = 1,
) -> ResultTable:
    """Run every fold of :func:`cross_validation_folds` over labeled scans.

    Args:
        predictors: a callable ``fold -> predictor`` (a model trained for that fold), or one
            predictor object (with ``predict``) used for every fold.
        scans: ``{scan_id: (image, labels)}`` for all scans; ids as for
            :func:`cross_validation_folds`.
        classes: classes to evaluate (for setting 2, call once per :func:`setting_runs` group
            with that group's classes and predictors).
        n_folds, protocol, ways, parts, class_names, setting, distances, spacings, progress:
            as in :func:`evaluate_fold`.
        supports: support scans per fold (:func:`support_scans`: the fold's support and the
            scans after it in its group); more than 1 needs ``protocol="realistic"``.

    Returns:
        The rows of every fold; ``table.mean()`` is the paper's "Mean" column.

    Example:
        >>> lab = np.zeros((9, 6, 6), dtype=np.int64); lab[2:7, 1:4, 1:4] = 1
        >>> oracle = lambda s_img, s_mask, q: np.rint(q).astype(np.int64)
        >>> scans = {i: (lab, lab) for i in range(4)}
        >>> t = evaluate_cross_validation(lambda fold: oracle, scans, [1], n_folds=2)
        >>> len(t), t.mean()
        (4, 1.0)
    """
    classes = list(classes)
    has_predict = callable(getattr(predictors, "predict", None))
    folds = cross_validation_folds(list(scans), n_folds)
    if supports != 1 and protocol != "realistic":
        raise ValueError(f"supports={supports!r} needs protocol='realistic' (one support scan in "
                         f"the {protocol!r} protocol).")
    tables = []
    for f in folds:
        predictor = predictors if has_predict else predictors(f)
        ids = support_scans(folds, f.index, supports)
        s_img, s_lab = [scans[i][0] for i in ids], [scans[i][1] for i in ids]
        logger.info("fold %d: support %s, queries %s", f.index, list(ids), list(f.test))
        tables.append(
            evaluate_fold(
                predictor,
                s_img,
                s_lab,
                {i: scans[i] for i in f.test},
                classes,
                protocol=protocol,
                ways=ways,
                parts=parts,
                class_names=class_names,
                support_id=ids,
                setting=setting,
                fold=f.index,
                distances=distances,
                spacings=spacings,
                progress=progress,
            )
        )
    return ResultTable.concat(tables)
