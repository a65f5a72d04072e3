"""fewshotseg: few-shot medical image segmentation trained without annotations (SSL-ALPNet).

Superpixel pseudolabels made from unlabeled scans supervise an episodic task; the network
(a backbone plus adaptive local prototype pooling) then segments unseen organs from one or a
few labelled support slices, with no retraining.
"""

from fewshotseg._version import __version__
from fewshotseg.models import ALPNet, AdaptiveLocalPrototypePool, Prototypes
from fewshotseg.training import TrainConfig, TrainHistory, Trainer

__all__ = [
    "ALPNet",
    "AdaptiveLocalPrototypePool",
    "Prototypes",
    "TrainConfig",
    "TrainHistory",
    "Trainer",
    "__version__",
]
