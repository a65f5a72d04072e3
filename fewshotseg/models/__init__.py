"""Networks: backbones, adaptive local prototype pooling, ALPNet."""

from fewshotseg.models.alp import AdaptiveLocalPrototypePool, Prototypes
from fewshotseg.models.alpnet import ALPNet
from fewshotseg.models.backbones import BACKBONES, FeatureEncoder, build_encoder

__all__ = [
    "ALPNet",
    "AdaptiveLocalPrototypePool",
    "BACKBONES",
    "FeatureEncoder",
    "Prototypes",
    "build_encoder",
]
