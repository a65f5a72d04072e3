"""`EncodedSupport`: a support set after the network has seen it: pooled prototypes, the label
values they stand for, and the number of support slices.

`fewshotseg.inference.SupportQueryPredictor` makes and consumes these; `fewshotseg.volume`
batches them (one support set per query slice, several shots pooled together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fewshotseg.models.alp import Prototypes

__all__ = ["EncodedSupport"]


@dataclass
class EncodedSupport:
    """An encoded support set: pooled prototypes plus the label values they stand for.

    Attributes:
        prototypes: `Prototypes` of batch 1 on the predictor's device.
        label_values: the support's foreground label values, in class order (channel n + 1 of
            the probabilities is ``label_values[n]``).
        shots: number of support slices.

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet, SupportQueryPredictor
        >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
        >>> mask = np.zeros((40, 40), np.int64); mask[10:30, 10:30] = 3
        >>> support = predictor.encode_support(np.random.rand(40, 40), mask)
        >>> support.label_values, support.shots, support.prototypes.num_classes
        ((3,), 1, 2)
    """

    prototypes: Prototypes
    label_values: tuple[int, ...]
    shots: int

    def select(self, items: Any) -> EncodedSupport:
        """The support sets ``items`` (indices into the batch) of a batched support set, e.g.
        one per query slice for `SupportQueryPredictor.probabilities`.

        Example:
            >>> import torch
            >>> protos = Prototypes(torch.randn(3, 5, 8), torch.ones(3, 2, 5, dtype=torch.bool))
            >>> EncodedSupport(protos, (1,), 1).select([2, 2, 0]).prototypes.features.shape
            torch.Size([3, 5, 8])
        """
        items = torch.as_tensor(items, dtype=torch.long, device=self.prototypes.features.device)
        return EncodedSupport(self.prototypes.select(items), self.label_values, self.shots)

    def combine(self, shots: Any) -> EncodedSupport:
        """K-shot support sets ``(G, K)`` from a batch of 1-shot sets, as if each set's shots
        had been pooled together (`fewshotseg.models.alp.Prototypes.combine`).

        Example:
            >>> import torch
            >>> from fewshotseg import ALPNet, SupportQueryPredictor
            >>> predictor = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8),
            ...                                   image_size=32)
            >>> feats = predictor.encode_slices(torch.rand(3, 32, 32))  # 3 slices, 1 shot each
            >>> masks = torch.zeros(3, 1, 1, 32, 32); masks[..., 8:24, 8:24] = 1
            >>> single = predictor.support_from_features(feats[:, None], masks, (1,))
            >>> pairs = single.combine([[0, 1], [1, 2]])          # two 2-shot sets
            >>> pairs.shots, pairs.prototypes.features.shape[0]
            (2, 2)
        """
        shots = torch.as_tensor(shots, dtype=torch.long, device=self.prototypes.features.device)
        return EncodedSupport(self.prototypes.combine(shots), self.label_values, shots.shape[1])
