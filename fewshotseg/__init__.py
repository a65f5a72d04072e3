"""fewshotseg: few-shot medical image segmentation trained without annotations (SSL-ALPNet).

Superpixel pseudolabels made from unlabeled scans supervise an episodic task; the network
(a backbone plus adaptive local prototype pooling) then segments unseen organs from one or a
few labelled support slices, with no retraining.

Submodules: `fewshotseg.io` (volumes in and out), `fewshotseg.preprocess` (the paper's
recipes), `fewshotseg.datasets` (folder and CHAOS-layout loaders), `fewshotseg.metrics`,
`fewshotseg.evaluation` (few-shot protocols, folds, result tables), `fewshotseg.volume`
(whole-volume segmentation without query labels), `fewshotseg.weights` (the shipped models and
the preprocessing a checkpoint carries) and `fewshotseg.viz` (overlays; needs the ``viz``
extra).
"""

from fewshotseg import datasets, evaluation, io, metrics, precision, preprocess, volume, weights
from fewshotseg._version import __version__
from fewshotseg.ensemble import PredictorEnsemble
from fewshotseg.episodes import (
    AugmentConfig,
    Episode,
    EpisodeBatch,
    EpisodeSampler,
    collate_episodes,
)
from fewshotseg.evaluation import (
    ResultTable,
    cross_validation_folds,
    evaluate_fold,
    evaluate_pair,
)
from fewshotseg.inference import EncodedSupport, SupportQueryPredictor
from fewshotseg.metrics import dice
from fewshotseg.models import AdaptiveLocalPrototypePool, ALPNet, Prototypes
from fewshotseg.superpixels import SuperpixelPseudolabeler
from fewshotseg.training import TrainConfig, Trainer, TrainHistory, TrainingInterrupted

__all__ = [
    "ALPNet",
    "AdaptiveLocalPrototypePool",
    "AugmentConfig",
    "Episode",
    "EncodedSupport",
    "EpisodeBatch",
    "EpisodeSampler",
    "PredictorEnsemble",
    "Prototypes",
    "ResultTable",
    "SuperpixelPseudolabeler",
    "SupportQueryPredictor",
    "TrainConfig",
    "TrainHistory",
    "TrainingInterrupted",
    "Trainer",
    "__version__",
    "collate_episodes",
    "cross_validation_folds",
    "datasets",
    "dice",
    "evaluate_fold",
    "evaluate_pair",
    "evaluation",
    "io",
    "metrics",
    "precision",
    "preprocess",
    "volume",
    "weights",
]


def __getattr__(name: str) -> type:
    if name == "SupportSet":  # renamed in 0.2 (issue 18); the alias goes in the next release
        from fewshotseg import inference

        return inference.SupportSet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
