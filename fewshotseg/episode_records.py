"""What an episode is, as the model and the trainer consume it: `Episode` (one few-shot task:
S support images with their N foreground masks and a query with its label map), `EpisodeBatch`
(B episodes stacked) and `collate_episodes` (the ``collate_fn`` that stacks them).

`fewshotseg.episodes.EpisodeSampler` makes episodes; these records know nothing of scans,
slices or randomness. Every name is also importable from `fewshotseg.episodes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = ["Episode", "EpisodeBatch", "collate_episodes"]


@dataclass
class Episode:
    """One few-shot episode (S shots, N ways), as the model consumes it.

    Attributes:
        support_images: ``(S, 1, H, W)`` float32.
        support_masks: ``(S, N, H, W)`` float32 one-hot foreground (0 or 1); background is
            wherever no class is set.
        query_image: ``(1, H, W)`` float32.
        query_label: ``(H, W)`` int64 in ``0..N`` (0 background, n = n-th class), 255 = ignore.

    Example:
        >>> m = torch.zeros(2, 3, 8, 8); m[:, 1, 2:6, 2:6] = 1  # class 2 in both shots
        >>> ep = Episode(torch.rand(2, 1, 8, 8), m, torch.rand(1, 8, 8), 2 * m[0, 1].long())
        >>> ep.shots, ep.ways, ep.query_label.unique().tolist()
        (2, 3, [0, 2])
    """

    support_images: Tensor
    support_masks: Tensor
    query_image: Tensor
    query_label: Tensor

    @property
    def shots(self) -> int:
        """S, the number of support images.

        Example:
            >>> z = torch.zeros
            >>> Episode(z(2, 1, 8, 8), z(2, 3, 8, 8), z(1, 8, 8), z(8, 8).long()).shots
            2
        """
        return int(self.support_images.shape[0])

    @property
    def ways(self) -> int:
        """N, the number of foreground classes.

        Example:
            >>> z = torch.zeros
            >>> Episode(z(2, 1, 8, 8), z(2, 3, 8, 8), z(1, 8, 8), z(8, 8).long()).ways
            3
        """
        return int(self.support_masks.shape[1])

    def to(self, device: str | torch.device, *, non_blocking: bool = False) -> Episode:
        """A copy with every tensor on ``device`` (dtypes kept).

        Example:
            >>> z = torch.zeros
            >>> ep = Episode(z(1, 1, 8, 8), z(1, 2, 8, 8), z(1, 8, 8), z(8, 8).long())
            >>> moved = ep.to("cpu"); moved is ep, moved.query_label.device, moved.query_label.dtype
            (False, device(type='cpu'), torch.int64)
        """
        return Episode(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )


@dataclass
class EpisodeBatch:
    """A batch of B episodes with the same S, N, H, W (see :func:`collate_episodes`).

    Attributes:
        support_images: ``(B, S, 1, H, W)`` float32.
        support_masks: ``(B, S, N, H, W)`` float32 one-hot foreground.
        query_images: ``(B, 1, H, W)`` float32.
        query_labels: ``(B, H, W)`` int64 in ``0..N``, 255 = ignore.

    ``len(batch)`` is B.

    Example:
        >>> z = torch.zeros
        >>> batch = EpisodeBatch(z(4, 2, 1, 8, 8), z(4, 2, 3, 8, 8), z(4, 1, 8, 8),
        ...                      z(4, 8, 8).long())  # B=4, S=2, N=3, H=W=8
        >>> len(batch), batch.query_labels.dtype
        (4, torch.int64)
    """

    support_images: Tensor
    support_masks: Tensor
    query_images: Tensor
    query_labels: Tensor

    def __len__(self) -> int:
        return int(self.query_images.shape[0])

    def to(self, device: str | torch.device, *, non_blocking: bool = False) -> EpisodeBatch:
        """A copy with every tensor on ``device`` (dtypes kept).

        Example:
            >>> z = torch.zeros
            >>> ep = Episode(z(1, 1, 8, 8), z(1, 2, 8, 8), z(1, 8, 8), z(8, 8).long())
            >>> batch = collate_episodes([ep, ep]).to("cpu", non_blocking=True)
            >>> batch.support_masks.device, tuple(batch.support_masks.shape)
            (device(type='cpu'), (2, 1, 2, 8, 8))
        """
        return EpisodeBatch(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> EpisodeBatch:
        """Pinned-memory copy (called by ``DataLoader(pin_memory=True)``); needs CUDA.

        Example:
            >>> z = torch.zeros
            >>> ep = Episode(z(1, 1, 8, 8), z(1, 2, 8, 8), z(1, 8, 8), z(8, 8).long())
            >>> batch = collate_episodes([ep])
            >>> not torch.cuda.is_available() or batch.pin_memory().query_images.is_pinned()
            True
        """
        return EpisodeBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def collate_episodes(episodes: Sequence[Episode]) -> EpisodeBatch:
    """Stack episodes into an :class:`EpisodeBatch` (a ``collate_fn`` for ``DataLoader``).

    Args:
        episodes: one or more :class:`Episode` with identical shapes.

    Returns:
        The stacked batch.

    Example:
        >>> z = torch.zeros; ep = Episode(z(2, 1, 8, 8), z(2, 3, 8, 8), z(1, 8, 8), z(8, 8).long())
        >>> batch = collate_episodes([ep, ep]).to("cpu")
        >>> ep.shots, ep.ways, len(batch), tuple(batch.support_masks.shape)
        (2, 3, 2, (2, 2, 3, 8, 8))
    """
    episodes = list(episodes)
    if not episodes:
        raise ValueError("collate_episodes needs at least one episode")
    for i, ep in enumerate(episodes):
        if not isinstance(ep, Episode):
            raise TypeError(f"item {i} is a {type(ep).__name__}, expected an Episode")
    first = episodes[0]
    for i, ep in enumerate(episodes[1:], start=1):
        for f in fields(Episode):
            a, b = getattr(first, f.name), getattr(ep, f.name)
            if a.shape != b.shape:
                raise ValueError(
                    f"episode {i} has {f.name} of shape {tuple(b.shape)} but episode "
                    f"0 has {tuple(a.shape)}; batch only episodes with the same "
                    "shots, ways and image size"
                )
    return EpisodeBatch(
        support_images=torch.stack([e.support_images for e in episodes]),
        support_masks=torch.stack([e.support_masks for e in episodes]),
        query_images=torch.stack([e.query_image for e in episodes]),
        query_labels=torch.stack([e.query_label for e in episodes]),
    )
