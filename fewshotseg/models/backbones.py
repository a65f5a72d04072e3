"""Feature extractors: image batches ``(B, 3, H, W)`` to features ``(B, C, H / 8, W / 8)``.

Backbones are built by name from the plain dict `BACKBONES`. Every builder makes a random
initialisation with no download at all (torchvision's ``weights_backbone`` default would fetch
ImageNet weights; we pass ``None``). Pretrained weights come only from local files, see
`load_backbone_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "BACKBONES",
    "FeatureEncoder",
    "build_encoder",
    "coco_weights_path",
    "load_backbone_weights",
]

OUTPUT_STRIDE = 8


class FeatureEncoder(nn.Module):
    """A backbone followed by a bias-free 1 x 1 projection to ``feature_dim`` channels.

    Args:
        backbone: module mapping ``(B, 3, H, W)`` to ``(B, in_channels, H / 8, W / 8)``.
        in_channels: the backbone's output channels.
        feature_dim: output channels (256 in the paper).

    Example:
        >>> enc = FeatureEncoder(nn.Conv2d(3, 32, 8, stride=8), in_channels=32, feature_dim=16)
        >>> enc(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(self, backbone: nn.Module, *, in_channels: int, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = nn.Conv2d(in_channels, feature_dim, kernel_size=1, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        """Features ``(B, feature_dim, H / 8, W / 8)`` of a float ``(B, 3, H, W)`` batch.

        Example:
            >>> enc = build_encoder("tiny", feature_dim=16)
            >>> enc(torch.randn(2, 3, 32, 48)).shape
            torch.Size([2, 16, 4, 6])
        """
        out = self.backbone(images)
        if isinstance(out, dict):  # torchvision IntermediateLayerGetter
            out = out["out"]
        return self.projection(out)


def _deeplab_backbone(depth: int) -> tuple[nn.Module, int]:
    from torchvision.models import segmentation

    builder = {50: segmentation.deeplabv3_resnet50, 101: segmentation.deeplabv3_resnet101}[depth]
    # weights_backbone=None: a true random init (the default would download ImageNet weights).
    model = builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    return model.backbone, 2048  # output stride 8 (layers 3-4 dilated); ASPP head unused


def _resnet18_backbone() -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    # Output stride 8 for a CPU-friendly encoder: conv1..layer3 with layer3 at stride 1 and
    # dilation 2 (torchvision's BasicBlock refuses dilation, so the convs are edited here).
    first = net.layer3[0]
    first.conv1.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    for block in net.layer3:
        for conv in (block.conv1, block.conv2):
            if conv is first.conv1:
                continue  # the first conv keeps dilation 1, as torchvision does for Bottleneck
            conv.dilation, conv.padding = (2, 2), (2, 2)
    body = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3
    )
    return _Named(body, ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]), 256


class _Named(nn.Module):
    """A sequence of named children, so state-dict keys match torchvision's ResNet keys."""

    def __init__(self, seq: nn.Sequential, names: list[str]) -> None:
        super().__init__()
        for name, module in zip(names, seq, strict=True):
            self.add_module(name, module)

    def forward(self, x: Tensor) -> Tensor:
        for module in self.children():
            x = module(x)
        return x


def _tiny_backbone() -> tuple[nn.Module, int]:
    """A few-thousand-parameter stride-8 CNN for tests and doctests (not for real use)."""

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    layers = block(3, 8, 2) + block(8, 16, 2) + block(16, 32, 2) + block(32, 32, 1)
    return nn.Sequential(*layers), 32


BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {
    "deeplabv3_resnet101": lambda: _deeplab_backbone(101),
    "deeplabv3_resnet50": lambda: _deeplab_backbone(50),
    "resnet18": _resnet18_backbone,
    "tiny": _tiny_backbone,
}
"""Backbone builders by name: each returns ``(module, output_channels)``, randomly initialised."""

_COCO_WEIGHTS = {
    "deeplabv3_resnet101": "DeepLabV3_ResNet101_Weights",
    "deeplabv3_resnet50": "DeepLabV3_ResNet50_Weights",
}


def build_encoder(name: str, *, feature_dim: int = 256) -> FeatureEncoder:
    """Build a randomly initialised `FeatureEncoder` from a backbone name in `BACKBONES`.

    Raises:
        ValueError: an unknown name (the message lists the known ones) or ``feature_dim < 1``.

    Example:
        >>> build_encoder("tiny", feature_dim=16).projection.out_channels
        16
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    if feature_dim < 1:
        raise ValueError(f"feature_dim must be positive, got {feature_dim}")
    backbone, channels = BACKBONES[name]()
    return FeatureEncoder(backbone, in_channels=channels, feature_dim=feature_dim)


def coco_weights_path(name: str) -> Path:
    """Where torchvision's cache keeps the COCO_WITH_VOC_LABELS_V1 weights of a backbone.

    Only a path: nothing is checked or downloaded. ``name`` is a DeepLabV3 backbone.

    Example:
        >>> path = coco_weights_path("deeplabv3_resnet101")
        >>> path.parent.name, path.suffix
        ('checkpoints', '.pth')
    """
    if name not in _COCO_WEIGHTS:
        raise ValueError(
            f"no COCO weights exist for backbone {name!r}; they exist for {sorted(_COCO_WEIGHTS)}"
        )
    from torchvision.models import segmentation

    weights = getattr(segmentation, _COCO_WEIGHTS[name]).COCO_WITH_VOC_LABELS_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def load_backbone_weights(
    encoder: FeatureEncoder, source: str | os.PathLike, *, backbone_name: str | None
) -> None:
    """Load local weights into ``encoder`` in place; nothing is ever downloaded.

    Args:
        encoder: the encoder to fill.
        source: ``"coco"`` for torchvision's ``COCO_WITH_VOC_LABELS_V1`` file, read from the
            torch hub cache (``$TORCH_HOME/hub/checkpoints``) only; or a path to a torchvision
            state dict (a ResNet or a DeepLabV3 model: the backbone is loaded, the projection
            keeps its initialisation), a fewshotseg checkpoint or an `ALPNet` state dict (the
            whole encoder is loaded).
        backbone_name: the encoder's backbone name (needed for ``"coco"``).

    Raises:
        FileNotFoundError: the file is missing (the message names the file and the folder).
        ValueError: the file holds no weights matching the backbone.

    Example:
        >>> import tempfile
        >>> src, dst = build_encoder("tiny", feature_dim=8), build_encoder("tiny", feature_dim=8)
        >>> path = f"{tempfile.mkdtemp()}/alpnet.pt"  # an ALPNet state dict: "encoder." keys
        >>> torch.save({f"encoder.{k}": v for k, v in src.state_dict().items()}, path)
        >>> load_backbone_weights(dst, path, backbone_name="tiny")
        >>> torch.equal(dst.projection.weight, src.projection.weight)
        True
    """
    if str(source) == "coco":
        if backbone_name is None:
            raise ValueError("'coco' weights need a named backbone, not a custom module")
        path = coco_weights_path(backbone_name)
        if not path.is_file():
            raise FileNotFoundError(
                f"COCO weights for {backbone_name!r} not found: expected the file {path.name} in "
                f"{path.parent} (torchvision's hub cache; set TORCH_HOME to move it). fewshotseg "
                "never downloads: copy the file there, or pass backbone_weights=None"
            )
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights file {path.name!r} not found in {path.parent.resolve()}"
            )
    from fewshotseg.checkpoints import read_torch_file

    state = read_torch_file(path, what="backbone weights file")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a fewshotseg checkpoint
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")

    if any(k.startswith("encoder.") for k in state):  # an ALPNet state dict: whole encoder
        sub = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        encoder.load_state_dict(sub)
        return
    prefix = "backbone." if any(k.startswith("backbone.") for k in state) else ""
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    expected = encoder.backbone.state_dict()
    usable = {k: v for k, v in sub.items() if k in expected}
    missing = sorted(set(expected) - set(usable))
    if missing:
        raise ValueError(
            f"{path} does not match backbone {backbone_name or type(encoder.backbone).__name__}: "
            f"{len(missing)} of its tensors are missing (e.g. {missing[:3]})"
        )
    encoder.backbone.load_state_dict(usable)
