"""Few-shot evaluation protocols on labeled volumes, folds, settings and result tables.

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

import csv
import json
import logging
import math
import os
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from fewshotseg.datasets import CHAOS_T2SPIR
from fewshotseg.metrics import ConfusionCounts, as_label_map, assd, hd95, nanmean

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
    "class_slices",
    "cross_validation_folds",
    "evaluate_cross_validation",
    "evaluate_fold",
    "evaluate_pair",
    "excluded_classes",
    "query_chunks",
    "setting_runs",
    "support_slice_indices",
]

logger = logging.getLogger(__name__)

Protocol = Literal["paper", "whole_volume", "realistic"]
PROTOCOLS: tuple[str, ...] = ("paper", "whole_volume", "realistic")

#: CHAOS label values and organ names as result-table column names (``right_kidney``): the
#: names of `fewshotseg.datasets.CHAOS_T2SPIR` with underscores for spaces.
CHAOS_CLASSES: dict[int, str] = {
    value: name.replace(" ", "_") for value, name in CHAOS_T2SPIR.classes.items()
}
#: The 20 labeled CHAOS T2-SPIR patients.
CHAOS_PATIENT_IDS: tuple[int, ...] = (
    1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39,
)  # fmt: skip
#: The paper's setting-2 groups of CHAOS classes: upper abdomen (liver, spleen) and lower
#: (right and left kidney).
SETTING2_GROUPS: dict[str, tuple[int, ...]] = {"upper": (1, 4), "lower": (2, 3)}


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _volume_labels(labels: Any, name: str) -> np.ndarray:
    lab = as_label_map(labels, name)
    if lab.ndim != 3:
        raise ValueError(
            f"{name} must be a (D, H, W) label volume with slices along axis 0, got shape "
            f"{lab.shape}; add a leading axis for a single slice (labels[None])."
        )
    return lab


def _volume_image(image: Any, name: str) -> np.ndarray:
    if hasattr(image, "detach") and hasattr(image, "cpu"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or torch tensor, got {type(image).__name__}."
        )
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_) or np.iscomplexobj(
        image
    ):
        raise TypeError(f"{name} must have a real numeric dtype, got {image.dtype}.")
    if image.ndim != 3:
        raise ValueError(
            f"{name} must be a (D, H, W) volume with slices along axis 0, got shape {image.shape}."
        )
    return image.astype(np.float32, copy=False)


def _check_class(cls: Any) -> int:
    if isinstance(cls, (bool, np.bool_)) or not isinstance(cls, (int, np.integer)) or cls <= 0:
        raise ValueError(f"a class must be a positive integer label value, got {cls!r}.")
    return int(cls)


def _check_parts(parts: Any) -> int:
    if isinstance(parts, bool) or not isinstance(parts, (int, np.integer)) or parts < 1:
        raise ValueError(f"parts must be a positive integer (the paper uses 3), got {parts!r}.")
    return int(parts)


# --------------------------------------------------------------------------------------------
# slice selection
# --------------------------------------------------------------------------------------------


def class_slices(labels: Any, cls: int) -> list[int]:
    """Indices of the slices (axis 0) that contain at least one voxel of ``cls``, ascending.

    Args:
        labels: ``(D, H, W)`` integer label volume, numpy or torch.
        cls: class label value.

    Example:
        >>> lab = np.zeros((5, 2, 2), dtype=int); lab[1:3, 0, 0] = 7
        >>> class_slices(lab, 7)
        [1, 2]
    """
    lab = _volume_labels(labels, "labels")
    cls = _check_class(cls)
    return [int(z) for z in np.flatnonzero((lab == cls).any(axis=(1, 2)))]


def support_slice_indices(labels: Any, cls: int, *, parts: int = 3) -> list[int]:
    """The protocol's support slices of one class in a support volume.

    With ``lst`` the slices containing ``cls`` (ascending), returns ``lst[int(p * len(lst))]`` for
    ``p = (2 i + 1) / (2 parts)``, ``i = 0 .. parts - 1``: ``p = 1/6, 1/2, 5/6`` for the paper's
    ``parts = 3`` (the centres of ``parts`` equal portions of the class's slices). With fewer
    slices than ``parts``, indices repeat.

    Args:
        labels: ``(D, H, W)`` integer label volume of the support scan, numpy or torch.
        cls: class label value.
        parts: number of support slices (= query chunks).

    Returns:
        ``parts`` slice indices into axis 0, non-decreasing.

    Raises:
        ValueError: ``cls`` is in no slice of ``labels`` (choose a support scan that has it).

    Example:
        >>> lab = np.zeros((20, 4, 4), dtype=int); lab[5:15, 1, 1] = 1   # slices 5..14
        >>> support_slice_indices(lab, 1)
        [6, 10, 13]
    """
    parts = _check_parts(parts)
    lst = class_slices(labels, cls)
    if not lst:
        raise ValueError(
            f"class {cls} appears in no slice of the support volume; pick a support scan that "
            "contains every evaluated class, or leave the class out of `classes`."
        )
    return [lst[int(((2 * i + 1) / (2 * parts)) * len(lst))] for i in range(parts)]


def _chunk_of(z: int, z_min: int, z_max: int, parts: int) -> int:
    """METHOD.md's chunk formula; a single-slice range goes to the middle chunk."""
    if z < z_min:
        return 0
    if z > z_max:
        return parts - 1
    if z_max == z_min:
        return parts // 2
    return min(parts - 1, int((z - z_min) // ((z_max - z_min) / parts)))


def query_chunks(
    labels: Any, cls: int, *, parts: int = 3, whole_volume: bool = False
) -> list[list[int]]:
    """Split a query volume's slices into the protocol's chunks for one class.

    The range ``[z_min, z_max]`` of ``cls`` comes from the query's own ground truth (the
    protocol's known leak). Slice ``z`` in the range goes to chunk
    ``min(parts - 1, int((z - z_min) // ((z_max - z_min) / parts)))``; a range of one slice
    (``z_max == z_min``, where the formula divides by zero) goes to the middle chunk
    ``parts // 2``. Slices inside the range that happen not to contain the class are included.

    With ``whole_volume=True`` every slice is assigned: below ``z_min`` to chunk 0, above
    ``z_max`` to chunk ``parts - 1``; when the class is absent from the query, the whole volume
    ``[0, D - 1]`` is split with the same formula (relative position).

    Args:
        labels: ``(D, H, W)`` integer label volume of the query scan, numpy or torch.
        cls: class label value.
        parts: number of chunks (the paper uses 3).
        whole_volume: assign every slice, not only the ground-truth range.

    Returns:
        ``parts`` ascending lists of slice indices (possibly empty; all empty when the class is
        absent and ``whole_volume`` is False).

    Example:
        >>> lab = np.zeros((14, 4, 4), dtype=int); lab[3:12, 1, 1] = 2   # range 3..11
        >>> query_chunks(lab, 2)
        [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
        >>> query_chunks(lab, 2, whole_volume=True)[0]
        [0, 1, 2, 3, 4, 5]
    """
    parts = _check_parts(parts)
    lab = _volume_labels(labels, "labels")
    present = class_slices(lab, cls)
    chunks: list[list[int]] = [[] for _ in range(parts)]
    if present:
        z_min, z_max = present[0], present[-1]
    elif whole_volume:
        z_min, z_max = 0, lab.shape[0] - 1
    else:
        return chunks
    zs = range(lab.shape[0]) if whole_volume else range(z_min, z_max + 1)
    for z in zs:
        chunks[_chunk_of(z, z_min, z_max, parts)].append(z)
    return chunks


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One scored (query scan, class) pair: the tidy unit of a result table.

    Attributes:
        scan: query scan id (as a string).
        class_id: label value of the class.
        class_name: readable name of the class.
        protocol: ``"paper"`` or ``"whole_volume"``.
        setting: the paper's setting (1 or 2), or None when not applicable.
        fold: cross-validation fold index, or None.
        support: support scan id (as a string).
        ways: ``"1"`` (1-way, one class per pass, the paper's) or ``"all"`` (N-way, one pass).
        parts: number of support slices / query chunks.
        dice: 3D Dice in [0, 1] over the scored slices; NaN when the class is absent from both.
        iou: IoU in [0, 1] over the scored slices; NaN as for dice.
        tp: true-positive voxels summed over the scored slices.
        fp: false-positive voxels.
        fn: false-negative voxels.
        n_slices: number of scored slices.
        hd95: 95 % Hausdorff distance over the scored slices (spacing units); NaN when not
            computed or the class is absent from both, inf when it is in only one.
        assd: average symmetric surface distance, as hd95.
    """

    scan: str
    class_id: int
    class_name: str
    protocol: str = "paper"
    setting: int | None = None
    fold: int | None = None
    support: str = ""
    ways: str = "1"
    parts: int = 3
    dice: float = math.nan
    iou: float = math.nan
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n_slices: int = 0
    hd95: float = math.nan
    assd: float = math.nan

    @property
    def counts(self) -> ConfusionCounts:
        """The voxel counts as :class:`~fewshotseg.metrics.ConfusionCounts`."""
        return ConfusionCounts(tp=self.tp, fp=self.fp, fn=self.fn)


_INT_FIELDS = ("class_id", "parts", "tp", "fp", "fn", "n_slices")
_OPT_INT_FIELDS = ("setting", "fold")
_FLOAT_FIELDS = ("dice", "iou", "hd95", "assd")
_STR_FIELDS = ("scan", "class_name", "protocol", "support", "ways")
_FIELD_NAMES = tuple(f.name for f in fields(ResultRow))
_METRICS = ("dice", "iou", "hd95", "assd")
_GroupKey = tuple[str, "int | None", str]


@dataclass(frozen=True)
class SummaryRow:
    """Means of one (protocol, setting, ways) group: per class over scans, then over classes.

    Attributes:
        protocol, setting, ways: the group.
        metric: which metric was averaged.
        per_class: ``{class_id: mean over query scans}`` (NaN scans left out).
        class_names: ``{class_id: name}``.
        mean: mean of ``per_class`` (NaN classes left out).
        n_scans: number of distinct query scans in the group.
    """

    protocol: str
    setting: int | None
    ways: str
    metric: str
    per_class: dict[int, float]
    class_names: dict[int, str]
    mean: float
    n_scans: int


def _fmt(v: float, percent: bool) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{100 * v:.2f}" if percent else f"{v:.2f}"


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for r in body:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


class ResultTable:
    """A tidy table of :class:`ResultRow` (one per query scan and class) with summaries and I/O.

    ``str(table)`` is a Markdown summary (Dice in %, mean over scans then classes per
    protocol/setting/ways group) followed by the rows. Save and load with :meth:`save` /
    :meth:`load` (``.csv`` or ``.json``, standard library only).

    Args:
        rows: the rows, in any order.

    Example:
        >>> t = ResultTable([
        ...     ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8),
        ...     ResultRow(scan="2", class_id=1, class_name="liver", dice=0.6),
        ...     ResultRow(scan="1", class_id=4, class_name="spleen", dice=float("nan")),
        ... ])
        >>> round(t.per_class()[1], 4), round(t.mean(), 4)
        (0.7, 0.7)
    """

    def __init__(self, rows: Iterable[ResultRow] = ()) -> None:
        self._rows = tuple(rows)
        for r in self._rows:
            if not isinstance(r, ResultRow):
                raise TypeError(f"rows must be ResultRow objects, got {type(r).__name__}.")

    # -- container -------------------------------------------------------------------------
    @property
    def rows(self) -> tuple[ResultRow, ...]:
        """The rows, in insertion order."""
        return self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self):
        return iter(self._rows)

    def __add__(self, other: ResultTable) -> ResultTable:
        if not isinstance(other, ResultTable):
            return NotImplemented
        return ResultTable(self._rows + other._rows)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResultTable):
            return NotImplemented
        return len(self) == len(other) and all(
            _rows_equal(a, b) for a, b in zip(self._rows, other._rows, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ResultTable({len(self)} rows)"

    @classmethod
    def concat(cls, tables: Iterable[ResultTable]) -> ResultTable:
        """One table with the rows of all ``tables``, in order."""
        rows: list[ResultRow] = []
        for t in tables:
            rows.extend(t.rows)
        return cls(rows)

    def filter(self, **criteria: Any) -> ResultTable:
        """Rows whose fields equal the given values, e.g. ``table.filter(protocol="paper")``.

        A value may also be a collection (list, tuple, set) of accepted values.
        """
        for k in criteria:
            if k not in _FIELD_NAMES:
                raise ValueError(f"unknown field {k!r}; fields are {', '.join(_FIELD_NAMES)}.")

        def keep(r: ResultRow) -> bool:
            for k, v in criteria.items():
                x = getattr(r, k)
                if isinstance(v, (list, tuple, set, frozenset)):
                    if x not in v:
                        return False
                elif x != v:
                    return False
            return True

        return ResultTable(r for r in self._rows if keep(r))

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (field name -> value)."""
        return [asdict(r) for r in self._rows]

    # -- summaries ---------------------------------------------------------------------------
    def groups(self) -> list[_GroupKey]:
        """The distinct (protocol, setting, ways) groups, in order of first appearance."""
        seen: dict[_GroupKey, None] = {}
        for r in self._rows:
            seen.setdefault((r.protocol, r.setting, r.ways), None)
        return list(seen)

    def _check_metric(self, metric: str) -> None:
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}.")

    def per_class(self, metric: str = "dice") -> dict[int, float]:
        """Per-class mean of ``metric``: first per scan (repeats averaged), then over scans.

        NaN values are left out of every mean. The table must hold one (protocol, setting, ways)
        group; :meth:`filter` it first otherwise.

        Returns:
            ``{class_id: mean}`` sorted by class id.
        """
        self._check_metric(metric)
        groups = self.groups()
        if len(groups) > 1:
            raise ValueError(
                f"the table mixes {len(groups)} (protocol, setting, ways) groups {groups}; "
                "averaging across them is meaningless. Use table.filter(protocol=..., "
                "setting=..., ways=...) or table.summary()."
            )
        by_class: dict[int, dict[str, list[float]]] = {}
        for r in self._rows:
            by_class.setdefault(r.class_id, {}).setdefault(r.scan, []).append(getattr(r, metric))
        return {
            c: nanmean(nanmean(v) for v in scans.values()) for c, scans in sorted(by_class.items())
        }

    def mean(self, metric: str = "dice") -> float:
        """Mean over classes of :meth:`per_class` (NaN classes left out): the tables' "Mean"."""
        return nanmean(self.per_class(metric).values())

    def summary(self, metric: str = "dice") -> list[SummaryRow]:
        """One :class:`SummaryRow` per (protocol, setting, ways) group."""
        self._check_metric(metric)
        out = []
        for protocol, setting, ways in self.groups():
            sub = self.filter(protocol=protocol, setting=setting, ways=ways)
            per_class = sub.per_class(metric)
            names: dict[int, str] = {}
            for r in sub:
                names.setdefault(r.class_id, r.class_name)
            out.append(
                SummaryRow(
                    protocol=protocol,
                    setting=setting,
                    ways=ways,
                    metric=metric,
                    per_class=per_class,
                    class_names={c: names[c] for c in per_class},
                    mean=nanmean(per_class.values()),
                    n_scans=len({r.scan for r in sub}),
                )
            )
        return out

    # -- text ----------------------------------------------------------------------------------
    def to_markdown(self, kind: Literal["summary", "rows"] = "summary", *, metric="dice") -> str:
        """A Markdown table.

        Args:
            kind: ``"summary"``: one line per (protocol, setting, ways) group with per-class
                means and the mean; ``"rows"``: every row with its counts.
            metric: the metric of the summary (Dice and IoU are shown in %).

        Returns:
            The table as a string ("-" marks NaN).
        """
        percent = metric in ("dice", "iou")
        if kind == "summary":
            summ = self.summary(metric)
            names: dict[int, str] = {}
            for s in summ:
                for c, n in s.class_names.items():
                    names.setdefault(c, n)
            cls_ids = sorted(names)
            unit = " (%)" if percent else ""
            header = ["protocol", "setting", "ways", "scans"]
            header += [names[c] for c in cls_ids] + [f"mean {metric}{unit}"]
            body = [
                [s.protocol, "-" if s.setting is None else str(s.setting), s.ways, str(s.n_scans)]
                + [_fmt(s.per_class.get(c, math.nan), percent) for c in cls_ids]
                + [_fmt(s.mean, percent)]
                for s in summ
            ]
            return _markdown(header, body)
        if kind != "rows":
            raise ValueError(f"kind must be 'summary' or 'rows', got {kind!r}.")
        show_dist = any(not math.isnan(r.hd95) or not math.isnan(r.assd) for r in self._rows)
        header = ["scan", "class", "protocol", "setting", "fold", "support", "ways", "Dice (%)"]
        header += ["tp", "fp", "fn", "slices"] + (["HD95", "ASSD"] if show_dist else [])
        body = []
        for r in self._rows:
            line = [
                r.scan,
                f"{r.class_id} {r.class_name}",
                r.protocol,
                "-" if r.setting is None else str(r.setting),
                "-" if r.fold is None else str(r.fold),
                r.support,
                r.ways,
                _fmt(r.dice, True),
                str(r.tp),
                str(r.fp),
                str(r.fn),
                str(r.n_slices),
            ]
            if show_dist:
                line += [_fmt(r.hd95, False), _fmt(r.assd, False)]
            body.append(line)
        return _markdown(header, body)

    def __str__(self) -> str:
        if not self._rows:
            return "ResultTable (empty)"
        return self.to_markdown("summary") + "\n\n" + self.to_markdown("rows")

    # -- files ---------------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (header = field names; empty = None; ``nan``/``inf`` floats)."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(_FIELD_NAMES))
            w.writeheader()
            for rec in self.to_records():
                w.writerow({k: "" if v is None else v for k, v in rec.items()})
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> ResultTable:
        """Read a table written by :meth:`to_csv`."""
        with Path(path).open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = set(_FIELD_NAMES) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{path} is not a result table: columns {sorted(missing)} missing."
                )
            return cls(_row_from_record(rec, str(path)) for rec in reader)

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write strict JSON: ``{"format": ..., "version": 1, "rows": [...]}``.

        NaN is written as ``null`` and infinities as the strings ``"inf"`` / ``"-inf"``.
        """
        path = Path(path)
        recs = [{k: _json_value(v) for k, v in rec.items()} for rec in self.to_records()]
        doc = {"format": "fewshotseg.ResultTable", "version": 1, "rows": recs}
        path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ResultTable:
        """Read a table written by :meth:`to_json` (or a bare JSON list of row objects)."""
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        recs = doc["rows"] if isinstance(doc, dict) and "rows" in doc else doc
        if not isinstance(recs, list):
            raise ValueError(f"{path} is not a result table: expected a list of rows.")
        return cls(_row_from_record(rec, str(path)) for rec in recs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``.csv`` or ``.json``, chosen by the suffix of ``path``."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.to_csv(path)
        if suffix == ".json":
            return self.to_json(path)
        raise ValueError(f"cannot tell the format of {path}: use a .csv or .json suffix.")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResultTable:
        """Read a ``.csv`` or ``.json`` table written by :meth:`save`."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return cls.from_csv(path)
        if suffix == ".json":
            return cls.from_json(path)
        raise ValueError(f"cannot tell the format of {path}: use a .csv or .json suffix.")


def _rows_equal(a: ResultRow, b: ResultRow) -> bool:
    for name in _FIELD_NAMES:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


def _row_from_record(rec: Mapping[str, Any], source: str) -> ResultRow:
    if not isinstance(rec, Mapping):
        raise ValueError(f"{source}: a row must be an object of fields, got {rec!r}.")
    kw: dict[str, Any] = {}
    try:
        for k in _INT_FIELDS:
            kw[k] = int(rec[k])
        for k in _OPT_INT_FIELDS:
            v = rec.get(k)
            kw[k] = None if v in (None, "") else int(v)
        for k in _FLOAT_FIELDS:
            v = rec.get(k)
            kw[k] = math.nan if v in (None, "") else float(v)
        for k in _STR_FIELDS:
            kw[k] = str(rec[k])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: malformed result row {dict(rec)!r}: {e}") from e
    return ResultRow(**kw)


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
    out = as_label_map(fn(s_img, s_mask, q), "predictor output")
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
    protocol: Protocol = "paper",
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

    Args:
        predictor: object with ``predict(support_img, support_mask, query)`` or such a callable
            (see the module docstring for shapes).
        support_image: ``(D_s, H, W)`` support volume (real numbers), numpy or torch.
        support_labels: ``(D_s, H, W)`` integer labels of the support; must contain every class.
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
        support_id: id of the support scan.
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
    s_img = _volume_image(support_image, "support_image")
    s_lab = _volume_labels(support_labels, "support_labels")
    q_img = _volume_image(query_image, "query_image")
    q_lab = _volume_labels(query_labels, "query_labels")
    if s_img.shape != s_lab.shape:
        raise ValueError(
            f"support_image {s_img.shape} and support_labels {s_lab.shape} differ in shape."
        )
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
        predicted = as_label_map(volume, "segment_volume output")
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
            setting=setting, fold=fold, support=str(support_id), ways=ways_s, parts=parts,
        )
        for c in classes
    ]
    return ResultTable(rows)


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

    if ways_s == "1":
        calls = [(c, i) for c in classes for i in range(parts) if chunks[c][i]]
        for c, i in tqdm(calls, disable=not progress, desc=f"query {query_id}", leave=False):
            z_s, zs = sup_idx[c][i], chunks[c][i]
            s_mask = np.where(s_lab[z_s : z_s + 1] == c, c, 0).astype(np.int64)
            out = _run_predict(fn, s_img[z_s : z_s + 1], s_mask, q_img[zs])
            pred[c][zs] = out == c
    else:
        keep = np.isin(s_lab, classes)
        calls_i = [i for i in range(parts) if any(chunks[c][i] for c in classes)]
        for i in tqdm(calls_i, disable=not progress, desc=f"query {query_id}", leave=False):
            shots = sorted({sup_idx[c][i] for c in classes})
            s_mask = np.where(keep[shots], s_lab[shots], 0).astype(np.int64)
            zs = sorted({z for c in classes for z in chunks[c][i]})
            out = _run_predict(fn, s_img[shots], s_mask, q_img[zs])
            pos = {z: k for k, z in enumerate(zs)}
            for c in classes:
                if chunks[c][i]:
                    pred[c][chunks[c][i]] = out[[pos[z] for z in chunks[c][i]]] == c

    return pred, chunks


def _score_row(
    predicted: np.ndarray, q_lab: np.ndarray, c: int, chunks: list[list[int]], *,
    distances: bool, spacing: Sequence[float] | None, **fields: Any,
) -> ResultRow:
    """Score one class over the scored slices (the union of its chunks) as a 3D Dice."""
    scored = sorted(z for ch in chunks for z in ch)
    p_c, t_c = predicted[scored], q_lab[scored] == c
    tp = int(np.count_nonzero(p_c & t_c))
    counts = ConfusionCounts(
        tp=tp, fp=int(np.count_nonzero(p_c)) - tp, fn=int(np.count_nonzero(t_c)) - tp
    )
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
    protocol: Protocol = "paper",
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
        support_image: ``(D_s, H, W)`` support volume.
        support_labels: its ``(D_s, H, W)`` integer labels.
        queries: ``{scan_id: (image, labels)}``, each ``(D, H, W)``; a lazy mapping works (each
            scan is read once).
        classes: class label values to evaluate.
        protocol, ways, parts, class_names, setting, fold, distances: as in :func:`evaluate_pair`.
        support_id: id of the support scan.
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


# --------------------------------------------------------------------------------------------
# folds and settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold.

    Attributes:
        index: fold number ``k`` (0-based).
        test: the query scans' ids (the k-th group).
        support: the support scan's id (the first id of the next group, wrapping around).
        train: every other id (images only for self-supervised training).
    """

    index: int
    test: tuple[Hashable, ...]
    support: Hashable
    train: tuple[Hashable, ...]


def _natural_key(s: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", s) if t)


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
        groups: named groups of class ids (default :data:`SETTING2_GROUPS`).

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


def evaluate_cross_validation(
    predictors: Any,
    scans: Mapping[Hashable, tuple[Any, Any]],
    classes: Iterable[int],
    *,
    n_folds: int = 5,
    protocol: Protocol = "paper",
    ways: int | Literal["all"] = 1,
    parts: int = 3,
    class_names: Mapping[int, str] | None = None,
    setting: int | None = None,
    distances: bool = False,
    spacings: Mapping[Hashable, Sequence[float]] | None = None,
    progress: bool = False,
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
    tables = []
    for f in cross_validation_folds(list(scans), n_folds):
        predictor = predictors if has_predict else predictors(f)
        s_img, s_lab = scans[f.support]
        logger.info("fold %d: support %s, queries %s", f.index, f.support, list(f.test))
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
                support_id=f.support,
                setting=setting,
                fold=f.index,
                distances=distances,
                spacings=spacings,
                progress=progress,
            )
        )
    return ResultTable.concat(tables)
