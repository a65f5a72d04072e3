"""ALPNet: a feature extractor plus adaptive local prototype pooling (paper section 3.2)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewshotseg.models.alp import AdaptiveLocalPrototypePool, Prototypes
from fewshotseg.models.backbones import (
    OUTPUT_STRIDE,
    FeatureEncoder,
    build_encoder,
    load_backbone_weights,
)

__all__ = ["ALPNet"]

_STD_EPS = 1e-5


def standardize(images: Tensor) -> Tensor:
    """Z-score each image over its channels and pixels: ``(..., C, H, W)`` -> same shape.

    A constant image becomes all zeros. Population std, floored at 1e-5.

    Example:
        >>> standardize(torch.tensor([[[[1.0, 3.0]]]])).tolist()
        [[[[-1.0, 1.0]]]]
        >>> standardize(torch.full((1, 1, 2, 2), 7.0)).abs().max().item()
        0.0
    """
    dims = (-3, -2, -1)
    mean = images.mean(dim=dims, keepdim=True)
    std = images.std(dim=dims, keepdim=True, unbiased=False)
    return (images - mean) / std.clamp_min(_STD_EPS)


def _padding(size: Any) -> tuple[int, int]:
    """Rows and columns of zero padding that make ``size`` a multiple of the output stride."""
    return (-int(size[0])) % OUTPUT_STRIDE, (-int(size[1])) % OUTPUT_STRIDE


class ALPNet(nn.Module):
    """Feature extractor + `AdaptiveLocalPrototypePool` (the paper's ALPNet).

    Args:
        backbone: a name in `fewshotseg.models.backbones.BACKBONES`
            (``"deeplabv3_resnet101"``, the paper's; ``"deeplabv3_resnet50"``; ``"resnet18"``,
            light enough for CPUs; ``"tiny"``, for tests), or any module mapping
            ``(B, 3, H, W)`` to features ``(B, C, H / 8, W / 8)``, used as is (no projection).
        backbone_weights: ``None`` = random init, nothing downloaded; ``"coco"`` = torchvision's
            COCO_WITH_VOC_LABELS_V1 file from the torch hub cache only; or a path to a
            torchvision state dict, an `ALPNet` state dict or a fewshotseg checkpoint.
        feature_dim: channels of the 1 x 1 projection after a named backbone (256 in the paper).
        pool: the prototype pooling module (default: the paper's settings).
        train_window: local pooling window in training mode (4 in the paper).
        test_window: local pooling window in eval mode (2 in the paper).

    Inputs are z-scored per image inside the model, so any intensity units work; a grayscale
    image (C = 1) is repeated to 3 channels. Sizes that are not a multiple of 8 are zero-padded
    (after z-scoring; support masks padded with background) and the logits cropped back.

    Example:
        >>> import torch
        >>> net = ALPNet(backbone="tiny", feature_dim=16).eval()
        >>> sup = torch.randn(1, 1, 1, 64, 64)
        >>> mask = torch.zeros(1, 1, 1, 64, 64); mask[..., 16:48, 16:48] = 1
        >>> net(sup, mask, torch.randn(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(
        self,
        *,
        backbone: str | nn.Module = "deeplabv3_resnet101",
        backbone_weights: str | os.PathLike | None = None,
        feature_dim: int = 256,
        pool: AdaptiveLocalPrototypePool | None = None,
        train_window: int = 4,
        test_window: int = 2,
    ) -> None:
        super().__init__()
        if isinstance(backbone, str):
            self.backbone_name: str | None = backbone
            self.encoder: nn.Module = build_encoder(backbone, feature_dim=feature_dim)
        elif isinstance(backbone, nn.Module):
            self.backbone_name = None
            self.encoder = backbone
        else:
            raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone)}")
        if backbone_weights is not None:
            if not isinstance(self.encoder, FeatureEncoder):
                raise ValueError(
                    "backbone_weights needs a named backbone; load a custom one yourself"
                )
            load_backbone_weights(self.encoder, backbone_weights, backbone_name=self.backbone_name)
        self.feature_dim = feature_dim
        self.pool = pool if pool is not None else AdaptiveLocalPrototypePool()
        self.train_window = int(train_window)
        self.test_window = int(test_window)

    @property
    def model_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model (for checkpoints); plain Python values.

        Example:
            >>> ALPNet(backbone="tiny", feature_dim=16).model_config["feature_dim"]
            16
        """
        return {
            "backbone": self.backbone_name,
            "feature_dim": self.feature_dim,
            "train_window": self.train_window,
            "test_window": self.test_window,
            "threshold": self.pool.threshold,
            "temperature": self.pool.temperature,
            "local": self.pool.local,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ALPNet:
        """Rebuild an (untrained) model from `model_config`.

        Raises:
            ValueError: the config names no backbone (the model used a custom module).

        Example:
            >>> config = ALPNet(backbone="tiny", feature_dim=16, test_window=1).model_config
            >>> ALPNet.from_config(config).model_config == config
            True
        """
        if config.get("backbone") is None:
            raise ValueError("this model used a custom backbone module: build it yourself")
        pool = AdaptiveLocalPrototypePool(
            threshold=config.get("threshold", 0.95),
            temperature=config.get("temperature", 20.0),
            local=config.get("local", True),
        )
        return cls(
            backbone=config["backbone"],
            feature_dim=config.get("feature_dim", 256),
            pool=pool,
            train_window=config.get("train_window", 4),
            test_window=config.get("test_window", 2),
        )

    @property
    def window(self) -> int:
        """The local pooling window for the current mode.

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16)
            >>> net.train().window, net.eval().window
            (4, 2)
        """
        return self.train_window if self.training else self.test_window

    # -------------------------------------------------------------- building blocks
    def encode(self, images: Tensor) -> Tensor:
        """Features of an image batch: ``(B, C, H, W)``, C in {1, 3} -> ``(B, F, h, w)``.

        Each image is z-scored, zero-padded to a multiple of 8 and repeated to 3 channels;
        ``(h, w) = (ceil(H / 8), ceil(W / 8))``, ``F = feature_dim``; float, any units.

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16).eval()
            >>> net.encode(torch.randn(2, 1, 60, 64)).shape
            torch.Size([2, 16, 8, 8])
        """
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
        x = standardize(images)
        pad_h, pad_w = _padding(images.shape[-2:])
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.encoder(x)

    def prototypes(
        self, support_features: Tensor, support_masks: Tensor, **kwargs: Any
    ) -> Prototypes:
        """Pool support features ``(B, S, F, h, w)`` with masks ``(B, S, N, H, W)`` at the
        current mode's window (`AdaptiveLocalPrototypePool.prototypes`; ``kwargs`` go there).

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16).eval()
            >>> mask = torch.zeros(1, 1, 1, 64, 64); mask[..., :32, :32] = 1
            >>> feats = net.encode(torch.randn(1, 1, 64, 64))[None]  # (B, S, F, h, w)
            >>> p = net.prototypes(feats, mask)
            >>> p.num_classes, p.features.shape[-1]
            (2, 16)
        """
        return self.pool.prototypes(
            support_features, support_masks, window_size=self.window, **kwargs
        )

    def prepare_masks(self, masks: Tensor) -> Tensor:
        """Pad support masks ``(..., H, W)`` with background like `encode` pads images.

        Returns:
            ``(..., H + pad_h, W + pad_w)`` float masks (integer or bool masks are converted
            to float32), padded to a multiple of 8 with zeros.

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16)
            >>> m = net.prepare_masks(torch.ones(1, 1, 1, 60, 62, dtype=torch.bool))
            >>> tuple(m.shape), m.dtype, m.sum().item() == 60 * 62
            ((1, 1, 1, 64, 64), torch.float32, True)
        """
        pad_h, pad_w = _padding(masks.shape[-2:])
        if not masks.is_floating_point():
            masks = masks.float()
        return F.pad(masks, (0, pad_w, 0, pad_h)) if pad_h or pad_w else masks

    def segment(
        self, query_features: Tensor, prototypes: Prototypes, size: tuple[int, int]
    ) -> Tensor:
        """Logits ``(B, N + 1, *size)`` for query features of images of ``size``: upsampled
        bilinearly to the padded size, then cropped.

        Args:
            query_features: ``(B, F, h, w)`` from `encode` (images of ``size``).
            prototypes: from `prototypes`, with batch ``B`` (see `Prototypes.expand`).
            size: ``(H, W)`` of the query images, before padding.

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16).eval()
            >>> mask = torch.zeros(1, 1, 1, 60, 60); mask[..., :30, :30] = 1
            >>> feats = net.encode(torch.randn(2, 1, 60, 60))
            >>> p = net.prototypes(feats[:1, None], net.prepare_masks(mask))
            >>> net.segment(feats[1:], p, (60, 60)).shape
            torch.Size([1, 2, 60, 60])
        """
        logits = self.pool.classify(query_features, prototypes)
        h, w = size
        pad_h, pad_w = _padding(size)
        logits = F.interpolate(
            logits, size=(h + pad_h, w + pad_w), mode="bilinear", align_corners=False
        )
        return logits[..., :h, :w]

    # ----------------------------------------------------------------- forward
    def forward(
        self, support_images: Tensor, support_masks: Tensor, query_images: Tensor
    ) -> Tensor:
        """Segment queries given a labelled support set.

        Args:
            support_images: ``(B, S, C, H, W)``, C in {1, 3}.
            support_masks: ``(B, S, N, H, W)`` one-hot foreground in [0, 1].
            query_images: ``(B, C, H, W)``.

        Returns:
            ``(B, N + 1, H, W)`` float logits at input resolution (channel 0 background);
            ``argmax(1)`` is the label map in ``0..N``.

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16).eval()
            >>> masks = torch.zeros(1, 2, 2, 40, 40)  # 2 shots, 2 classes
            >>> masks[:, :, 0, :20], masks[:, :, 1, 20:] = 1, 1
            >>> with torch.no_grad():
            ...     logits = net(torch.randn(1, 2, 1, 40, 40), masks, torch.randn(1, 1, 40, 40))
            >>> tuple(logits.shape), logits.dtype
            ((1, 3, 40, 40), torch.float32)
        """
        return self.forward_with_features(support_images, support_masks, query_images)[0]

    def forward_with_features(
        self, support_images: Tensor, support_masks: Tensor, query_images: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`forward`, also returning support ``(B, S, F, h, w)`` and query ``(B, F, h, w)``
        features (padded size) for losses that reuse them (the alignment loss).

        Example:
            >>> net = ALPNet(backbone="tiny", feature_dim=16)
            >>> mask = torch.zeros(2, 1, 1, 60, 60); mask[..., :30, :30] = 1
            >>> out = net.forward_with_features(torch.randn(2, 1, 1, 60, 60), mask,
            ...                                 torch.randn(2, 1, 60, 60))
            >>> [tuple(t.shape) for t in out]
            [(2, 2, 60, 60), (2, 1, 16, 8, 8), (2, 16, 8, 8)]
        """
        self._check_inputs(support_images, support_masks, query_images)
        b, s, c, h, w = support_images.shape
        images = torch.cat([support_images.reshape(b * s, c, h, w), query_images], dim=0)
        feats = self.encode(images)  # one backbone call for supports and queries together
        support_feats = feats[: b * s].reshape(b, s, *feats.shape[1:])
        query_feats = feats[b * s :]
        protos = self.prototypes(support_feats, self.prepare_masks(support_masks))
        return self.segment(query_feats, protos, (h, w)), support_feats, query_feats

    @staticmethod
    def _check_inputs(support_images: Tensor, support_masks: Tensor, query_images: Tensor) -> None:
        if support_images.ndim != 5:
            raise ValueError(
                f"support_images must be (B, S, C, H, W), got shape {tuple(support_images.shape)}"
            )
        if query_images.ndim != 4:
            raise ValueError(
                f"query_images must be (B, C, H, W), got shape {tuple(query_images.shape)}"
            )
        b, s, c, h, w = support_images.shape
        if c not in (1, 3) or query_images.shape[1] != c:
            raise ValueError(
                f"images need 1 or 3 channels, the same for support and query; got support C={c}, "
                f"query C={query_images.shape[1]}"
            )
        if query_images.shape[0] != b or tuple(query_images.shape[-2:]) != (h, w):
            raise ValueError(
                f"query_images {tuple(query_images.shape)} must have batch {b} and size {(h, w)} "
                "like the support images"
            )
        if (
            support_masks.ndim != 5
            or support_masks.shape[:2] != (b, s)
            or tuple(support_masks.shape[-2:]) != (h, w)
        ):
            raise ValueError(
                f"support_masks must be (B={b}, S={s}, N, H={h}, W={w}), got "
                f"{tuple(support_masks.shape)}"
            )
