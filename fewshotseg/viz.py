"""Overlays of a scan slice with ground-truth and predicted label maps.

Needs matplotlib, from the ``viz`` extra (``pip install "fewshotseg[viz]"``), imported only when a
function here is called. Figures are built with the object-oriented API on an Agg canvas, so
nothing touches pyplot's global state or needs a display: safe in scripts, on servers and in
loops (figures are freed with the last reference). In Jupyter a returned figure shows itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fewshotseg.io import to_label_map

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "extent_slices",
    "overlay",
    "overlay_slices",
    "save_overlay",
    "save_training_curve",
    "slice_extents",
    "spread_slices",
    "support_query_figure",
]

logger = logging.getLogger(__name__)

_VIZ_EXTRA = 'pip install "fewshotseg[viz]"'


def _import_matplotlib() -> tuple[Any, Any, Any]:
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"fewshotseg.viz needs matplotlib, from the 'viz' extra: {_VIZ_EXTRA}"
        ) from err
    return Figure, FigureCanvasAgg, colormaps


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _pick_slice(
    image: np.ndarray, labels: list[np.ndarray], slice_index: int | None
) -> tuple[int | None, np.ndarray, list[np.ndarray]]:
    if image.ndim == 2:
        if slice_index is not None:
            raise ValueError("slice_index is only for (D, H, W) volumes; this image is (H, W)")
        return None, image, labels
    depth = image.shape[0]
    if slice_index is None:
        index = depth // 2
        for label in labels:  # truth first, then prediction
            counts = (label != 0).reshape(depth, -1).sum(axis=1)
            if counts.max() > 0:
                index = int(np.argmax(counts))
                break
    else:
        if isinstance(slice_index, bool) or not isinstance(slice_index, int | np.integer):
            raise TypeError(f"slice_index must be an int, got {type(slice_index).__name__}")
        if not -depth <= slice_index < depth:
            raise ValueError(f"slice_index {slice_index} is out of range for {depth} slices")
        index = int(slice_index) % depth
    return index, image[index], [label[index] for label in labels]


def _class_colours(
    values: list[int], classes: Mapping[int, str] | None, colormaps: Any
) -> dict[int, tuple[float, ...]]:
    ordered = sorted(set(classes or ()) - {0}) + [v for v in values if v not in (classes or {})]
    cmap = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {value: tuple(cmap(i % cmap.N)) for i, value in enumerate(ordered)}


_LINESTYLES = {"truth": "solid", "prediction": "dashed"}


def overlay(
    image: Any,
    truth: Any = None,
    prediction: Any = None,
    *,
    slice_index: int | None = None,
    classes: Mapping[int, str] | None = None,
    style: Literal["contour", "fill"] = "contour",
    alpha: float = 0.4,
    window: tuple[float, float] | None = None,
    rot90: int = 0,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Draw a scan slice with its ground truth and/or prediction, one colour per class.

    ``style="contour"``: one panel, class outlines, solid for the truth and dashed for the
    prediction. ``style="fill"``: one panel per label map given (truth, prediction), classes in
    translucent colours. A legend names the classes; colours follow the sorted keys of
    ``classes``, then any other value present.

    Args:
        image: ``(H, W)`` slice or ``(D, H, W)`` volume, numpy or torch, any real dtype.
        truth: label map of the image's shape (integer values, 0 = background), or ``None``.
        prediction: label map of the image's shape, or ``None``.
        slice_index: which slice of a volume to draw; default the one with the most foreground
            in ``truth`` (else ``prediction``, else the middle one).
        classes: label value -> name for the legend (e.g.
            ``fewshotseg.datasets.CHAOS_T2SPIR.classes``); default "class N".
        style: ``"contour"`` or ``"fill"``.
        alpha: opacity of the filled colours (``style="fill"``), in (0, 1].
        window: ``(low, high)`` grey-level range; default the slice's 0.5 and 99.5 percentiles.
        rot90: number of counter-clockwise quarter turns for display (arrays are drawn as stored,
            rows = ``H``; NIfTI-order axial slices usually look upright with ``rot90=1``).
        title: figure title; default ``"slice N"`` for volumes.
        figsize: figure size in inches; default 4 inches per panel plus the legend.

    Returns:
        A :class:`matplotlib.figure.Figure` on an Agg canvas (not registered with pyplot).

    Raises:
        ValueError: for shape mismatches, non-integer labels, a bad ``slice_index``, ``style``
            or ``alpha``.
        ImportError: without matplotlib.

    Example:
        >>> img = np.zeros((8, 8)); lab = np.zeros((8, 8), int); lab[2:5, 2:5] = 1
        >>> fig = overlay(img, truth=lab, prediction=lab, classes={1: "liver"})
        >>> len(fig.axes)
        1
    """
    Figure_, FigureCanvasAgg, colormaps = _import_matplotlib()
    if style not in ("contour", "fill"):
        raise ValueError(f"style must be 'contour' or 'fill', got {style!r}")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    picture = _checked_image(image)
    named = _named_label_maps(picture, truth=truth, prediction=prediction)
    index, picture, slices = _pick_slice(picture, [a for _, a in named], slice_index)
    picture = np.rot90(picture.astype(np.float64), rot90)
    slices = [np.rot90(s, rot90) for s in slices]
    low, high = _grey_range(picture) if window is None else window
    if not high > low:
        high = low + 1.0

    present = sorted({int(v) for s in slices for v in np.unique(s)} - {0})
    colours = _class_colours(present, classes, colormaps)
    panels = [name for name, _ in named] if style == "fill" and named else ["overlay"]
    legend_width = 1.6 if colours or named else 0.0
    fig = Figure_(figsize=figsize or (4.0 * len(panels) + legend_width, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax in axes:
        ax.imshow(picture, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        ax.set_axis_off()
    for panel, ((name, _), labels) in enumerate(zip(named, slices, strict=True)):
        if style == "fill":
            _fill(axes[panel], labels, colours, alpha)
            axes[panel].set_title(name)
        else:
            _outline(axes[0], labels, colours, _LINESTYLES[name])
    names = {v: _class_name(v, classes) for v in present}
    _legend(axes[-1], _overlay_handles(names, colours, style, alpha, [n for n, _ in named]))
    if title is not None:
        fig.suptitle(title)
    elif index is not None:
        fig.suptitle(f"slice {index}")
    return fig


def _checked_image(image: Any) -> np.ndarray:
    """The image as numpy; a real ``(H, W)`` or ``(D, H, W)`` array, else ``ValueError``."""
    picture = _to_numpy(image)
    if picture.ndim not in (2, 3) or not np.issubdtype(picture.dtype, np.number):
        raise ValueError(
            f"image must be a real (H, W) slice or (D, H, W) volume, got shape {picture.shape} "
            f"and dtype {picture.dtype}"
        )
    return picture


def _named_label_maps(picture: np.ndarray, **label_maps: Any) -> list[tuple[str, np.ndarray]]:
    """``[(name, integer label map), ...]`` for the label maps given (not ``None``), each
    checked to have the image's shape."""
    named: list[tuple[str, np.ndarray]] = []
    for name, label in label_maps.items():
        if label is None:
            continue
        array = _to_numpy(label)
        if array.shape != picture.shape:
            raise ValueError(
                f"{name} has shape {array.shape} but the image has {picture.shape}; they must "
                f"match (resample the label map onto the image grid first)"
            )
        named.append((name, to_label_map(array)))
    return named


def _grey_range(picture: np.ndarray) -> tuple[float, float]:
    """The display range of a slice: its finite values' 0.5 and 99.5 percentiles."""
    finite = picture[np.isfinite(picture)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, (0.5, 99.5))
    return float(low), float(high)


def _class_name(value: int, classes: Mapping[int, str] | None) -> str:
    return (classes or {}).get(value, f"class {value}")


def _fill(ax: Any, labels: np.ndarray, colours: Mapping[int, Any], alpha: float) -> None:
    """Each class of an ``(H, W)`` label map in its colour, translucent, over the axes."""
    rgba = np.zeros((*labels.shape, 4))
    for value, colour in colours.items():
        rgba[labels == value] = (*colour[:3], alpha)
    ax.imshow(rgba, interpolation="nearest")


def _outline(ax: Any, labels: np.ndarray, colours: Mapping[int, Any], linestyle: str) -> None:
    """Each class of an ``(H, W)`` label map outlined in its colour."""
    for value, colour in colours.items():
        mask = labels == value
        if mask.any():
            ax.contour(
                mask.astype(np.float32),
                levels=[0.5],
                colors=[colour],
                linestyles=linestyle,
                linewidths=1.5,
            )


def _show_slice(
    ax: Any, picture: np.ndarray, labels: np.ndarray, colours: Mapping[int, Any], alpha: float
) -> None:
    """A grey ``(H, W)`` slice with its labels filled in, no axis."""
    low, high = _grey_range(picture)
    ax.imshow(picture, cmap="gray", vmin=low, vmax=max(high, low + 1e-6))
    _fill(ax, labels, colours, alpha)
    ax.set_axis_off()


def _overlay_handles(
    names: Mapping[int, str],
    colours: Mapping[int, Any],
    style: str,
    alpha: float,
    label_maps: list[str],
) -> list[Any]:
    """Legend entries of `overlay`: a patch or line per class, then the line styles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if style == "fill":
        return [Patch(facecolor=colours[v], alpha=alpha, label=n) for v, n in names.items()]
    handles = [Line2D([], [], color=colours[v], linewidth=2, label=n) for v, n in names.items()]
    for name in label_maps:
        handles.append(Line2D([], [], color="0.3", linestyle=_LINESTYLES[name], label=name))
    return handles


def _legend(ax: Any, handles: list[Any]) -> None:
    """The legend outside the right edge of ``ax`` (nothing when there are no handles)."""
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")


def save_overlay(
    image: Any,
    truth: Any = None,
    prediction: Any = None,
    *,
    path: str | os.PathLike,
    slice_index: int | None = None,
    classes: Mapping[int, str] | None = None,
    style: Literal["contour", "fill"] = "contour",
    alpha: float = 0.4,
    window: tuple[float, float] | None = None,
    rot90: int = 0,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Draw :func:`overlay` and write it to an image file (PNG unless the suffix says otherwise).

    Args:
        image: ``(H, W)`` or ``(D, H, W)`` scan.
        truth: label map of the image's shape, or ``None``.
        prediction: label map of the image's shape, or ``None``.
        path: output file, e.g. ``"case_1.png"``; parent folders are created.
        slice_index: see :func:`overlay`.
        classes: see :func:`overlay`.
        style: see :func:`overlay`.
        alpha: see :func:`overlay`.
        window: see :func:`overlay`.
        rot90: see :func:`overlay`.
        title: see :func:`overlay`.
        figsize: see :func:`overlay`.
        dpi: resolution in dots per inch.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> out = save_overlay(np.eye(8), np.eye(8, dtype=int), path=f"{tempfile.mkdtemp()}/o.png")
        >>> out.stat().st_size > 0
        True
    """
    fig = overlay(
        image,
        truth,
        prediction,
        slice_index=slice_index,
        classes=classes,
        style=style,
        alpha=alpha,
        window=window,
        rot90=rot90,
        title=title,
        figsize=figsize,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    logger.debug("wrote overlay to %s", out)
    return out


def support_query_figure(
    support_image: Any,
    support_label: Any,
    query_image: Any,
    query_truth: Any,
    prediction: Any,
    *,
    classes: Mapping[int, str] | None = None,
    dice: Mapping[int, float] | None = None,
    rot90: int = 0,
    title: str | None = None,
    alpha: float = 0.45,
) -> Figure:
    """Few-shot segmentation in one picture: the support slice with its mask, then the query
    slice with its ground truth and with the prediction, one colour per class.

    Args:
        support_image: ``(H_s, W_s)`` support slice (any real dtype).
        support_label: its ``(H_s, W_s)`` integer labels (0 = background).
        query_image: ``(H, W)`` query slice.
        query_truth: its ``(H, W)`` integer ground truth.
        prediction: the ``(H, W)`` predicted labels.
        classes: label value -> name for the legend; default "class N".
        dice: label value -> Dice in [0, 1], shown in the legend (e.g. whole-volume scores).
        rot90: counter-clockwise quarter turns for display (``1`` for NIfTI-order axial slices).
        title: the figure's title.
        alpha: opacity of the label colours.

    Returns:
        A matplotlib ``Figure`` (Agg canvas) with three panels and a legend.

    Example:
        >>> img = np.zeros((8, 8)); lab = np.zeros((8, 8), int); lab[2:5, 2:5] = 1
        >>> fig = support_query_figure(img, lab, img, lab, lab, classes={1: "liver"},
        ...                            dice={1: 1.0})
        >>> [ax.get_title() for ax in fig.axes]
        ['support + mask', 'query: ground truth', 'query: prediction']
    """
    Figure_, FigureCanvasAgg, colormaps = _import_matplotlib()
    from matplotlib.patches import Patch

    panels = [
        ("support + mask", _to_numpy(support_image), to_label_map(_to_numpy(support_label))),
        ("query: ground truth", _to_numpy(query_image), to_label_map(_to_numpy(query_truth))),
        ("query: prediction", _to_numpy(query_image), to_label_map(_to_numpy(prediction))),
    ]
    for name, image, labels in panels:
        if image.ndim != 2 or image.shape != labels.shape:
            raise ValueError(
                f"{name}: need an (H, W) slice and labels of the same shape, got "
                f"{image.shape} and {labels.shape}"
            )
    present = sorted({int(v) for _, _, lab in panels for v in np.unique(lab)} - {0})
    colours = _class_colours(present, classes, colormaps)
    fig = Figure_(figsize=(12.0 + 2.2, 4.3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, image, labels) in zip(axes, panels, strict=True):
        _show_slice(ax, np.rot90(image.astype(np.float64), rot90), np.rot90(labels, rot90),
                    colours, alpha)  # fmt: skip
        ax.set_title(name)
    handles = []
    for value in present:
        label = _class_name(value, classes)
        if dice is not None and value in dice and np.isfinite(dice[value]):
            label += f": Dice {100 * dice[value]:.1f} %"
        handles.append(Patch(facecolor=colours[value], alpha=alpha, label=label))
    _legend(axes[-1], handles)
    if title is not None:
        fig.suptitle(title)
    return fig


def save_training_curve(run: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Plot a run's ``metrics.csv`` (written by `fewshotseg.training.Trainer`) to a PNG.

    Left: the loss, its segmentation and alignment parts against the step (log scale). Right:
    the learning rate and the training speed (episodes per second over each log window).

    Args:
        run: the run folder (the trainer's ``checkpoint_dir``) or the CSV file itself.
        path: the image to write; default ``metrics.png`` beside the CSV.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: no ``metrics.csv`` there (a run logs it at every log step).
        ImportError: without matplotlib.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.csv").write_text(
        ...     "step,loss,seg_loss,align_loss,lr,episodes_per_s,seconds\\n"
        ...     "10,1.2,0.7,0.5,0.001,3.5,3\\n20,0.9,0.5,0.4,0.001,3.6,6\\n")
        >>> save_training_curve(d).name
        'metrics.png'
    """
    Figure_, FigureCanvasAgg, _ = _import_matplotlib()
    source = Path(run)
    csv = source / "metrics.csv" if source.is_dir() else source
    if not csv.is_file():
        raise FileNotFoundError(
            f"no training metrics at {csv}; a run writes metrics.csv into its checkpoint folder"
        )
    data = np.genfromtxt(csv, delimiter=",", names=True, ndmin=1)
    if data.size == 0:
        raise ValueError(f"{csv} has no rows yet")
    fig = Figure_(figsize=(11.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for column, style in (("loss", "-"), ("seg_loss", "--"), ("align_loss", ":")):
        left.plot(data["step"], data[column], style, label=column.replace("_", " "))
    left.set_yscale("log")
    left.set_xlabel("step")
    left.set_title("loss")
    left.legend(fontsize="small")
    right.plot(data["step"], data["episodes_per_s"], color="tab:green")
    right.set_xlabel("step")
    right.set_ylabel("episodes / s (recent)", color="tab:green")
    lr_axis = right.twinx()
    lr_axis.plot(data["step"], data["lr"], color="tab:purple", linestyle="--")
    lr_axis.set_ylabel("learning rate", color="tab:purple")
    right.set_title("speed and learning rate")
    fig.suptitle(f"training curve: {csv.parent.name}")
    out = Path(path) if path is not None else csv.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def spread_slices(labels: Any, count: int = 3) -> list[int]:
    """``count`` slices spread evenly over the extent of a label map's foreground (its first to
    last labelled slice), e.g. the query slices a support-matched segmentation covers.

    Args:
        labels: ``(D, H, W)`` label map (any class counts as foreground), numpy or torch.
        count: how many slices.

    Returns:
        Sorted distinct slice indices in ``0..D-1`` (fewer than ``count`` when the extent is
        short); the whole volume counts as the extent when nothing is labelled.

    Example:
        >>> lab = np.zeros((20, 4, 4), int); lab[4:15, 1, 1] = 2
        >>> spread_slices(lab, 3)
        [6, 9, 12]
    """
    mask = _to_numpy(labels)
    if mask.ndim != 3:
        raise ValueError(f"labels must be a (D, H, W) volume, got shape {mask.shape}")
    filled = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    low, high = (int(filled[0]), int(filled[-1])) if filled.size else (0, mask.shape[0] - 1)
    picks = np.linspace(low, high, count + 2)[1:-1] if high > low else np.full(count, low)
    return sorted({int(round(z)) for z in picks})


def slice_extents(labels: Any) -> dict[int, tuple[int, int]]:
    """Each class's extent along the slicing axis: its first and last slice.

    Args:
        labels: ``(D, H, W)`` integer label map (0 = background), numpy or torch.

    Returns:
        ``{value: (first, last)}`` for every nonzero value present, in increasing value order.

    Example:
        >>> lab = np.zeros((9, 4, 4), int); lab[2:7, 0, 0] = 1; lab[5, 1, 1] = 3
        >>> slice_extents(lab)
        {1: (2, 6), 3: (5, 5)}
    """
    mask = to_label_map(_to_numpy(labels))
    if mask.ndim != 3:
        raise ValueError(f"labels must be a (D, H, W) volume, got shape {mask.shape}")
    extents: dict[int, tuple[int, int]] = {}
    for value in np.unique(mask):
        if value != 0:
            filled = np.flatnonzero((mask == value).reshape(mask.shape[0], -1).any(axis=1))
            extents[int(value)] = (int(filled[0]), int(filled[-1]))
    return extents


def extent_slices(labels: Any, count: int = 4) -> list[int]:
    """Slices that show every class of a segmentation, spread over where the classes are.

    Made for `fewshotseg.volume.segment_volume`'s output: it labels a class only in the query
    slices aligned with the class's extent in the support, so each class's extent in the
    prediction is the support-matched range where it was localised. No network call is needed.

    1. The fewest slices that together show every class: classes whose extents overlap share
       one slice, the one of their common range that holds the most of them (nearest its
       middle on a tie), found greedily by the extents' last slices (interval stabbing).
    2. Then, until there are ``count``: the middle of the widest gap between the slices chosen
       and the ends of the classes' extents, counting only slices inside some class's extent
       (no slice between two organs that share none); the ends themselves come last.

    Args:
        labels: ``(D, H, W)`` integer label map (a prediction), numpy or torch.
        count: how many slices to show; more when step 1 needs more (classes that never share
            a slice), fewer when the extent is shorter.

    Returns:
        Sorted distinct slice indices. With nothing labelled, ``count`` slices spread over the
        whole volume.

    Example:
        >>> lab = np.zeros((40, 4, 4), int)
        >>> lab[10:36, 0, 0] = 1; lab[15:31, 1, 1] = 4; lab[18:33, 2, 2] = 2  # liver, spleen...
        >>> extent_slices(lab, 4)  # 24 shows all three; then the widest gaps of 10..35
        [13, 17, 24, 29]
    """
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    mask = to_label_map(_to_numpy(labels))
    extents = slice_extents(mask)
    if not extents:
        return _fill_gaps(set(), 0, mask.shape[0] - 1, count)
    chosen: set[int] = set()
    group: list[int] = []
    common = (0, 0)
    for value in sorted(extents, key=lambda v: extents[v][1]):
        first, last = extents[value]
        if group and first <= common[1]:
            group.append(value)
            common = (max(common[0], first), common[1])
            continue
        if group:
            chosen.add(_busiest_slice(mask, group, common))
        group, common = [value], (first, last)
    chosen.add(_busiest_slice(mask, group, common))
    # gaps are counted in slices inside some class's extent: none is spent between two organs
    covered = np.zeros(mask.shape[0], bool)
    for first, last in extents.values():
        covered[first : last + 1] = True
    zs = np.flatnonzero(covered)
    ranks = {int(np.searchsorted(zs, z)) for z in chosen}
    return [int(zs[r]) for r in _fill_gaps(ranks, 0, len(zs) - 1, count)]


def _busiest_slice(mask: np.ndarray, values: list[int], span: tuple[int, int]) -> int:
    """The slice of ``span`` (first, last) holding the most of ``values``, nearest its middle
    on a tie."""
    zs = np.arange(span[0], span[1] + 1)
    held = sum((mask[zs] == v).reshape(len(zs), -1).any(axis=1).astype(int) for v in values)
    distance = np.abs(zs - (span[0] + span[1]) / 2)
    return int(zs[np.lexsort((distance, -held))[0]])


def _fill_gaps(chosen: set[int], low: int, high: int, count: int) -> list[int]:
    """Add the middle of the widest gap between ``chosen`` and ``low``/``high`` until there are
    ``count`` slices; then ``low`` and ``high`` themselves if still short."""
    chosen = set(chosen)
    while len(chosen) < count:
        points = sorted(chosen | {low, high})
        gaps = [(b - a, a, b) for a, b in zip(points, points[1:], strict=False)]
        width, a, b = max(gaps, key=lambda gap: gap[0], default=(0, low, high))
        if width >= 2:
            chosen.add((a + b) // 2)
        elif low not in chosen or high not in chosen:
            chosen.add(low if low not in chosen else high)
        else:
            break
    return sorted(chosen)


def overlay_slices(
    image: Any,
    labels: Any,
    slice_indices: list[int],
    *,
    classes: Mapping[int, str] | None = None,
    rot90: int = 0,
    alpha: float = 0.45,
    title: str | None = None,
) -> Figure:
    """Several slices of a volume side by side, labels filled in colour, classes named.

    Args:
        image: ``(D, H, W)`` volume.
        labels: ``(D, H, W)`` integer labels (a prediction, say).
        slice_indices: which slices, one panel each.
        classes: label value -> name for the legend; default "class N".
        rot90: counter-clockwise quarter turns for display.
        alpha: opacity of the colours.
        title: the figure's title.

    Returns:
        A matplotlib ``Figure`` (Agg canvas) with one panel per slice and a legend.

    Example:
        >>> vol = np.zeros((5, 8, 8)); lab = np.zeros((5, 8, 8), int); lab[1:4, 2:5, 2:5] = 1
        >>> fig = overlay_slices(vol, lab, [1, 3], classes={1: "liver"})
        >>> [ax.get_title() for ax in fig.axes]
        ['slice 1', 'slice 3']
    """
    Figure_, FigureCanvasAgg, colormaps = _import_matplotlib()
    from matplotlib.patches import Patch

    volume, label_map = _to_numpy(image), to_label_map(_to_numpy(labels))
    if volume.ndim != 3 or volume.shape != label_map.shape:
        raise ValueError(
            f"need a (D, H, W) image and labels of its shape, got {volume.shape} and "
            f"{label_map.shape}"
        )
    if not slice_indices or any(not 0 <= z < volume.shape[0] for z in slice_indices):
        raise ValueError(f"slice_indices must be in 0..{volume.shape[0] - 1}, got {slice_indices}")
    present = sorted({int(v) for z in slice_indices for v in np.unique(label_map[z])} - {0})
    colours = _class_colours(present, classes, colormaps)
    fig = Figure_(figsize=(4.0 * len(slice_indices) + 2.0, 4.3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(slice_indices), squeeze=False)[0]
    for ax, z in zip(axes, slice_indices, strict=True):
        _show_slice(ax, np.rot90(volume[z].astype(np.float64), rot90),
                    np.rot90(label_map[z], rot90), colours, alpha)  # fmt: skip
        ax.set_title(f"slice {z}")
    _legend(
        axes[-1],
        [Patch(facecolor=colours[v], alpha=alpha, label=_class_name(v, classes)) for v in present],
    )
    if title is not None:
        fig.suptitle(title)
    return fig
