"""Result tables: one row per scored (query scan, class), summaries, CSV/JSON/Markdown.

The evaluation protocols (`fewshotseg.evaluation`) produce a :class:`ResultTable`; this module
only holds and averages what they measured, so a table saved on one machine can be loaded,
filtered and summarised on another with the standard library alone.

Averages follow the paper's tables: per class first over query scans, then over classes; a
class absent from both prediction and ground truth has a NaN Dice and is left out.
:func:`summarize_folds` puts the tables of a cross-validation side by side, one line per
(setting, fold) and the mean over folds.

Example:
    >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.9),
    ...                  ResultRow(scan="2", class_id=1, class_name="liver", dice=0.7)])
    >>> round(t.mean(), 4)
    0.8
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from fewshotseg.metrics import ConfusionCounts, nanmean

__all__ = [
    "PROTOCOLS",
    "ResultRow",
    "ResultTable",
    "SummaryRow",
    "summarize_folds",
]

#: The evaluation protocols a row may name (`fewshotseg.evaluation` runs them): ``"paper"``,
#: ``"whole_volume"`` and ``"realistic"``.
PROTOCOLS: tuple[str, ...] = ("paper", "whole_volume", "realistic")


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One scored (query scan, class) pair: the tidy unit of a result table.

    Attributes:
        scan: query scan id (as a string).
        class_id: label value of the class.
        class_name: readable name of the class.
        protocol: one of :data:`PROTOCOLS`.
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

    Example:
        >>> r = ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8, tp=4, fp=1, fn=1)
        >>> r.protocol, r.ways, r.counts.dice == r.dice
        ('paper', '1', True)
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
        """The voxel counts as a `fewshotseg.metrics.ConfusionCounts` (ints, which add up).

        Example:
            >>> ResultRow(scan="1", class_id=1, class_name="liver", tp=3, fp=1, fn=0).counts
            ConfusionCounts(tp=3, fp=1, fn=0)
        """
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

    Example:
        >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8)])
        >>> s = t.summary()[0]; s.protocol, s.setting, s.ways, s.per_class, s.class_names
        ('paper', None, '1', {1: 0.8}, {1: 'liver'})
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
        """The rows, in insertion order (a tuple of `ResultRow`).

        Example:
            >>> r = ResultRow(scan="1", class_id=1, class_name="liver")
            >>> ResultTable([r]).rows == (r,)
            True
        """
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
        """One table with the rows of all ``tables``, in order (``a + b`` for two).

        Example:
            >>> a = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver")])
            >>> len(ResultTable.concat([a, a, ResultTable()])), len(a + a)
            (2, 2)
        """
        rows: list[ResultRow] = []
        for t in tables:
            rows.extend(t.rows)
        return cls(rows)

    def filter(self, **criteria: Any) -> ResultTable:
        """Rows whose fields equal the given values, e.g. ``table.filter(protocol="paper")``.

        A value may also be a collection (list, tuple, set) of accepted values.

        Example:
            >>> row = lambda scan, c: ResultRow(scan=scan, class_id=c, class_name=str(c))
            >>> t = ResultTable([row("1", 1), row("2", 1), row("2", 4)])
            >>> len(t.filter(scan="2")), [r.scan for r in t.filter(class_id=1, scan={"1", "2"})]
            (2, ['1', '2'])
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
        """The rows as plain dicts (field name -> value; NaN floats and None kept as they are).

        Example:
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8)])
            >>> rec = t.to_records()[0]; rec["scan"], rec["dice"], rec["setting"]
            ('1', 0.8, None)
        """
        return [asdict(r) for r in self._rows]

    # -- summaries ---------------------------------------------------------------------------
    def groups(self) -> list[_GroupKey]:
        """The distinct (protocol, setting, ways) groups, in order of first appearance.

        Example:
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", protocol=p)
            ...                  for p in ("paper", "realistic", "paper")])
            >>> t.groups()
            [('paper', None, '1'), ('realistic', None, '1')]
        """
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
            ``{class_id: mean}`` sorted by class id, floats (NaN where a class has no value).

        Example:
            >>> t = ResultTable([ResultRow(scan=s, class_id=1, class_name="liver", dice=d)
            ...                  for s, d in (("1", 0.9), ("1", 0.7), ("2", 0.6))])
            >>> {c: round(v, 4) for c, v in t.per_class().items()}  # scan 1: 0.8, then over scans
            {1: 0.7}
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
        """Mean over classes of `per_class` (NaN classes left out): the tables' "Mean".

        Example:
            >>> t = ResultTable([ResultRow(scan="1", class_id=c, class_name=str(c), dice=d)
            ...                  for c, d in ((1, 0.9), (2, 0.5), (3, float("nan")))])
            >>> round(t.mean(), 4)  # class 3 is absent from both maps: left out
            0.7
        """
        return nanmean(self.per_class(metric).values())

    def summary(self, metric: str = "dice") -> list[SummaryRow]:
        """One `SummaryRow` per (protocol, setting, ways) group, in order of first appearance.

        Example:
            >>> t = ResultTable(ResultRow(scan="1", class_id=1, class_name="liver", protocol=p,
            ...                 dice=d) for p, d in [("paper", 0.8), ("realistic", 0.5)])
            >>> [(s.protocol, s.mean) for s in t.summary()]
            [('paper', 0.8), ('realistic', 0.5)]
        """
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

        Example:
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8)])
            >>> print(t.to_markdown())
            | protocol | setting | ways | scans | liver | mean dice (%) |
            | -------- | ------- | ---- | ----- | ----- | ------------- |
            | paper    | -       | 1    | 1     | 80.00 | 80.00         |
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
        """Write the rows as CSV (header = field names; empty = None; ``nan``/``inf`` floats).

        Returns the path.

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "dice.csv"
            >>> _ = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver")]).to_csv(path)
            >>> path.read_text().splitlines()[1]
            '1,1,liver,paper,,,,1,3,nan,nan,0,0,0,0,nan,nan'
        """
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(_FIELD_NAMES))
            w.writeheader()
            for rec in self.to_records():
                w.writerow({k: "" if v is None else v for k, v in rec.items()})
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> ResultTable:
        """Read a table written by `to_csv` (types restored: ints, None, NaN).

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "dice.csv"
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", setting=2)])
            >>> back = ResultTable.from_csv(t.to_csv(path)); back == t, back.rows[0].setting
            (True, 2)
        """
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
        Returns the path.

        Example:
            >>> import json, tempfile; path = Path(tempfile.mkdtemp()) / "dice.json"
            >>> row = ResultRow(scan="1", class_id=1, class_name="liver", hd95=math.inf)
            >>> rec = json.loads(ResultTable([row]).to_json(path).read_text())["rows"][0]
            >>> rec["dice"], rec["hd95"]
            (None, 'inf')
        """
        path = Path(path)
        recs = [{k: _json_value(v) for k, v in rec.items()} for rec in self.to_records()]
        doc = {"format": "fewshotseg.ResultTable", "version": 1, "rows": recs}
        path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ResultTable:
        """Read a table written by `to_json` (or a bare JSON list of row objects).

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "dice.json"
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver",
            ...                            hd95=math.inf)])
            >>> ResultTable.from_json(t.to_json(path)) == t  # NaN and inf come back
            True
        """
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        recs = doc["rows"] if isinstance(doc, dict) and "rows" in doc else doc
        if not isinstance(recs, list):
            raise ValueError(f"{path} is not a result table: expected a list of rows.")
        return cls(_row_from_record(rec, str(path)) for rec in recs)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``.csv`` or ``.json``, chosen by the suffix of ``path``; returns the path.

        Example:
            >>> import tempfile; folder = Path(tempfile.mkdtemp())
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8)])
            >>> [t.save(folder / name).name for name in ("dice.csv", "dice.json")]
            ['dice.csv', 'dice.json']
        """
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.to_csv(path)
        if suffix == ".json":
            return self.to_json(path)
        raise ValueError(f"cannot tell the format of {path}: use a .csv or .json suffix.")

    @classmethod
    def load(cls, path: str | os.PathLike) -> ResultTable:
        """Read a ``.csv`` or ``.json`` table written by `save`.

        Example:
            >>> import tempfile; folder = Path(tempfile.mkdtemp())
            >>> t = ResultTable([ResultRow(scan="1", class_id=1, class_name="liver", dice=0.8)])
            >>> [ResultTable.load(t.save(folder / name)) == t for name in ("a.csv", "a.json")]
            [True, True]
        """
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
# cross-validation summary
# --------------------------------------------------------------------------------------------


def _sort_key(value: int | None) -> tuple[bool, int]:
    return (value is None, 0 if value is None else value)


def _run_key(table: ResultTable) -> tuple[int | None, int | None]:
    """The (setting, fold) that every row of one evaluation run shares."""
    if not len(table):
        raise ValueError("summarize_folds got an empty table; pass the tables of evaluated runs.")
    keys = {(r.setting, r.fold) for r in table}
    if len(keys) > 1:
        raise ValueError(
            f"a table mixes (setting, fold) pairs {sorted(keys, key=str)}; pass one table per "
            "evaluation run (table.filter(setting=..., fold=...) splits one)."
        )
    return keys.pop()


def summarize_folds(
    tables: Iterable[ResultTable],
    *,
    steps: Iterable[int] | None = None,
    protocol: str = "paper",
    class_names: Mapping[int, str] | None = None,
) -> str:
    """A Markdown table of a cross-validation: one line per (setting, fold), then their mean.

    Each table holds one evaluation run: one fold of one setting (in setting 2, one group of a
    fold; the groups of the same fold make one line). The class columns show ``protocol``'s
    Dice (%); the bold column is its mean over classes, and the last columns the means of the
    other protocols of :data:`PROTOCOLS` (empty where a run has none). With more than one fold
    in a setting, a "mean of k" line follows: per class over every query scan of the setting's
    folds, then over classes, as the paper averages (not the mean of the fold means).

    Args:
        tables: one :class:`ResultTable` per evaluation run; every row of a table has the same
            ``setting`` and ``fold``.
        steps: the training step of each table's model, in the same order (shown as
            ``6990/7000`` when the groups of a fold differ); default: the column stays empty.
        protocol: the protocol whose per-class Dice is shown.
        class_names: ``{class_id: column name}``; these classes, in ascending order, are the
            columns (a class absent from a line leaves its cell empty). Default: every class of
            the tables, named as in their rows.

    Returns:
        The table, header first, one line per row (no trailing newline).

    Raises:
        ValueError: a table is empty or mixes (setting, fold) pairs, ``steps`` has another
            length than ``tables``, or ``protocol`` is unknown.

    Example:
        >>> row = lambda fold, dice: ResultRow(scan=str(fold), class_id=1, class_name="liver",
        ...                                    setting=1, fold=fold, dice=dice)
        >>> text = summarize_folds([ResultTable([row(0, 0.8)]), ResultTable([row(1, 0.6)])])
        >>> print(text.splitlines()[-1])
        | 1 | mean of 2 |  | 70.00 | **70.00** |  |  |
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    tables = list(tables)
    step_list: list[int | None] = [None] * len(tables) if steps is None else list(steps)
    if len(step_list) != len(tables):
        raise ValueError(f"got {len(step_list)} steps for {len(tables)} tables; one per table.")
    runs: dict[tuple[int | None, int | None], list[tuple[ResultTable, int | None]]] = {}
    for table, step in zip(tables, step_list, strict=True):
        runs.setdefault(_run_key(table), []).append((table, step))
    names: dict[int, str] = {}
    if class_names is None:
        for table in tables:
            for r in table:
                names.setdefault(r.class_id, r.class_name)
    else:
        names = {int(c): str(n) for c, n in class_names.items()}
    classes = sorted(names)
    others = [p for p in PROTOCOLS if p != protocol]

    def mean_cell(table: ResultTable) -> str:
        return f"{100 * table.mean():.2f}" if len(table) else ""

    def line(setting: Any, fold: Any, steps_cell: str, table: ResultTable) -> str:
        main = table.filter(protocol=protocol)
        per = main.per_class() if len(main) else {}
        cells = " | ".join(f"{100 * per[c]:.2f}" if c in per else "" for c in classes)
        rest = " | ".join(mean_cell(table.filter(protocol=p)) for p in others)
        return f"| {setting} | {fold} | {steps_cell} | {cells} | **{mean_cell(main)}** | {rest} |"

    out = [
        "| setting | fold | steps | " + " | ".join(names[c] for c in classes)
        + f" | **mean, {protocol}** | " + " | ".join(f"mean, {p}" for p in others) + " |",
        "| --- " * (4 + len(classes) + len(others)) + "|",
    ]  # fmt: skip
    for setting in sorted({s for s, _ in runs}, key=_sort_key):
        folds = sorted((f for s, f in runs if s == setting), key=_sort_key)
        merged = []
        for fold in folds:
            parts = runs[(setting, fold)]
            table = ResultTable.concat(t for t, _ in parts)
            merged.append(table)
            known = sorted({n for _, n in parts if n is not None})
            out.append(line(_cell(setting), _cell(fold), "/".join(map(str, known)), table))
        if len(folds) > 1:
            everything = ResultTable.concat(merged)
            out.append(line(_cell(setting), f"mean of {len(folds)}", "", everything))
    return "\n".join(out)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
