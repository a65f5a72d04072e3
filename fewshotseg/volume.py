"""Whole-volume segmentation from a labelled support volume, with no query labels.

What `SupportQueryPredictor.segment_volume` does, step by step (each step is a `VolumeConfig`
switch, so it can be measured on and off):

1. **Intensity recipe.** The predictor's ``modality`` recipe (`fewshotseg.preprocess`) is
   applied to both volumes, so raw scanner intensities and preprocessed arrays give the same
   result.
2. **Encode once.** Every query slice and every support slice goes through the backbone once;
   a support prepared with `prepare_support` keeps its slices' features, so further queries
   pay only for their own slices (`segment_with`).
3. **Align the two volumes by anatomy** (``localise="align"``). Each slice gets a descriptor
   (its features pooled to a 4 x 4 layout, centred by the volume's mean, L2-normalised); dynamic
   time warping finds the monotonic slice-to-slice correspondence of least total cosine distance.
   Each query slice is mapped to the most similar support slice it is aligned with. Slice
   indices alone (``localise="relative"``: query slice ``z`` of ``D`` at support depth
   ``z D_s / D``) assume that both scans cover the same stretch of the body.
4. **Localise each class.** A query slice is segmented for a class only if its aligned support
   slice lies within the class's extent in the support labels; every other slice is empty for
   that class. Without this the network, shown an organ, finds "something" in every slice.
5. **Choose support slices.** Each query slice is segmented 1-way with the support slice(s) of
   the class nearest to its aligned position (``support="aligned"``, ``shots`` of them, 3 by
   default, used together as K shots), or with
   the protocol's three slices by chunk (``support="chunks"``).
6. **Merge and clean up in 3D.** A voxel takes the class of highest probability above
   ``threshold`` (0.6: the network is over-confident at organ borders; 0.5 scored 1.8-2.3
   points lower on the validation patients); then per class the largest 3D connected
   component is kept (``largest_component``); holes inside it can be filled slice by slice
   (``fill_holes``, off: it changed the validation Dice by 0.02, the network leaves few holes).

**Several support volumes** (lists to `segment_volume`, or prepared supports to
`segment_with`): each is aligned with the query on its own, a query slice is segmented for a
class where at least half of them put the class (step 4 by vote), and their foreground
probabilities are averaged before step 6's threshold. On CHAOS, five folds, three supports
scored 78.9 against one support's 70.3 (docs/results.md, "Several support scans").
**Several models** (a list of predictors, or `fewshotseg.PredictorEnsemble`) take part the
same way: each (model, support) pair votes and adds its probabilities to the average.

The defaults were chosen on the training patients of CHAOS fold 0 (their labels used for
validation only), never on held-out queries; ``docs/results.md`` has the ablation.

Example:
    >>> import numpy as np
    >>> from fewshotseg import ALPNet, SupportQueryPredictor
    >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
    >>> image = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
    >>> labels = np.zeros((6, 40, 40), np.int64); labels[1:5, 10:30, 10:30] = 2
    >>> segment_volume(predictor, image, labels, image).shape
    (6, 40, 40)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from fewshotseg._checks import check_finite, to_label_map, to_numpy
from fewshotseg.alignment import _aligned_positions, align_slices, dtw_path, slice_descriptors
from fewshotseg.chunks import chunk_centres, chunk_of

if TYPE_CHECKING:  # the predictor calls us; we only need its type for annotations
    from fewshotseg.inference import EncodedSupport, SupportQueryPredictor

__all__ = [
    "VolumeConfig",
    "VolumeSupport",
    "align_slices",
    "clean_up",
    "dtw_path",
    "prepare_support",
    "segment_volume",
    "segment_with",
    "slice_descriptors",
]

logger = logging.getLogger(__name__)

# query slices classified per call: bounds the (slices, prototypes, h, w) similarity tensor
_SLICES_PER_CALL = 16


@dataclass(frozen=True, kw_only=True)
class VolumeConfig:
    """How `segment_volume` turns slices into a volume. Defaults: the measured best.

    Attributes:
        localise: ``"align"`` (anatomy: DTW over slice descriptors), ``"relative"`` (relative
            slice depth) or ``"none"`` (segment every slice for every class).
        support: ``"aligned"`` (the class's support slice(s) nearest to the query slice's
            aligned position) or ``"chunks"`` (the protocol's 3 slices, by chunk of the
            aligned position).
        shots: support slices per query slice with ``support="aligned"`` (the nearest ones
            containing the class, used together as K shots).
        margin: slices added at each end of a class's localised extent in the query.
        threshold: minimum foreground probability for a voxel to take a class.
        largest_component: keep only the largest 3D connected component of each class.
        fill_holes: fill holes inside each class, slice by slice (off by default: no measurable
            effect on the validation patients).
        parts: chunks per class with ``support="chunks"`` (3 in the paper).

    Example:
        >>> config = VolumeConfig(localise="relative", threshold=0.5)
        >>> config.localise, config.support, config.shots, config.largest_component
        ('relative', 'aligned', 3, True)
    """

    localise: Literal["align", "relative", "none"] = "align"
    support: Literal["aligned", "chunks"] = "aligned"
    shots: int = 3
    margin: int = 0
    threshold: float = 0.6
    largest_component: bool = True
    fill_holes: bool = False
    parts: int = 3

    def __post_init__(self) -> None:
        if self.localise not in ("align", "relative", "none"):
            raise ValueError(
                f"localise must be 'align', 'relative' or 'none', got {self.localise!r}"
            )
        if self.support not in ("aligned", "chunks"):
            raise ValueError(f"support must be 'aligned' or 'chunks', got {self.support!r}")
        if self.shots < 1 or self.margin < 0 or self.parts < 1:
            raise ValueError("VolumeConfig needs shots >= 1, margin >= 0 and parts >= 1")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")


# --------------------------------------------------------------------------------------------
# clean-up
# --------------------------------------------------------------------------------------------


def clean_up(
    labels: np.ndarray, classes: Sequence[int], *, largest_component: bool, fill_holes: bool
) -> np.ndarray:
    """Per class, keep the largest 3D connected component and fill holes slice by slice.

    A filled hole takes the class only where it was background (other classes are kept).

    Example:
        >>> lab = np.zeros((1, 5, 7), np.int64); lab[0, 1:4, 1:4] = 1; lab[0, 2, 2] = 0
        >>> lab[0, 0, 6] = 1  # a stray voxel
        >>> clean_up(lab, [1], largest_component=True, fill_holes=True)[0].tolist()[:3]
        [[0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0]]
    """
    out = labels.copy()
    for cls in classes:
        box = _bounding_box(out == cls)
        if box is None:
            continue
        region = out[box]  # a view: the work stays inside the class's bounding box
        mask = region == cls
        if largest_component:
            components, n = ndimage.label(mask)
            if n > 1:
                sizes = np.bincount(components.ravel())[1:]
                keep = components == (int(np.argmax(sizes)) + 1)
                region[mask & ~keep] = 0
                mask = keep
        if fill_holes:
            for z in np.flatnonzero(mask.any(axis=(1, 2))):
                filled = ndimage.binary_fill_holes(mask[z])
                region[z][filled & (region[z] == 0)] = cls
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask``, or None when there is none."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


# --------------------------------------------------------------------------------------------
# the support volume, prepared once
# --------------------------------------------------------------------------------------------


class VolumeSupport:
    """A labelled support volume, prepared once to segment any number of query volumes.

    Made by `prepare_support` (or `SupportQueryPredictor.encode_support_volume`). A support
    slice goes through the backbone the first time a query needs it and is kept (alignment
    needs every slice, relative localisation only the few it picks), so later queries skip the
    support's encoding: on CHAOS on a 2-core CPU about 40 % of a single call (docs/results.md).

    Attributes:
        predictor: the `SupportQueryPredictor` whose backbone encodes the slices.
        volume: ``(D_s, H, W)`` float32 support image, after the predictor's intensity recipe.
        labels: ``(D_s, H, W)`` int64 labels (0 background).
        classes: the label values to segment, in order.
        slices: ``{class: sorted indices of the slices that contain it}``.
        modality: the intensity recipe applied to ``volume`` (the predictor's at preparation).

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
        >>> image = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
        >>> labels = np.zeros((6, 40, 40), np.int64); labels[1:4, 10:30, 10:30] = 2
        >>> support = prepare_support(predictor, image, labels)
        >>> support.classes, support.slices[2].tolist()
        ((2,), [1, 2, 3])
        >>> support.features([1, 3]).shape  # (slices, F, h, w)
        torch.Size([2, 8, 4, 4])
    """

    def __init__(
        self,
        predictor: SupportQueryPredictor,
        volume: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[int],
    ) -> None:
        self.predictor = predictor
        self.modality = predictor.modality
        self.volume, self.labels, self.classes = volume, labels, tuple(classes)
        self.slices = {c: np.flatnonzero((labels == c).any(axis=(1, 2))) for c in self.classes}
        self._features: dict[int, Tensor] = {}
        self._descriptors: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"VolumeSupport(shape={self.volume.shape}, classes={self.classes}, "
            f"encoded={len(self._features)}/{self.volume.shape[0]} slices)"
        )

    def features(self, zs: Sequence[int] | None = None) -> Tensor:
        """Backbone features ``(len(zs), F, h, w)`` (float32) of support slices ``zs``
        (default: every slice), encoding only the slices not seen before.

        Example:
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> model = ALPNet(backbone="tiny", feature_dim=8)
            >>> predictor = SupportQueryPredictor(model, image_size=32)
            >>> labels = np.zeros((4, 40, 40), np.int64); labels[1:4, 10:30, 10:30] = 1
            >>> image = np.random.default_rng(0).random((4, 40, 40))
            >>> support = prepare_support(predictor, image, labels)
            >>> support.features([0, 2]).shape  # (slices, F, h, w)
            torch.Size([2, 8, 4, 4])
            >>> support  # the other slices are not encoded yet
            VolumeSupport(shape=(4, 40, 40), classes=(1,), encoded=2/4 slices)
        """
        zs = range(self.volume.shape[0]) if zs is None else [int(z) for z in zs]
        todo = sorted(set(zs) - self._features.keys())
        if todo:
            encoded = self.predictor.encode_slices(self.volume[todo])
            self._features.update(zip(todo, encoded, strict=True))
        return torch.stack([self._features[z] for z in zs])

    def descriptors(self) -> np.ndarray:
        """`slice_descriptors` of every support slice ``(D_s, d)``, computed once.

        Example:
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> model = ALPNet(backbone="tiny", feature_dim=8)
            >>> predictor = SupportQueryPredictor(model, image_size=32)
            >>> labels = np.zeros((4, 40, 40), np.int64); labels[1:4, 10:30, 10:30] = 1
            >>> image = np.random.default_rng(0).random((4, 40, 40))
            >>> support = prepare_support(predictor, image, labels)
            >>> d = support.descriptors(); d.shape, d.dtype, d is support.descriptors()
            ((4, 128), dtype('float64'), True)
        """
        if self._descriptors is None:
            self._descriptors = slice_descriptors(self.features())
        return self._descriptors

    def support_sets(self, cls: int, shots: Sequence[Sequence[int]]) -> EncodedSupport:
        """G 1-way support sets of class ``cls``, set g from support slices ``shots[g]`` (each
        of the same length K): a `EncodedSupport` of batch G.

        Each slice is pooled once, as a 1-shot set, and the sets are combined from those (a
        slice is in up to K sets); equal to pooling each set's slices together.

        Example:
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> model = ALPNet(backbone="tiny", feature_dim=8)
            >>> predictor = SupportQueryPredictor(model, image_size=32)
            >>> labels = np.zeros((4, 40, 40), np.int64); labels[1:4, 10:30, 10:30] = 1
            >>> image = np.random.default_rng(0).random((4, 40, 40))
            >>> support = prepare_support(predictor, image, labels)
            >>> sets = support.support_sets(1, [[1, 2], [2, 3]])  # G=2 sets of K=2 slices
            >>> sets.shots, sets.label_values, sets.prototypes.features.shape[0]
            (2, (1,), 2)
        """
        index = np.asarray(shots, dtype=np.int64)  # (G, K)
        unique, inverse = np.unique(index, return_inverse=True)
        masks = torch.from_numpy((self.labels[unique] == cls)[:, None, None].astype(np.float32))
        single = self.predictor.support_from_features(self.features(unique)[:, None], masks, (cls,))
        if single.prototypes.background_average is not None:
            return single.combine(inverse.reshape(index.shape))
        # a model without local prototypes (PANet) averages over the shots: pool each set
        masks = torch.from_numpy((self.labels[index] == cls)[:, :, None].astype(np.float32))
        feats = self.features(index.ravel())
        feats = feats.reshape(*index.shape, *feats.shape[1:])
        return self.predictor.support_from_features(feats, masks, (cls,))


def prepare_support(
    predictor: SupportQueryPredictor,
    support_volume: Any,
    support_labels: Any,
    *,
    classes: Sequence[int] | None = None,
) -> VolumeSupport:
    """Check a labelled support volume and apply the predictor's intensity recipe, once.

    Args:
        predictor: the `SupportQueryPredictor` that will segment the queries.
        support_volume: ``(D_s, H, W)`` image (numpy or torch), raw intensities or preprocessed.
        support_labels: ``(D_s, H, W)`` integer labels (0 background).
        classes: label values to segment (default: every nonzero support label).

    Returns:
        A `VolumeSupport` for `segment_with` (nothing is encoded yet).

    Example:
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
        >>> labels = np.zeros((4, 40, 40), np.int64); labels[1:3, 10:30, 10:30] = 2
        >>> support = prepare_support(predictor, np.ones((4, 40, 40), np.uint16), labels)
        >>> support.volume.dtype, support.classes, support.slices[2].tolist()
        (dtype('float32'), (2,), [1, 2])
    """
    from fewshotseg.preprocess import apply_recipe

    sup, lab, classes = _check_support(support_volume, support_labels, classes)
    if predictor.modality is not None:
        sup = apply_recipe(sup, predictor.modality)
    return VolumeSupport(predictor, np.asarray(sup, np.float32), lab, classes)


# --------------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------------


def segment_volume(
    predictor: SupportQueryPredictor | Sequence[SupportQueryPredictor],
    support_volume: Any,
    support_labels: Any,
    query_volume: Any,
    *,
    classes: Sequence[int] | None = None,
    config: VolumeConfig | None = None,
) -> np.ndarray:
    """Segment a whole query volume from a labelled support volume; no query labels used.

    One call of `prepare_support` and `segment_with`; to segment several queries with one
    support, prepare it once and call `segment_with` for each. Several labelled support
    volumes (a list of volumes and a list of their labels) vote on where each class lies in the
    query and average their probabilities (`segment_with`); so do several trained models (a
    list of predictors, an ensemble: each prepares every support volume).

    Args:
        predictor: a `SupportQueryPredictor` (its model, device, image size and ``modality``),
            or several: a list of them or a `fewshotseg.PredictorEnsemble` (see
            `segment_with`).
        support_volume: ``(D_s, H, W)`` image, raw intensities or preprocessed; or a list of
            such volumes (their depths and sizes may differ).
        support_labels: ``(D_s, H, W)`` integer labels (0 background); a list with a list of
            volumes.
        query_volume: ``(D, H', W')`` image.
        classes: label values to segment (default: every nonzero support label; with several
            supports they must label the same classes, or pass those to segment).
        config: the pipeline's switches (default `VolumeConfig()`).

    Returns:
        ``(D, H', W')`` int64 label map (support label values, 0 elsewhere).

    Example:
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
        >>> image = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
        >>> labels = np.zeros((6, 40, 40), np.int64); labels[1:5, 10:30, 10:30] = 2
        >>> out = segment_volume(predictor, image, labels, image[:4, :32, :32])  # (D, H', W')
        >>> out.shape, out.dtype, set(np.unique(out).tolist()) <= {0, 2}
        ((4, 32, 32), dtype('int64'), True)
    """
    predictors = _as_predictors(predictor)
    if not isinstance(support_volume, (list, tuple)):
        support_volume, support_labels = [support_volume], [support_labels]
    elif not isinstance(support_labels, (list, tuple)) or len(support_labels) != len(
        support_volume
    ):
        raise ValueError(
            f"a list of {len(support_volume)} support volumes needs a list of as many label "
            f"volumes, got {type(support_labels).__name__}"
            + (f" of {len(support_labels)}" if isinstance(support_labels, (list, tuple)) else "")
        )
    supports = [
        prepare_support(p, volume, labels, classes=classes)
        for p in predictors
        for volume, labels in zip(support_volume, support_labels, strict=True)
    ]
    return segment_with(predictor, supports, query_volume, config=config)


def segment_with(
    predictor: SupportQueryPredictor | Sequence[SupportQueryPredictor],
    support: VolumeSupport | Sequence[VolumeSupport],
    query_volume: Any,
    *,
    config: VolumeConfig | None = None,
) -> np.ndarray:
    """Segment a query volume with a prepared support (`prepare_support`), or several.

    With several labelled support volumes, each is aligned with the query on its own; a query
    slice is segmented for a class where at least half the supports put it inside the class's
    extent (one atypical support is outvoted), and there the foreground probabilities of the
    supports (each with its own nearest slices) are averaged before the threshold.

    Several trained models (an ensemble: a list of predictors, each with the supports it
    prepared) take part the same way: each model encodes the query once and aligns and scores
    it with its own features, and every (model, support) pair is one voter and one term of the
    average. Two models with one support each: a slice is segmented where either model puts
    the class, with the mean of their probabilities. On CHAOS two independently trained models
    scored about one point above their mean (docs/results.md, "Two models averaged").

    Args:
        predictor: the predictor the support(s) were prepared with, or several (a list of
            predictors or a `fewshotseg.PredictorEnsemble`), each of which prepared at least
            one of the supports.
        support: a `VolumeSupport`, or a sequence of them labelling the same classes; each
            keeps the support slices it encodes for the next query.
        query_volume: ``(D, H', W')`` image (numpy or torch), raw intensities or preprocessed
            as the support was.
        config: the pipeline's switches (default `VolumeConfig()`).

    Returns:
        ``(D, H', W')`` int64 label map (``support.classes`` values, 0 elsewhere).

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
        >>> image = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
        >>> labels = np.zeros((6, 40, 40), np.int64); labels[1:5, 10:30, 10:30] = 2
        >>> support = prepare_support(predictor, image, labels)
        >>> [segment_with(predictor, support, q).shape for q in (image, image[:4])]
        [(6, 40, 40), (4, 40, 40)]
        >>> other = prepare_support(predictor, image[::-1], labels[::-1])
        >>> segment_with(predictor, [support, other], image).shape  # two supports
        (6, 40, 40)
    """
    from fewshotseg.preprocess import apply_recipe

    config = config or VolumeConfig()
    predictors = _as_predictors(predictor)
    supports = _check_prepared(predictors, support)
    qry = to_numpy(query_volume, "query_volume")
    if qry.ndim != 3:
        raise ValueError(f"query_volume must be a (D, H, W) volume, got shape {qry.shape}")
    check_finite(qry, "query_volume")
    out_size = (int(qry.shape[1]), int(qry.shape[2]))

    recipes: dict[str | None, np.ndarray] = {}  # the query after each modality's recipe, once
    feats_q: list[Tensor] = []  # the query's features, one model at a time
    for p in predictors:
        if p.modality not in recipes:
            recipes[p.modality] = qry if p.modality is None else apply_recipe(qry, p.modality)
        feats_q.append(p.encode_slices(recipes[p.modality]))
    owner = [next(i for i, p in enumerate(predictors) if s.predictor is p) for s in supports]
    positions = [
        _query_positions(config, feats_q[m], s) for s, m in zip(supports, owner, strict=True)
    ]
    best = np.zeros(qry.shape, np.float32)
    result = np.zeros(qry.shape, np.int64)
    for cls in supports[0].classes:
        inside = _localise(config, [s.slices[cls] for s in supports], positions)
        zs = np.flatnonzero(inside)
        if zs.size == 0:
            continue
        plans = [
            _support_plan(config, s, cls, p, zs) for s, p in zip(supports, positions, strict=True)
        ]
        for start in range(0, zs.size, _SLICES_PER_CALL):  # bounds the memory per call
            part = slice(start, start + _SLICES_PER_CALL)
            chunk = zs[part]
            feats = [f[chunk] for f in feats_q]  # each model's features of these slices
            voters = [
                (s.predictor, feats[m], plan)
                for s, m, plan in zip(supports, owner, plans, strict=True)
            ]
            proba = _mean_foreground(voters, part, out_size)
            take = (proba > config.threshold) & (proba > best[chunk])
            best[chunk] = np.where(take, proba, best[chunk])
            result[chunk] = np.where(take, cls, result[chunk])
    return clean_up(
        result,
        supports[0].classes,
        largest_component=config.largest_component,
        fill_holes=config.fill_holes,
    )


def _localise(
    config: VolumeConfig, present: Sequence[np.ndarray], positions: Sequence[np.ndarray]
) -> np.ndarray:
    """The query slices ``(D,)`` bool to segment for a class: those that at least half the
    supports align with the class's extent (``present``: its slices in each support)."""
    depth = len(positions[0])
    if config.localise == "none":
        return np.ones(depth, bool)
    votes = np.zeros(depth, np.int64)
    for slices, pos in zip(present, positions, strict=True):
        votes += (pos >= slices.min() - 0.5) & (pos <= slices.max() + 0.5)
    return _widen(2 * votes >= len(positions), config.margin)


def _support_plan(
    config: VolumeConfig, support: VolumeSupport, cls: int, pos: np.ndarray, zs: np.ndarray
) -> tuple[EncodedSupport, np.ndarray]:
    """The support sets of class ``cls`` for query slices ``zs`` (sorted): the `EncodedSupport`
    of every group `_support_groups` makes, pooled in one call, and each slice's group."""
    groups = _support_groups(config, support.slices[cls], pos, zs)
    items = np.empty(zs.size, np.int64)
    for g, members in enumerate(groups.values()):
        items[np.searchsorted(zs, members)] = g
    return support.support_sets(cls, list(groups)), items


def _mean_foreground(
    voters: Sequence[tuple[SupportQueryPredictor, Tensor, tuple[EncodedSupport, np.ndarray]]],
    part: slice,
    out_size: tuple[int, int],
) -> np.ndarray:
    """A class's foreground probability ``(d, H', W')`` in the query slices ``part`` of the
    plans' slices, averaged over the voters: (model, its features of those d slices, one
    support's `_support_plan`), one per (model, support) pair."""
    total = np.zeros((len(voters[0][1]), *out_size), np.float32)
    for predictor, feats, (sets, items) in voters:
        proba = predictor.probabilities(feats, sets.select(items[part]), out_size)
        total += proba[:, 1].float().cpu().numpy()
    return total / len(voters)


def _query_positions(config: VolumeConfig, feats_q: Tensor, support: VolumeSupport) -> np.ndarray:
    """Each query slice's position ``(D,)`` in support slice indices."""
    depth_q, depth_s = feats_q.shape[0], support.volume.shape[0]
    if config.localise == "align":
        return _aligned_positions(slice_descriptors(feats_q), support.descriptors())
    # relative depth: slice z of D sits at z * D_s / D (the previous segment_volume's rule)
    return np.arange(depth_q) * depth_s / depth_q


def _widen(inside: np.ndarray, margin: int) -> np.ndarray:
    if margin == 0 or not inside.any():
        return inside
    return ndimage.binary_dilation(inside, iterations=margin)


def _support_groups(
    config: VolumeConfig, present: np.ndarray, pos: np.ndarray, zs: np.ndarray
) -> dict[tuple[int, ...], np.ndarray]:
    """Query slices ``zs`` grouped by the support slices they are segmented with."""
    groups: dict[tuple[int, ...], list[int]] = {}
    if config.support == "chunks":  # the paper protocol's rules, at the aligned position
        picks = chunk_centres(present, config.parts)
        lo, hi = int(present.min()), int(present.max())
        for z in zs:
            chunk = chunk_of(pos[z], lo, hi, config.parts)
            groups.setdefault((picks[chunk],), []).append(int(z))
    else:
        k = min(config.shots, len(present))
        for z in zs:
            nearest = np.argsort(np.abs(present - pos[z]), kind="stable")[:k]
            groups.setdefault(tuple(sorted(int(present[i]) for i in nearest)), []).append(int(z))
    return {key: np.asarray(zs) for key, zs in groups.items()}


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _as_predictors(
    predictor: SupportQueryPredictor | Sequence[SupportQueryPredictor],
) -> list[SupportQueryPredictor]:
    """One predictor, or several (a list or a `PredictorEnsemble`), as a list of distinct
    predictors."""
    from fewshotseg.ensemble import PredictorEnsemble
    from fewshotseg.inference import SupportQueryPredictor

    if isinstance(predictor, PredictorEnsemble):
        return list(predictor.predictors)
    predictors = [predictor] if isinstance(predictor, SupportQueryPredictor) else predictor
    if isinstance(predictors, (str, bytes)) or not isinstance(predictors, Sequence):
        raise TypeError(
            "predictor must be a SupportQueryPredictor or a list of them (an ensemble), got "
            f"{type(predictor).__name__}"
        )
    if not predictors:
        raise ValueError("the list of predictors is empty; pass at least one")
    for p in predictors:
        if not isinstance(p, SupportQueryPredictor):
            raise TypeError(f"predictor must be a SupportQueryPredictor, got {type(p).__name__}")
    if len({id(p) for p in predictors}) < len(predictors):
        raise ValueError(
            "the same predictor appears more than once in the list; list each model once"
        )
    return list(predictors)


def _check_prepared(
    predictors: Sequence[SupportQueryPredictor], support: VolumeSupport | Sequence[VolumeSupport]
) -> list[VolumeSupport]:
    supports = [support] if isinstance(support, VolumeSupport) else support
    if not isinstance(supports, Sequence) or not supports:
        raise TypeError(
            f"support must be a VolumeSupport or a non-empty sequence of them, got "
            f"{type(support).__name__}"
        )
    for sup in supports:
        if not isinstance(sup, VolumeSupport):
            raise TypeError(f"support must be a VolumeSupport, got {type(sup).__name__}")
        if not any(sup.predictor is p for p in predictors) or (
            sup.modality != sup.predictor.modality
        ):
            raise ValueError(
                "this VolumeSupport was prepared by another predictor (or another modality); "
                "prepare it again with prepare_support(predictor, ...)"
            )
    idle = [i for i, p in enumerate(predictors) if not any(s.predictor is p for s in supports)]
    if idle:
        raise ValueError(
            f"predictor(s) {idle} of the ensemble prepared none of the supports; prepare the "
            "support volume(s) with each model (prepare_support(model, ...))"
        )
    if len({sup.classes for sup in supports}) > 1:
        raise ValueError(
            "the supports label different classes "
            f"({', '.join(str(list(sup.classes)) for sup in supports)}); pass classes=[...] "
            "that each of them labels when preparing them"
        )
    return list(supports)


def _check_support(
    support_volume: Any, support_labels: Any, classes: Any
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    sup = to_numpy(support_volume, "support_volume")
    check_finite(sup, "support_volume")  # here: the recipe would report it as "volume"
    lab = to_label_map(support_labels, "support_labels")
    if sup.ndim != 3 or lab.shape != sup.shape:
        raise ValueError(
            "the support needs a (D, H, W) volume and labels of the same shape; got "
            f"{sup.shape} and {lab.shape}"
        )
    lab = np.array(lab, dtype=np.int64)  # a copy: a prepared support outlives the call
    if int(lab.max()) < 1 << 16:  # label maps: counting is ~20x faster than np.unique's sort
        present = [int(v) for v in np.flatnonzero(np.bincount(lab.ravel(), minlength=1)[1:]) + 1]
    else:
        present = [int(v) for v in np.unique(lab) if v != 0]
    if classes is None:
        if not present:
            raise ValueError("support_labels has no foreground: label at least one voxel (> 0)")
        return sup, lab, present
    if isinstance(classes, (int, np.integer)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a sequence of label values, got {classes!r}")
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("classes is empty; pass the label values to segment, e.g. [1, 2]")
    missing = [c for c in classes if c <= 0 or c not in present]
    if missing:
        raise ValueError(
            f"classes {missing} are not labelled in the support volume (it has {present})"
        )
    return sup, lab, classes
