"""A deliberately plain ALP: loops over batch items, classes, shots and cells.

Written straight from the paper's equations and METHOD.md's two documented choices, for the
tests to check the vectorised module against, and for the benchmark's baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_alp(
    support_features: Tensor,
    support_masks: Tensor,
    query_features: Tensor,
    *,
    window: int | tuple[int, int],
    threshold: float = 0.95,
    temperature: float = 20.0,
    local: bool = True,
) -> Tensor:
    """Same contract as `AdaptiveLocalPrototypePool.forward` (masks given at feature size or
    resized bilinearly); empty classes score 0."""
    lh, lw = (window, window) if isinstance(window, int) else window
    b_count, shots, _, h, w = support_features.shape
    ways = support_masks.shape[2]
    out = []
    for b in range(b_count):
        masks = support_masks[b].to(support_features.dtype)
        if tuple(masks.shape[-2:]) != (h, w):
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
        background = (1 - masks.sum(1)).clamp(0, 1)
        query = F.normalize(query_features[b], dim=0, eps=1e-4)
        scores = []
        for cls in range(ways + 1):
            region = background if cls == 0 else masks[:, cls - 1]
            local_protos, class_protos = [], []
            for s in range(shots):
                feats = support_features[b, s]
                if region[s].sum() > 0:
                    weighted = (feats * region[s]).sum((1, 2))
                    class_protos.append(weighted / (region[s].sum() + 1e-5))
                if local and lh <= h and lw <= w:
                    pooled = F.avg_pool2d(feats[None], (lh, lw))[0]
                    fraction = F.avg_pool2d(region[s][None, None], (lh, lw))[0, 0]
                    for i in range(fraction.shape[0]):
                        for j in range(fraction.shape[1]):
                            if fraction[i, j] >= threshold:
                                local_protos.append(pooled[:, i, j])
            if not local:
                protos = [torch.stack(class_protos).mean(0)] if class_protos else []
            elif cls == 0:
                protos = local_protos if local_protos else class_protos
            else:
                protos = local_protos + class_protos
            if not protos:
                scores.append(query.new_zeros(query.shape[1:]))
                continue
            stacked = F.normalize(torch.stack(protos), dim=1, eps=1e-4)
            sims = temperature * torch.einsum("kc,chw->khw", stacked, query)
            scores.append((sims.softmax(0) * sims).sum(0))
        out.append(torch.stack(scores))
    return torch.stack(out)
