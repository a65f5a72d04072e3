"""Adaptive local prototype pooling (ALP) and the similarity classifier: paper eqs. 1-6.

All prototypes of a support set, local cells and class-level averages alike, go into one
candidate tensor ``(B, K, C)``; a boolean matrix ``(B, N + 1, K)`` says which candidate belongs to
which class. The fusion of eq. 5 then becomes a masked softmax over K, vectorised over the batch,
the classes and the prototypes, with no Python loop per item.

Where the paper and the reference code differ we follow the code (see docs/concepts.md):

* background prototypes are the local cells whose pooled *background* fraction is >= the
  threshold (eq. 2 would take every cell below the foreground threshold); there is no
  class-level background prototype unless no cell qualifies, then the masked average of the
  background of each shot is used;
* foreground prototypes are the qualifying local cells at the window in use plus the class-level
  prototype of every shot that contains the class (the code drops local prototypes at test time
  when no 4 x 4 cell passes; we keep the paper's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AdaptiveLocalPrototypePool", "Prototypes"]

_NORM_EPS = 1e-4  # the reference's safe_norm floor on the L2 norm


@dataclass
class Prototypes:
    """A pooled support set, ready to classify any number of query feature maps.

    Attributes:
        features: ``(B, K, C)`` L2-normalised candidate prototypes (local cells of every shot,
            then the class-level prototypes).
        members: ``(B, N + 1, K)`` bool; ``members[b, c, k]`` says prototype ``k`` belongs to
            class ``c`` (0 = background). A class with no member scores 0 everywhere (a zero
            prototype, as the reference's guarded masked average gives).
        background_average: ``(B, K)`` bool or None; marks the background's class-level
            (masked average) candidates, which count only when no shot has a local background
            cell. Set by `AdaptiveLocalPrototypePool.prototypes`; `combine` needs it.

    Example:
        >>> p = Prototypes(torch.randn(1, 5, 8), torch.ones(1, 3, 5, dtype=torch.bool))
        >>> p.num_classes, tuple(p.features.shape)
        (3, (1, 5, 8))
    """

    features: Tensor
    members: Tensor
    background_average: Tensor | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes including background (``N + 1``)."""
        return self.members.shape[1]

    def expand(self, batch: int) -> Prototypes:
        """Repeat a pooled support set of batch 1 for ``batch`` query items (no copy).

        Returns:
            `Prototypes` with ``features`` ``(batch, K, C)`` and ``members``
            ``(batch, N + 1, K)``, views of this one's.

        Example:
            >>> p = Prototypes(torch.randn(1, 5, 8), torch.ones(1, 3, 5, dtype=torch.bool))
            >>> tuple(p.expand(4).features.shape), tuple(p.expand(4).members.shape)
            ((4, 5, 8), (4, 3, 5))
        """
        if self.features.shape[0] != 1:
            raise ValueError(f"expand() needs prototypes of batch 1, got {self.features.shape[0]}")
        average = self.background_average
        return Prototypes(
            self.features.expand(batch, -1, -1),
            self.members.expand(batch, -1, -1),
            None if average is None else average.expand(batch, -1),
        )

    def select(self, items: Tensor) -> Prototypes:
        """Items ``items`` (a 1-D long tensor of batch indices) of a batch of support sets.

        Example:
            >>> p = Prototypes(torch.randn(2, 5, 8), torch.ones(2, 3, 5, dtype=torch.bool))
            >>> p.select(torch.tensor([1, 1, 0])).members.shape
            torch.Size([3, 3, 5])
        """
        average = self.background_average
        return Prototypes(
            self.features[items], self.members[items], None if average is None else average[items]
        )

    def combine(self, shots: Tensor) -> Prototypes:
        """S-shot support sets from 1-shot ones, equal to pooling each set's shots together.

        Pooling a slice once and combining it into every set it belongs to is cheaper than
        pooling each set (the whole-volume pipeline reuses a slice in up to 3 sets). Candidates
        are concatenated shot by shot; the one rule that spans shots is applied again: the
        background's masked averages count only when no shot has a local background cell.

        Args:
            shots: ``(G, S)`` long indices into this batch of 1-shot sets.

        Returns:
            `Prototypes` of batch G with ``S K`` candidates.

        Example:
            >>> pool = AdaptiveLocalPrototypePool(window_size=2)
            >>> feats = torch.randn(3, 1, 8, 4, 4)
            >>> masks = torch.zeros(3, 1, 1, 4, 4); masks[..., :2, :2] = 1
            >>> single = pool.prototypes(feats, masks)           # 3 one-shot sets
            >>> pair = single.combine(torch.tensor([[0, 2]]))   # shots 0 and 2 together
            >>> query = torch.randn(1, 8, 4, 4)
            >>> both = [0, 2]
            >>> joint = pool.prototypes(feats[both].transpose(0, 1), masks[both].transpose(0, 1))
            >>> torch.allclose(pool.classify(query, pair), pool.classify(query, joint), atol=1e-5)
            True
        """
        if self.background_average is None:
            raise ValueError("combine() needs prototypes pooled with local prototypes")
        if shots.ndim != 2:
            raise ValueError(f"shots must be (G, S) indices, got shape {tuple(shots.shape)}")
        g, s = shots.shape
        k = self.features.shape[1]
        members = self.members[shots]  # (G, S, N + 1, K)
        average = self.background_average[shots]  # (G, S, K)
        local_background = (members[:, :, 0] & ~average).flatten(1).any(1)  # (G,)
        background = members[:, :, 0] & ~(average & local_background[:, None, None])
        members = torch.cat([background[:, :, None], members[:, :, 1:]], dim=2)
        return Prototypes(
            self.features[shots].reshape(g, s * k, -1),
            members.permute(0, 2, 1, 3).reshape(g, -1, s * k),
            average.reshape(g, s * k),
        )


def _pair(window: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(window, int):
        window = (window, window)
    window = tuple(int(w) for w in window)
    if len(window) != 2 or min(window) < 1:
        raise ValueError(f"window_size must be a positive int or a pair of them, got {window}")
    return window  # type: ignore[return-value]


class AdaptiveLocalPrototypePool(nn.Module):
    """Adaptive local prototype pooling and similarity classification (no parameters).

    Args:
        window_size: local pooling window ``L`` (or ``(L_H, L_W)``) on the feature map; the
            paper uses 4 in training and 2 at test time (`ALPNet` overrides it per mode).
        threshold: ``T`` of eq. 2: a cell is a local prototype of a class when its pooled
            fraction of that class is >= T.
        temperature: ``alpha`` of eq. 4, the multiplier on the cosine similarity.
        local: ``False`` gives the PANet baseline: one class-level prototype per class
            (background included), averaged over the shots that contain the class.

    Shapes:
        support_features ``(B, S, C, h, w)``; support_masks ``(B, S, N, H', W')`` one-hot
        foreground in [0, 1] (resized bilinearly to ``(h, w)`` when needed); query_features
        ``(B, C, hq, wq)``; output ``(B, N + 1, hq, wq)`` logits, channel 0 background: the fused
        similarities ``S'(c)`` of eq. 5 (their softmax over channels is eq. 6).

    Example:
        >>> import torch
        >>> pool = AdaptiveLocalPrototypePool(window_size=2)
        >>> feats = torch.randn(1, 1, 8, 4, 4)
        >>> mask = torch.zeros(1, 1, 1, 4, 4); mask[..., :2, :2] = 1
        >>> pool(feats, mask, torch.randn(1, 8, 4, 4)).shape
        torch.Size([1, 2, 4, 4])
    """

    def __init__(
        self,
        *,
        window_size: int | tuple[int, int] = 4,
        threshold: float = 0.95,
        temperature: float = 20.0,
        local: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.window_size = _pair(window_size)
        self.threshold = float(threshold)
        self.temperature = float(temperature)
        self.local = bool(local)

    def extra_repr(self) -> str:
        return (
            f"window_size={self.window_size}, threshold={self.threshold}, "
            f"temperature={self.temperature}, local={self.local}"
        )

    def forward(
        self,
        support_features: Tensor,
        support_masks: Tensor,
        query_features: Tensor,
        *,
        window_size: int | tuple[int, int] | None = None,
        allow_empty: bool = False,
    ) -> Tensor:
        """Pool the support set and classify the query (`prototypes`, then `classify`).

        Args:
            support_features: ``(B, S, C, h, w)`` float.
            support_masks: ``(B, S, N, H', W')`` one-hot foreground masks in [0, 1].
            query_features: ``(B, C, hq, wq)`` float.
            window_size: overrides the module's window for this call.
            allow_empty: as in `prototypes`.

        Returns:
            ``(B, N + 1, hq, wq)`` logits (float32 at least), channel 0 background; each is a
            fused cosine similarity times the temperature, so in ``[-temperature, temperature]``.

        Example:
            >>> pool = AdaptiveLocalPrototypePool(window_size=2, temperature=20.0)
            >>> mask = torch.zeros(2, 3, 1, 4, 4); mask[..., :2, :2] = 1
            >>> out = pool(torch.randn(2, 3, 8, 4, 4), mask, torch.randn(2, 8, 6, 6))
            >>> tuple(out.shape), out.dtype, bool(out.abs().max() <= 20.0)
            ((2, 2, 6, 6), torch.float32, True)
        """
        protos = self.prototypes(
            support_features, support_masks, window_size=window_size, allow_empty=allow_empty
        )
        return self.classify(query_features, protos)

    # ------------------------------------------------------------------ pooling
    def prototypes(
        self,
        support_features: Tensor,
        support_masks: Tensor,
        *,
        window_size: int | tuple[int, int] | None = None,
        allow_empty: bool = False,
    ) -> Prototypes:
        """Pool a support set into prototypes once, for any number of queries.

        Args:
            support_features: ``(B, S, C, h, w)`` float.
            support_masks: ``(B, S, N, H', W')`` one-hot foreground masks in [0, 1].
            window_size: overrides the module's window for this call.
            allow_empty: give a class with no pixel in any shot a zero prototype (similarity 0)
                instead of raising; the alignment loss needs this.

        Returns:
            `Prototypes` with ``B`` items and ``N + 1`` classes.

        Raises:
            ValueError: on wrong shapes, or a foreground class with no pixel in any shot of
                a batch item (unless ``allow_empty``).

        Example:
            >>> pool = AdaptiveLocalPrototypePool(window_size=2)
            >>> mask = torch.zeros(1, 1, 1, 4, 4); mask[..., :2, :2] = 1  # one 2 x 2 cell
            >>> p = pool.prototypes(torch.randn(1, 1, 8, 4, 4), mask)
            >>> tuple(p.features.shape), p.members.sum(-1).tolist()  # 3 bg cells; 1 fg + class
            ((1, 5, 8), [[3, 2]])
        """
        feats, masks = self._check_support(support_features, support_masks)
        b, s, c, h, w = feats.shape
        n = masks.shape[2]
        present = masks.flatten(3).sum(-1) > 0  # (B, S, N), at the masks' own resolution
        if not allow_empty:
            missing = ~present.any(dim=1)  # (B, N)
            if missing.any():
                item, cls = (int(i) for i in missing.nonzero()[0])
                raise ValueError(
                    f"support masks of batch item {item} have no pixel of foreground class "
                    f"{cls + 1} (way index {cls}) in any shot; give every class at least one "
                    "labelled pixel, or drop the class"
                )
        fg = self._resize_masks(masks, (h, w), present)  # (B, S, N, h, w)
        bg = (1.0 - fg.sum(2, keepdim=True)).clamp(0.0, 1.0)  # (B, S, 1, h, w)
        cls_masks = torch.cat([bg, fg], dim=2)  # (B, S, N + 1, h, w)

        # Class-level prototypes (eq. 3): masked average per shot and class.
        area = cls_masks.flatten(3).sum(-1)  # (B, S, N + 1)
        summed = torch.einsum("bskhw,bschw->bskc", cls_masks, feats)
        class_protos = summed / (area[..., None] + 1e-5)  # the reference's guard
        shot_has = torch.cat([area[:, :, :1] > 0, present], dim=2)  # (B, S, N + 1)

        if not self.local:
            return self._panet_prototypes(class_protos, shot_has)

        lh, lw = _pair(window_size) if window_size is not None else self.window_size
        if lh <= h and lw <= w:
            flat = feats.reshape(b * s, c, h, w)
            cells = F.avg_pool2d(flat, (lh, lw), stride=(lh, lw))  # eq. 1, floor at edges
            gh, gw = cells.shape[-2:]
            cells = cells.reshape(b, s, c, gh * gw).permute(0, 1, 3, 2).reshape(b, -1, c)
            fractions = F.avg_pool2d(cls_masks.reshape(b * s, n + 1, h, w), (lh, lw))
            fractions = fractions.reshape(b, s, n + 1, gh * gw)
            local_members = (fractions >= self.threshold).permute(0, 2, 1, 3).reshape(b, n + 1, -1)
        else:  # window larger than the map: no local cell, class-level prototypes only
            cells = feats.new_zeros(b, 0, c)
            local_members = torch.zeros(b, n + 1, 0, dtype=torch.bool, device=feats.device)

        # Class-level members: every foreground class of every shot that contains it; the
        # background's masked average only when no background cell qualifies.
        class_members = shot_has.clone()  # (B, S, N + 1)
        bg_has_local = local_members[:, 0].any(-1)  # (B,)
        class_members[:, :, 0] &= ~bg_has_local[:, None]
        # members over class-level candidates: candidate (s, k) belongs to class k only.
        eye = torch.eye(n + 1, dtype=torch.bool, device=feats.device)
        class_members = (class_members[:, :, :, None] & eye).permute(0, 3, 1, 2)
        class_members = class_members.reshape(b, n + 1, s * (n + 1))

        features = torch.cat([cells, class_protos.reshape(b, s * (n + 1), c)], dim=1)
        members = torch.cat([local_members, class_members], dim=2)
        average = torch.zeros(s, n + 1, dtype=torch.bool, device=feats.device)
        average[:, 0] = True  # which class-level candidates are the background's
        average = torch.cat([average.new_zeros(cells.shape[1]), average.flatten()])
        # Candidates that no class uses in any item (mixed boundary cells, absent classes)
        # would only cost similarity computations: drop them.
        used = members.any(1).any(0)
        if not used.all():
            features, members, average = features[:, used], members[:, :, used], average[used]
        normalised = F.normalize(features, dim=-1, eps=_NORM_EPS)
        return Prototypes(normalised, members, average.expand(b, -1))

    def _panet_prototypes(self, class_protos: Tensor, shot_has: Tensor) -> Prototypes:
        b, s, k, c = class_protos.shape
        weight = shot_has.to(class_protos.dtype)[..., None]  # (B, S, N + 1, 1)
        mean = (class_protos * weight).sum(1) / weight.sum(1).clamp_min(1.0)  # (B, N + 1, C)
        members = torch.eye(k, dtype=torch.bool, device=class_protos.device).expand(b, k, k)
        members = members & shot_has.any(1)[:, :, None]
        return Prototypes(F.normalize(mean, dim=-1, eps=_NORM_EPS), members)

    # ------------------------------------------------------------ classification
    def classify(self, query_features: Tensor, prototypes: Prototypes) -> Tensor:
        """Similarities to every prototype (eq. 4), fused per class (eq. 5).

        Args:
            query_features: ``(B, C, hq, wq)``; ``B`` must equal the prototypes' batch (use
                `Prototypes.expand` to share one support set across a batch of queries).
            prototypes: from `prototypes`.

        Returns:
            ``(B, N + 1, hq, wq)`` fused logits ``S'(c)``; a class without prototypes gets 0.

        Example:
            >>> pool = AdaptiveLocalPrototypePool(window_size=2)
            >>> mask = torch.zeros(1, 1, 1, 4, 4); mask[..., :2, :2] = 1
            >>> protos = pool.prototypes(torch.randn(1, 1, 8, 4, 4), mask)
            >>> pool.classify(torch.randn(3, 8, 6, 6), protos.expand(3)).shape
            torch.Size([3, 2, 6, 6])
        """
        if query_features.ndim != 4:
            raise ValueError(
                f"query_features must be (B, C, h, w), got shape {tuple(query_features.shape)}"
            )
        b, c, hq, wq = query_features.shape
        protos, members = prototypes.features, prototypes.members
        if protos.shape[0] != b or protos.shape[2] != c:
            raise ValueError(
                f"query features (B={b}, C={c}) do not match prototypes "
                f"(B={protos.shape[0]}, C={protos.shape[2]})"
            )
        # The fusion runs in float32 at least: exp(-2 * temperature) underflows in fp16.
        dtype = torch.promote_types(query_features.dtype, torch.float32)
        query = query_features.to(dtype).flatten(2)  # (B, C, Q)
        # Cosine = dot product / |q|: dividing the (K, Q) products is cheaper than normalising
        # the (C, Q) query; the clamp is F.normalize's eps.
        norms = query.square().sum(1, keepdim=True).sqrt().clamp_min(_NORM_EPS)
        sims = torch.bmm(protos.to(dtype), query) * (self.temperature / norms)
        if sims.shape[1] == 0:
            return sims.new_zeros(b, members.shape[1], hq, wq)
        # Masked softmax-weighted sum over each class's prototypes (eq. 5). Cosines are bounded
        # by 1, so shifting by the temperature keeps exp() in (e^-2T, 1] for every class at once.
        weights = torch.exp(sims - self.temperature)
        member_w = members.to(dtype)
        numerator = torch.bmm(member_w, weights * sims)  # (B, N + 1, Q)
        denominator = torch.bmm(member_w, weights)
        has = members.any(-1, keepdim=True)  # (B, N + 1, 1)
        fused = torch.where(has, numerator / denominator.clamp_min(1e-30), 0.0)
        return fused.reshape(b, -1, hq, wq)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_support(features: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        if features.ndim != 5:
            raise ValueError(
                f"support_features must be (B, S, C, h, w), got shape {tuple(features.shape)}"
            )
        if masks.ndim != 5:
            raise ValueError(
                f"support_masks must be (B, S, N, H, W) one-hot foreground, got shape "
                f"{tuple(masks.shape)}"
            )
        if masks.shape[:2] != features.shape[:2]:
            raise ValueError(
                f"support_masks batch/shots {tuple(masks.shape[:2])} do not match "
                f"support_features {tuple(features.shape[:2])}"
            )
        if masks.shape[2] < 1:
            raise ValueError("support_masks need at least one foreground class (N >= 1)")
        if not masks.is_floating_point():
            masks = masks.to(features.dtype)
        return features, masks.to(features.dtype)

    @staticmethod
    def _resize_masks(masks: Tensor, size: tuple[int, int], present: Tensor) -> Tensor:
        if tuple(masks.shape[-2:]) == size:
            return masks
        b, s, n = masks.shape[:3]
        flat = masks.reshape(b * s * n, 1, *masks.shape[-2:])
        resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        resized = resized.reshape(b, s, n, *size)
        # Bilinear sampling can miss a structure smaller than the stride entirely; such a
        # class falls back to area averaging so that it keeps a (small) prototype.
        lost = present & (resized.flatten(3).sum(-1) <= 0)
        if lost.any():
            area = F.adaptive_avg_pool2d(flat, size).reshape(b, s, n, *size)
            resized = torch.where(lost[..., None, None], area, resized)
        return resized
