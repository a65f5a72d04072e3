"""fewshotseg: few-shot medical image segmentation trained without annotations (SSL-ALPNet)."""

from fewshotseg._version import __version__

__all__ = ["__version__"]
