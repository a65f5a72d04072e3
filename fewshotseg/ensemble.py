"""Several trained models used as one predictor: their probabilities averaged (an ensemble).

Independently trained models make different mistakes; averaging their foreground
probabilities keeps what they agree on. On CHAOS (docs/results.md, "Two models averaged"),
every pair of independently trained models tried scored above the mean of its two members,
by about one point of Dice on held-out patients, at twice the training and inference cost;
snapshots of one run did not help. It is not the default: one model is what `fewshotseg
train` makes and what ships.

`PredictorEnsemble` has the predictor's calls (`predict`, `predict_proba`, `segment_volume`),
so the evaluation protocols (`fewshotseg.evaluation`) score it as they score one model:

- ``predict_proba``: the members' class probabilities, averaged (each member resizes and
  encodes the slices itself, so members may differ in ``image_size``).
- ``predict``: the argmax of that average, as the support's label values.
- ``segment_volume``: `fewshotseg.volume.segment_with` with every member's supports; each
  member aligns and scores the query with its own features, each (member, support) pair votes
  on a class's extent (a slice counts where at least half the pairs put the class: with two
  models and one support, where either does) and their probabilities are averaged before the
  threshold.

Example:
    >>> import numpy as np
    >>> from fewshotseg import ALPNet, SupportQueryPredictor
    >>> members = [SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
    ...            for _ in range(2)]
    >>> ensemble = PredictorEnsemble(members)
    >>> image = np.random.default_rng(0).random((6, 40, 40)).astype(np.float32)
    >>> labels = np.zeros((6, 40, 40), np.int64); labels[1:5, 10:30, 10:30] = 2
    >>> ensemble.segment_volume(image, labels, image[:4]).shape
    (4, 40, 40)
    >>> ensemble.predict(image[2], labels[2], image[:3]).shape
    (3, 40, 40)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fewshotseg.inference import SupportQueryPredictor

if TYPE_CHECKING:
    from fewshotseg.volume import VolumeConfig, VolumeSupport

__all__ = ["PredictorEnsemble"]


class PredictorEnsemble:
    """Several predictors (`SupportQueryPredictor`) as one: their probabilities averaged.

    Args:
        predictors: two or more predictors (one is allowed: it then scores exactly as that
            predictor does), each with its own model, device and ``image_size``; they must
            share one ``modality``, since the intensity recipe is part of what each model
            learnt.

    Attributes:
        predictors: the members, in the order given.

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> members = [SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
        ...                                  image_size=32) for _ in range(2)]
        >>> ensemble = PredictorEnsemble(members)
        >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
        >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 3
        >>> proba = ensemble.predict_proba(image, mask, image)
        >>> mean = (members[0].predict_proba(image, mask, image)
        ...         + members[1].predict_proba(image, mask, image)) / 2
        >>> proba.shape, bool(np.allclose(proba, mean, atol=1e-6))
        ((2, 40, 40), True)
    """

    def __init__(self, predictors: Sequence[SupportQueryPredictor]) -> None:
        from fewshotseg.volume import _as_predictors

        if isinstance(predictors, SupportQueryPredictor):
            raise TypeError(
                "PredictorEnsemble takes a list of predictors (one per model), got a single "
                "SupportQueryPredictor; use it directly, or PredictorEnsemble([a, b])"
            )
        members = _as_predictors(predictors)
        modalities = {p.modality for p in members}
        if len(modalities) > 1:
            raise ValueError(
                f"the models use different intensity recipes ({sorted(map(str, modalities))}); "
                "an ensemble needs one: pass modality=... when loading them, or check that they "
                "were trained for the same kind of scan"
            )
        self.predictors: tuple[SupportQueryPredictor, ...] = tuple(members)

    @property
    def modality(self) -> str | None:
        """The members' common intensity recipe (`fewshotseg.preprocess`), or None."""
        return self.predictors[0].modality

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> PredictorEnsemble:
        """One member per checkpoint (`SupportQueryPredictor.from_checkpoint`, with the same
        ``device`` and other arguments for each).

        Example:
            >>> from fewshotseg.weights import pretrained_path
            >>> path = pretrained_path("chaos-ssl")
            >>> ensemble = PredictorEnsemble.from_checkpoints([path, path])
            >>> len(ensemble), ensemble.modality
            (2, 'mri')
        """
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError(
                "paths must be a list of checkpoint paths (one per model), got a single path; "
                "for one model use SupportQueryPredictor.from_checkpoint"
            )
        paths = list(paths)
        if not paths:
            raise ValueError("no checkpoints given; pass one path per model")
        return cls(
            [SupportQueryPredictor.from_checkpoint(p, device=device, **kwargs) for p in paths]
        )

    def __len__(self) -> int:
        return len(self.predictors)

    def __repr__(self) -> str:
        return f"PredictorEnsemble({len(self)} models, modality={self.modality!r})"

    # ------------------------------------------------------------------ slices
    def predict_proba(self, support_img: Any, support_mask: Any, query: Any) -> Any:
        """The members' `SupportQueryPredictor.predict_proba`, averaged: ``(N + 1, H, W)`` or
        ``(N + 1, D, H, W)`` float32, channel 0 background, channel n + 1 the n-th smallest
        support label value. Numpy in, numpy out; torch in, torch out on the query's device.

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> members = [SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                  image_size=size) for size in (32, 48)]
            >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
            >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 1
            >>> proba = PredictorEnsemble(members).predict_proba(image, mask, image[None])
            >>> proba.shape, bool(np.allclose(proba.sum(0), 1, atol=1e-5))
            ((2, 1, 40, 40), True)
        """
        return self._mean_proba(self._encode(support_img, support_mask), query)

    def predict(self, support_img: Any, support_mask: Any, query: Any) -> Any:
        """Label map with the query's shape: the argmax of `predict_proba`, as the support's
        label values (int64; numpy in, numpy out, torch in, torch out).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> members = [SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                  image_size=32) for _ in range(2)]
            >>> image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
            >>> mask = np.zeros((40, 40), np.int64); mask[5:20, 5:20] = 4
            >>> labels = PredictorEnsemble(members).predict(image, mask, image)
            >>> labels.shape, labels.dtype, set(np.unique(labels).tolist()) <= {0, 4}
            ((40, 40), dtype('int64'), True)
        """
        supports = self._encode(support_img, support_mask)
        proba = self._mean_proba(supports, query)
        values = (0, *supports[0].label_values)
        if isinstance(proba, torch.Tensor):
            return torch.tensor(values, dtype=torch.long, device=proba.device)[proba.argmax(0)]
        return np.asarray(values, np.int64)[proba.argmax(0)]

    def _encode(self, support_img: Any, support_mask: Any) -> list[Any]:
        return [p.encode_support(support_img, support_mask) for p in self.predictors]

    def _mean_proba(self, supports: Sequence[Any], query: Any) -> Any:
        pairs = zip(self.predictors, supports, strict=True)
        first, support = next(pairs)
        total = first.predict_proba_with(support, query)
        for p, support in pairs:  # one member's probabilities in memory at a time
            total = total + p.predict_proba_with(support, query)
        return total / len(self.predictors)

    # ------------------------------------------------------------------ volumes
    def segment_volume(
        self,
        support_volume: Any,
        support_labels: Any,
        query_volume: Any,
        *,
        classes: Sequence[int] | None = None,
        config: VolumeConfig | None = None,
    ) -> np.ndarray:
        """`SupportQueryPredictor.segment_volume` with every member: each aligns and scores
        the query with its own features, the (member, support) pairs vote on each class's
        extent and their probabilities are averaged (`fewshotseg.volume.segment_with`).

        Args:
            support_volume: ``(D_s, H, W)`` image, raw intensities or preprocessed; or a list
                of such volumes (several support scans).
            support_labels: ``(D_s, H, W)`` integer labels; or a list, one per volume.
            query_volume: ``(D, H', W')`` image; no labels.
            classes: label values to segment (default: every nonzero support label).
            config: a `fewshotseg.volume.VolumeConfig` (default: the measured best).

        Returns:
            ``(D, H', W')`` int64 numpy label map (support label values, 0 elsewhere).
        """
        from fewshotseg.volume import segment_volume

        return segment_volume(
            list(self.predictors),
            support_volume,
            support_labels,
            query_volume,
            classes=classes,
            config=config,
        )

    def encode_support_volume(
        self, support_volume: Any, support_labels: Any, *, classes: Sequence[int] | None = None
    ) -> list[VolumeSupport]:
        """Prepare a labelled support volume once per member, for many `segment_volume_with`
        calls (`SupportQueryPredictor.encode_support_volume`).

        Returns:
            One `fewshotseg.volume.VolumeSupport` per member, in the members' order.
        """
        return [
            p.encode_support_volume(support_volume, support_labels, classes=classes)
            for p in self.predictors
        ]

    def segment_volume_with(
        self,
        support: Sequence[VolumeSupport],
        query_volume: Any,
        *,
        config: VolumeConfig | None = None,
    ) -> np.ndarray:
        """`segment_volume` with supports from `encode_support_volume` (the lists of several
        support scans concatenated, if any).

        Example:
            >>> import numpy as np
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> members = [SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                  image_size=32) for _ in range(2)]
            >>> ensemble = PredictorEnsemble(members)
            >>> volume = np.random.default_rng(0).random((8, 40, 40)).astype(np.float32)
            >>> labels = np.zeros((8, 40, 40), np.int64); labels[2:6, 10:30, 10:30] = 1
            >>> support = ensemble.encode_support_volume(volume, labels)
            >>> [ensemble.segment_volume_with(support, q).shape for q in (volume, volume[:5])]
            [(8, 40, 40), (5, 40, 40)]
        """
        from fewshotseg.volume import segment_with

        return segment_with(list(self.predictors), support, query_volume, config=config)
