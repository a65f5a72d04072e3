"""The main job, ``fewshotseg demo``: few-shot segmentation of CHAOS scans, paper protocol.

By default it uses the two CHAOS T2-SPIR scans shipped inside the package
(``fewshotseg/data/chaos_demo.npz``: support patient 8, held-out query patient 2; CC-BY-SA 4.0,
see ``fewshotseg/data/ATTRIBUTION.md``), so it needs no download. With a CHAOS-layout folder it
runs fold 0 of :func:`fewshotseg.evaluation.cross_validation_folds` instead (support patient 8,
queries 1, 2, 3 and 5).

The functions here compute and return; the command line prints. Every scan goes through the same
intensity recipe as training (:func:`fewshotseg.preprocess.mri` by default), then the paper's
evaluation protocol (:func:`fewshotseg.evaluation.evaluate_pair`, 1-way 1-shot, three support
slices per organ) scores liver, right kidney, left kidney and spleen.

Example:
    >>> support, query = load_demo_scans()
    >>> support.id, query.id, support.image.shape[1:], support.label.dtype
    ('8', '2', (256, 256), dtype('int32'))
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fewshotseg.datasets import Case
from fewshotseg.evaluation import (
    CHAOS_CLASSES,
    ResultTable,
    cross_validation_folds,
    evaluate_pair,
    query_chunks,
    support_slice_indices,
)
from fewshotseg.io import Volume
from fewshotseg.preprocess import INTENSITY_RECIPES, apply_recipe  # noqa: F401 (re-export)

__all__ = [
    "DEMO_CLASSES",
    "DEMO_DATA",
    "DemoResult",
    "format_report",
    "load_chaos_fold",
    "load_demo_scans",
    "most_organs_slice",
    "protocol_slice_prediction",
    "run_demo",
]

logger = logging.getLogger(__name__)

#: The embedded scans (support patient 8, query patient 2).
DEMO_DATA = Path(__file__).resolve().parent / "data" / "chaos_demo.npz"
#: The organs the demo scores: 1 liver, 2 right kidney, 3 left kidney, 4 spleen.
DEMO_CLASSES: tuple[int, ...] = (1, 2, 3, 4)


def __getattr__(name: str) -> Any:
    if name == "DemoScan":  # deprecated: the demo's scans are datasets.Case records (issue 18)
        warnings.warn(
            "fewshotseg.demo.DemoScan is deprecated and will be removed in the next release: the "
            "demo's scans are fewshotseg.datasets.Case records (scan.image.array, "
            "scan.image.spacing, scan.label)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Case
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, eq=False)
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes:
        table: one row per (query scan, organ); ``table.mean()`` is the mean Dice.
        seconds: wall time of the segmentation and scoring (model loading excluded).
        support_id: the support scan's id.
        query_ids: the query scans' ids.
        protocol: ``"paper"`` or ``"whole_volume"``.
        source: where the scans came from (``"embedded"`` or the folder).
        overlay: the PNG written, or None (no path asked, or matplotlib missing).

    Example:
        >>> from fewshotseg.evaluation import ResultRow
        >>> rows = [ResultRow(scan="2", class_id=1, class_name="liver", dice=0.5)]
        >>> r = DemoResult(ResultTable(rows), 1.5, "8", ("2",), "paper", "embedded")
        >>> r.table.mean(), r.overlay
        (0.5, None)
    """

    table: ResultTable
    seconds: float
    support_id: str
    query_ids: tuple[str, ...]
    protocol: str
    source: str
    overlay: Path | None = None


def load_demo_scans(path: str | os.PathLike | None = None) -> tuple[Case, Case]:
    """Read the embedded demo scans: ``(support, query)`` = CHAOS patients 8 and 2.

    Args:
        path: the ``.npz`` file (default :data:`DEMO_DATA`).

    Returns:
        The support and the query scan as `fewshotseg.datasets.Case` records: ``image.array``
        ``(D, 256, 256)`` float32 in raw intensities with ``image.spacing`` ``(D, H, W)`` in
        mm (no affine), ``label`` int32 of the same shape.

    Raises:
        FileNotFoundError: if the file is missing from this installation.

    Example:
        >>> support, query = load_demo_scans()
        >>> support.image.shape, query.image.array.dtype, query.label.shape == query.image.shape
        ((34, 256, 256), dtype('float32'), True)
        >>> [round(s, 2) for s in support.image.spacing]  # mm, (D, H, W) order
        [7.7, 1.25, 1.25]
    """
    file = Path(path) if path is not None else DEMO_DATA
    if not file.is_file():
        raise FileNotFoundError(
            f"the demo scans {file.name!r} are not in {file.parent}; reinstall fewshotseg, or "
            "run the demo on a CHAOS folder with --data DIR"
        )
    with np.load(file) as data:
        scans = tuple(
            Case(
                id=str(int(data[f"{role}_id"])),
                image=Volume(
                    array=data[f"{role}_image"].astype(np.float32),
                    spacing=tuple(float(s) for s in data[f"{role}_spacing"]),  # type: ignore[arg-type]
                    affine=None,
                    axis=2,  # the files' axial axis, first here
                    path=file,
                    format="npz",
                ),
                label=data[f"{role}_label"].astype(np.int32),
            )
            for role in ("support", "query")
        )
    return scans[0], scans[1]


def load_chaos_fold(folder: str | os.PathLike, fold: int = 0) -> tuple[Case, list[Case]]:
    """Read the support and query scans of one fold from a CHAOS-layout folder.

    The folds are :func:`fewshotseg.evaluation.cross_validation_folds` over the patient ids
    found in the folder (``image_N`` / ``label_N``); for the 20 CHAOS T2-SPIR patients, fold 0
    has support 8 and queries 1, 2, 3, 5.

    Args:
        folder: e.g. ``shared/data/chaos_t2spir``.
        fold: fold index (0..4).

    Returns:
        ``(support, queries)``: the `fewshotseg.datasets.Case` records
        `fewshotseg.datasets.chaos_t2spir` reads: images ``(D, H, W)`` float32 (axial slices
        first), labels int32.

    Raises:
        FileNotFoundError: if the folder or a file is missing.
        ValueError: if the ids cannot be split into five folds, or ``fold`` is out of range.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> for i in range(1, 6):  # five tiny patients, NIfTI (i, j, k) = (4, 4, 3)
        ...     np.save(f"{d}/image_{i}.npy", np.zeros((4, 4, 3)))
        ...     np.save(f"{d}/label_{i}.npy", np.ones((4, 4, 3)))
        >>> support, queries = load_chaos_fold(d, fold=0)
        >>> support.image.shape, support.image.array.dtype, support.label.dtype, len(queries)
        ((3, 4, 4), dtype('float32'), dtype('int32'), 1)
    """
    from fewshotseg.datasets import chaos_t2spir, find_cases

    files = find_cases(folder, "image_*", label_pattern="label_*", require_labels=False)
    ids = sorted(int(f.id) for f in files if f.id.isdigit() and f.label_path is not None)
    folds = cross_validation_folds(ids)
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be in 0..{len(folds) - 1}, got {fold}")
    chosen = folds[fold]
    cases = chaos_t2spir(folder, [chosen.support, *chosen.test])
    return cases[0], cases[1:]


def protocol_slice_prediction(
    predictor: Any,
    support_image: np.ndarray,
    support_label: np.ndarray,
    query_image: np.ndarray,
    query_label: np.ndarray,
    z: int,
    classes: Sequence[int],
    *,
    protocol: str = "paper",
    parts: int = 3,
) -> np.ndarray:
    """The protocol's prediction for one query slice, all classes merged (for an overlay).

    Each class whose chunks include slice ``z`` is segmented 1-way with the support slice the
    protocol gives that chunk (as :func:`fewshotseg.evaluation.evaluate_pair` does); a pixel
    takes the class with the highest foreground probability when it is above 0.5.

    Args:
        predictor: a :class:`fewshotseg.inference.SupportQueryPredictor` (needs
            ``predict_proba``).
        support_image: ``(D_s, H, W)`` preprocessed support scan.
        support_label: its ``(D_s, H, W)`` integer labels.
        query_image: ``(D, H', W')`` preprocessed query scan.
        query_label: its ``(D, H', W')`` labels (they only choose the chunks, as in the
            protocol).
        z: the query slice.
        classes: label values to segment.
        protocol: ``"paper"`` or ``"whole_volume"``.
        parts: chunks per class.

    Returns:
        ``(H', W')`` int64 label map (0 background, else a value of ``classes``).

    Example:
        >>> class Confident:  # foreground probability 0.9 everywhere: (2, H, W)
        ...     def predict_proba(self, support_img, support_mask, query):
        ...         return np.stack([np.full(query.shape, 0.1), np.full(query.shape, 0.9)])
        >>> lab = np.zeros((6, 4, 4), np.int64); lab[1:5, :2] = 1   # class 1 on slices 1..4
        >>> img = lab.astype(np.float32)
        >>> def at(z):
        ...     return protocol_slice_prediction(Confident(), img, lab, img, lab, z, [1])
        >>> at(2).dtype, int(at(2).sum()), int(at(0).sum())  # slice 0: outside the range
        (dtype('int64'), 16, 0)
    """
    best = np.zeros(query_image.shape[1:], np.float32)
    out = np.zeros(query_image.shape[1:], np.int64)
    for cls in classes:
        chunks = query_chunks(
            query_label, cls, parts=parts, whole_volume=protocol == "whole_volume"
        )
        owner = [i for i, chunk in enumerate(chunks) if z in chunk]
        if not owner:
            continue
        z_s = support_slice_indices(support_label, cls, parts=parts)[owner[0]]
        mask = (support_label[z_s] == cls).astype(np.int64)
        proba = np.asarray(predictor.predict_proba(support_image[z_s], mask, query_image[z]))[1]
        take = (proba > 0.5) & (proba > best)
        best = np.where(take, proba, best)
        out = np.where(take, cls, out)
    return out


def run_demo(
    predictor: Any,
    *,
    data: str | os.PathLike | None = None,
    fold: int = 0,
    protocol: str = "paper",
    modality: str = "mri",
    overlay: str | os.PathLike | None = None,
    progress: bool = False,
) -> DemoResult:
    """Segment liver, kidneys and spleen of the demo queries and score them (paper protocol).

    Args:
        predictor: a :class:`fewshotseg.inference.SupportQueryPredictor` (anything with
            ``predict`` and ``predict_proba`` works).
        data: a CHAOS-layout folder; ``None`` uses the embedded scans (support 8, query 2).
        fold: with ``data``: which fold (0 = support 8, queries 1, 2, 3, 5).
        protocol: ``"paper"`` (score the query's organ range) or ``"whole_volume"``.
        modality: intensity recipe for every scan: ``"mri"`` (clip top 0.5 %, z-score),
            ``"ct"`` or ``"none"``; use the one the model was trained with.
        overlay: PNG to write (`fewshotseg.viz.support_query_figure`: the support slice
            showing the most organs with its mask, beside the first query's such slice with
            its ground truth and the protocol's prediction, and each organ's Dice on that
            query); ``None`` for none. Skipped with a warning in the log when matplotlib is not
            installed (``pip install "fewshotseg[viz]"``).
        progress: progress bars over the predict calls.

    Returns:
        A :class:`DemoResult`; ``table`` holds one Dice in [0, 1] per (query, organ).

    Example:
        >>> class Background:  # finds no organ: (D, H, W) label map of zeros
        ...     def predict(self, support_img, support_mask, query):
        ...         return np.zeros(query.shape, np.int64)
        >>> result = run_demo(Background())  # the embedded scans
        >>> result.query_ids, len(result.table.rows), result.table.mean()
        (('2',), 4, 0.0)
    """
    if data is None:
        support, query = load_demo_scans()
        queries, source = [query], "embedded"
    else:
        support, queries = load_chaos_fold(data, fold)
        source = str(data)
    names = {c: CHAOS_CLASSES[c] for c in DEMO_CLASSES}
    s_img = apply_recipe(support.image.array, modality)
    started = time.perf_counter()
    tables = []
    prepared = []
    for q in queries:
        q_img = apply_recipe(q.image.array, modality)
        prepared.append(q_img)
        tables.append(
            evaluate_pair(
                predictor,
                s_img,
                support.label,
                q_img,
                q.label,
                DEMO_CLASSES,
                protocol=protocol,  # type: ignore[arg-type]
                class_names=names,
                query_id=q.id,
                support_id=support.id,
                setting=1,
                fold=fold if data is not None else None,
                progress=progress,
            )
        )
    seconds = time.perf_counter() - started
    written = None
    if overlay is not None:
        dice = {r.class_id: r.dice for r in tables[0]}
        written = _write_overlay(
            predictor, support, s_img, queries[0], prepared[0], protocol, Path(overlay), names,
            dice,
        )  # fmt: skip
    return DemoResult(
        table=ResultTable.concat(tables),
        seconds=seconds,
        support_id=support.id,
        query_ids=tuple(q.id for q in queries),
        protocol=protocol,
        source=source,
        overlay=written,
    )


def _write_overlay(
    predictor: Any,
    support: Case,
    s_img: np.ndarray,
    query: Case,
    q_img: np.ndarray,
    protocol: str,
    path: Path,
    names: dict[int, str],
    dice: dict[int, float] | None = None,
) -> Path | None:
    try:
        from fewshotseg.viz import support_query_figure
    except ImportError:  # pragma: no cover - matplotlib is a test dependency
        logger.warning('overlay skipped: it needs matplotlib, pip install "fewshotseg[viz]"')
        return None
    z = most_organs_slice(query.label, DEMO_CLASSES)
    z_s = most_organs_slice(support.label, DEMO_CLASSES)
    pred = protocol_slice_prediction(
        predictor, s_img, support.label, q_img, query.label, z, DEMO_CLASSES, protocol=protocol
    )
    try:
        fig = support_query_figure(
            support.image.array[z_s],
            np.where(np.isin(support.label[z_s], DEMO_CLASSES), support.label[z_s], 0),
            query.image.array[z],
            np.where(np.isin(query.label[z], DEMO_CLASSES), query.label[z], 0),
            pred,
            classes=names,
            dice=dice,
            rot90=1,
            title=f"support patient {support.id}, slice {z_s}  ->  query patient {query.id}, "
            f"slice {z}  (Dice per organ on this query, {protocol} protocol)",
        )
    except ImportError:  # pragma: no cover
        logger.warning('overlay skipped: it needs matplotlib, pip install "fewshotseg[viz]"')
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def most_organs_slice(label: np.ndarray, classes: Sequence[int]) -> int:
    """The slice showing the most of ``classes``: most classes present, then most voxels.

    Example:
        >>> lab = np.zeros((3, 4, 4), np.int64); lab[0, :2] = 1; lab[1, 0, 0] = 1; lab[1, 3] = 2
        >>> most_organs_slice(lab, [1, 2])
        1
    """
    present = np.stack([(label == c).any(axis=(1, 2)) for c in classes]).sum(axis=0)
    voxels = np.isin(label, classes).sum(axis=(1, 2))
    return int(np.lexsort((voxels, present))[-1])


def format_report(result: DemoResult, *, device: str = "cpu") -> str:
    """The demo's printout: per-organ Dice (%) per query and their mean, and the time taken.

    The "mean" column (over queries) appears only with several queries; the "mean" row is the
    mean over organs.

    Example:
        >>> from fewshotseg.evaluation import ResultRow
        >>> rows = [ResultRow(scan="2", class_id=1, class_name="liver", dice=0.5)]
        >>> r = DemoResult(ResultTable(rows), 1.5, "8", ("2",), "paper", "embedded")
        >>> print(format_report(r))  # doctest: +NORMALIZE_WHITESPACE
        fewshotseg demo: CHAOS T2-SPIR (embedded), support patient 8, query patient 2
        protocol paper, 1-way 1-shot, Dice in %
        organ   query 2
        liver     50.00
        mean      50.00
        segmented and scored in 1.5 s on cpu
    """
    table = result.table
    queries = list(result.query_ids)
    classes = list(dict.fromkeys(r.class_id for r in table))
    names = {r.class_id: r.class_name for r in table}
    dice = {(r.scan, r.class_id): r.dice for r in table}
    per_class = table.per_class()
    several = len(queries) > 1  # a mean over one query would only repeat it
    header = ["organ", *[f"query {q}" for q in queries], *(["mean"] if several else [])]
    body = []
    for c in classes:
        body.append(
            [names[c], *[_pct(dice.get((q, c), np.nan)) for q in queries]]
            + ([_pct(per_class.get(c, np.nan))] if several else [])
        )
    scan_means = []
    for q in queries:
        vals = [dice.get((q, c), np.nan) for c in classes]
        vals = [v for v in vals if not np.isnan(v)]
        scan_means.append(float(np.mean(vals)) if vals else np.nan)
    overall = [_pct(table.mean())] if several else []
    body.append(["mean", *[_pct(v) for v in scan_means], *overall])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
        f"fewshotseg demo: CHAOS T2-SPIR ({result.source}), support patient {result.support_id}, "
        f"query patient{'s' if len(queries) > 1 else ''} {', '.join(queries)}",
        f"protocol {result.protocol}, 1-way 1-shot, Dice in %",
    ]
    for row in [header, *body]:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    lines.append(f"segmented and scored in {result.seconds:.1f} s on {device}")
    if result.overlay is not None:
        lines.append(f"overlay written to {result.overlay}")
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.2f}"
