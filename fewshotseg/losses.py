"""The paper's training objective: weighted cross-entropy on the query plus the prototype
alignment loss (PANet's PAR), for a batch of episodes.

`fewshotseg.training.Trainer` minimises :func:`episode_loss` (through :class:`LossModule`, so
that DistributedDataParallel sees one forward per step); it is public for custom loops.

Example:
    >>> import torch
    >>> from fewshotseg.models import ALPNet
    >>> _ = torch.manual_seed(0)
    >>> model = ALPNet(backbone="tiny")
    >>> masks = torch.zeros(1, 1, 1, 32, 32); masks[..., 8:24, 8:24] = 1
    >>> labels = torch.zeros(1, 32, 32, dtype=torch.long); labels[:, 8:24, 8:24] = 1
    >>> total, seg, align = episode_loss(model, torch.rand(1, 1, 1, 32, 32), masks,
    ...                                  torch.rand(1, 1, 32, 32), labels)
    >>> bool(total.isfinite()), total.requires_grad
    (True, True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshotseg.models.alpnet import ALPNet

__all__ = ["LossModule", "episode_loss"]


def _one_hot_foreground(labels: Tensor, ways: int) -> Tensor:
    """(B, H, W) labels in 0..N -> (B, N, H, W) float foreground masks."""
    return F.one_hot(labels.clamp(0, ways), ways + 1)[..., 1:].permute(0, 3, 1, 2).float()


def _support_labels(masks: Tensor) -> Tensor:
    """(B, S, N, H, W) one-hot foreground -> (B, S, H, W) labels 0..N (0 where none is set)."""
    background = (masks.sum(2, keepdim=True) <= 0).to(masks.dtype)
    return torch.cat([background, masks], dim=2).argmax(2)


def episode_loss(
    model: ALPNet,
    support_images: Tensor,
    support_masks: Tensor,
    query_images: Tensor,
    query_labels: Tensor,
    *,
    bg_weight: float = 0.05,
    align_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's loss for a batch of episodes: ``(total, segmentation, alignment)``.

    Segmentation: cross-entropy on the query with weights ``bg_weight`` for background and 1
    for each class, ignoring 255, as torch's weighted mean (divided by the summed weights of the
    pixels, as the reference code does; eq. 7 divides by H x W).
    Alignment (PANet): the query with its hard, detached predicted mask as the support segments
    each support image; plain cross-entropy, averaged over shots; a class the query prediction
    misses gets a zero prototype. An episode whose query label has no foreground at all (a
    query slice outside the support's region: it teaches "absent") has no alignment term.

    Args:
        model: the network.
        support_images: ``(B, S, 1, H, W)``.
        support_masks: ``(B, S, N, H, W)`` one-hot foreground.
        query_images: ``(B, 1, H, W)``.
        query_labels: ``(B, H, W)`` long in 0..N, 255 = ignore.
        bg_weight: cross-entropy weight of the background class.
        align_weight: weight of the alignment loss (0 skips it).

    Returns:
        Three float32 scalars: ``total = seg + align_weight * align`` (with gradients) and the
        detached ``seg`` and ``align`` (0 when ``align_weight`` is 0).

    Example:
        >>> _ = torch.manual_seed(0); model = ALPNet(backbone="tiny", feature_dim=8)
        >>> masks = torch.zeros(2, 1, 1, 32, 32); masks[..., 8:24, 8:24] = 1  # B=2, S=1, N=1
        >>> total, seg, align = episode_loss(model, torch.rand(2, 1, 1, 32, 32), masks,
        ...     torch.rand(2, 1, 32, 32), masks[:, 0, 0].long(), align_weight=0.0)
        >>> total.shape, total.dtype, torch.equal(total.detach(), seg), float(align)
        (torch.Size([]), torch.float32, True, 0.0)
    """
    ways = support_masks.shape[2]
    logits, support_feats, query_feats = model.forward_with_features(
        support_images, support_masks, query_images
    )
    weight = torch.ones(ways + 1, device=logits.device)
    weight[0] = bg_weight
    seg = F.cross_entropy(logits.float(), query_labels, weight=weight, ignore_index=255)
    if align_weight <= 0:
        return seg, seg.detach(), torch.zeros_like(seg.detach())

    # PAR assumes the query shows the class: an episode whose query shows none (its slice lies
    # outside the support's region) teaches "absent" through the segmentation loss alone
    absent = ~((query_labels > 0) & (query_labels != 255)).flatten(1).any(1)  # (B,)
    if bool(absent.all()):
        return seg, seg.detach(), torch.zeros_like(seg.detach())
    predicted = _one_hot_foreground(logits.detach().argmax(1), ways)  # (B, N, H, W)
    protos = model.prototypes(
        query_feats[:, None], model.prepare_masks(predicted[:, None]), allow_empty=True
    )
    targets = _support_labels(support_masks).masked_fill(absent[:, None, None, None], 255)
    size = tuple(support_images.shape[-2:])
    shots = support_images.shape[1]
    align = logits.new_zeros((), dtype=torch.float32)
    for s in range(shots):
        shot_logits = model.segment(support_feats[:, s], protos, size)  # type: ignore[arg-type]
        align = align + F.cross_entropy(shot_logits.float(), targets[:, s], ignore_index=255)
    align = align / shots
    return seg + align_weight * align, seg.detach(), align.detach()


class LossModule(nn.Module):
    """Wraps `episode_loss` so DistributedDataParallel sees one forward per step.

    Args:
        model: the network; its parameters are the module's.
        bg_weight, align_weight: as for `episode_loss`.

    Example:
        >>> model = ALPNet(backbone="tiny", feature_dim=8)
        >>> loss = LossModule(model, bg_weight=0.05, align_weight=1.0)
        >>> loss.model is model, len(list(loss.parameters())) == len(list(model.parameters()))
        (True, True)
    """

    def __init__(self, model: ALPNet, *, bg_weight: float, align_weight: float) -> None:
        super().__init__()
        self.model = model
        self.bg_weight = bg_weight
        self.align_weight = align_weight

    def forward(self, *tensors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`episode_loss` of ``(support_images, support_masks, query_images, query_labels)``
        (shapes as there) with this module's weights: ``(total, seg, align)``.

        Example:
            >>> loss = LossModule(ALPNet(backbone="tiny", feature_dim=8), bg_weight=0.05,
            ...                   align_weight=0.5)
            >>> m = torch.zeros(1, 1, 1, 32, 32); m[..., 8:24, 8:24] = 1  # (B, S, N, H, W)
            >>> total, seg, align = loss(torch.rand(1, 1, 1, 32, 32), m, torch.rand(1, 1, 32, 32),
            ...                          m[:, 0, 0].long())
            >>> torch.allclose(total.detach(), seg + 0.5 * align)
            True
        """
        return episode_loss(
            self.model, *tensors, bg_weight=self.bg_weight, align_weight=self.align_weight
        )
