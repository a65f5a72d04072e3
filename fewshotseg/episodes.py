"""Few-shot episodes: self-supervised from superpixel pseudolabels, or supervised from labels.

An episode is ``S`` support images with one foreground mask per class (``N`` classes) and one
query image with its label map (see :class:`Episode`). :class:`EpisodeSampler` draws them from
lists of ``(D, H, W)`` volumes:

* ``mode="superpixel"`` (SSL-ALPNet's self-supervision, METHOD.md): a slice that has at least
  ``ways`` superpixels of ``>= min_foreground`` pixels, uniformly; then ``ways`` distinct such
  superpixels of it, uniformly (every id can be drawn). Supports and query are independently
  transformed copies of that slice and its masks.
* ``mode="supervised"``: ``ways`` classes among the training classes, then support slices from
  one scan and the query slice from another (another slice of the same scan when a single scan
  is given); every chosen slice has ``>= min_foreground`` pixels of each of the ``ways`` classes.

Determinism: episode ``i`` is a pure function of ``(seed, rank, i)`` (a
``numpy.random.SeedSequence`` with spawn key ``(rank, i)``), whatever process computes it.
Iterating, :meth:`EpisodeSampler.sample` and the ``DataLoader`` workers only decide which
indices are computed where: with ``num_workers=W`` worker ``w`` computes indices
``start + w, start + w + W, ...`` and the ``DataLoader`` hands them out round-robin, so
``DataLoader(sampler, batch_size=None, num_workers=W)`` yields exactly the same stream
``episode(start), episode(start + 1), ...`` for every ``W``, and workers never repeat each
other. :meth:`EpisodeSampler.batches` gives the same guarantee for batches of episodes.

Example:
    >>> import numpy as np
    >>> from fewshotseg.episodes import EpisodeSampler
    >>> image = np.random.default_rng(0).random((4, 32, 32), dtype=np.float32)
    >>> labels = np.zeros((4, 32, 32), dtype=np.int32)
    >>> labels[:, :16], labels[:, 16:] = 1, 2          # two "superpixels" per slice
    >>> sampler = EpisodeSampler([image], [labels], image_size=32, min_foreground=10, seed=0)
    >>> ep = sampler.sample()
    >>> tuple(ep.support_images.shape), tuple(ep.support_masks.shape), tuple(ep.query_label.shape)
    ((1, 1, 32, 32), (1, 1, 32, 32), (32, 32))
    >>> torch.equal(sampler.episode(0).query_image, ep.query_image)
    True
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from fewshotseg._checks import check_finite, check_real, to_label_map, to_numpy
from fewshotseg.episode_records import Episode, EpisodeBatch, collate_episodes
from fewshotseg.transforms import (
    AugmentConfig,
    TransformParams,
    apply_geometry,
    apply_intensity,
    sample_params,
)

__all__ = [
    "AugmentConfig",
    "Episode",
    "EpisodeBatch",
    "EpisodeBatches",
    "EpisodeInfo",
    "EpisodeSampler",
    "collate_episodes",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
_DEFAULT_AUGMENT = AugmentConfig()
_MAX_COMBINATIONS = 20_000


@dataclass(frozen=True)
class EpisodeInfo:
    """Where episode ``index`` comes from (see :meth:`EpisodeSampler.describe`).

    Attributes:
        index: the episode index.
        support_scan: index (into the sampler's input lists) of the support scan.
        support_slices: slice index (along D) of each of the S supports.
        query_scan: index of the query scan.
        query_slice: slice index of the query.
        classes: the N label values used as classes 1..N: superpixel ids in superpixel mode,
            label values in supervised mode.

    Example:
        >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
        >>> info = EpisodeSampler([x], [x > 0], image_size=16, seed=0).describe(5)
        >>> info.index, info.support_scan, info.query_scan, info.classes, len(info.support_slices)
        (5, 0, 0, (1,), 1)
    """

    index: int
    support_scan: int
    support_slices: tuple[int, ...]
    query_scan: int
    query_slice: int
    classes: tuple[int, ...]


def _volume(x: Any, name: str) -> np.ndarray:
    """A (D, H, W) array (an (H, W) slice gets a leading axis), numpy or torch, not empty."""
    x = to_numpy(x, name)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (D, H, W) (or one (H, W) slice), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    return x


def _resize(images: np.ndarray, labels: np.ndarray, size: tuple[int, int]
            ) -> tuple[Tensor, Tensor]:
    """(D, H, W) image and labels -> float32 / int64 tensors of (D, *size)."""
    img = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    lab = torch.from_numpy(np.ascontiguousarray(labels))
    if tuple(img.shape[1:]) != size:
        img = F.interpolate(img[:, None], size=size, mode="bilinear", align_corners=False,
                            antialias=True)[:, 0]
        lab = F.interpolate(lab[:, None].double(), size=size, mode="nearest-exact")[:, 0].long()
    if int(lab.max()) < 2**31:
        lab = lab.to(torch.int32)
    return img.contiguous(), lab.contiguous()


def _slice_counts(labels: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per (slice, id) of a (D, H, W) label volume, ids > 0 only.

    Returns parallel arrays ``(slice, id, count)`` sorted by slice then id.
    """
    lab = labels.numpy()
    d = lab.shape[0]
    top = int(lab.max())
    flat = lab.reshape(d, -1)
    if d * (top + 1) <= 50_000_000:   # dense bincount: fast and small enough
        key = flat + (np.arange(d, dtype=np.int64)[:, None] * (top + 1))
        counts = np.bincount(key.ravel(), minlength=d * (top + 1)).reshape(d, top + 1)
        counts[:, 0] = 0
        z, ids = np.nonzero(counts)
        return z, ids, counts[z, ids]
    key = flat + (np.arange(d, dtype=np.int64)[:, None] * (top + 1))
    uniq, cnt = np.unique(key[flat > 0], return_counts=True)
    return uniq // (top + 1), uniq % (top + 1), cnt


def _check_settings(*, mode: str, ways: Any, shots: Any, min_foreground: Any, rank: Any,
                    max_resamples: Any, augment: Any, image_size: Any, seed: Any
                    ) -> tuple[int, int]:
    """`EpisodeSampler`'s scalar arguments checked; returns ``image_size`` as ``(H, W)``."""
    if mode not in ("superpixel", "supervised"):
        raise ValueError(f"mode must be 'superpixel' or 'supervised', got {mode!r}")
    for name, value, low in (("ways", ways, 1), ("shots", shots, 1),
                             ("min_foreground", min_foreground, 1), ("rank", rank, 0),
                             ("max_resamples", max_resamples, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise TypeError(f"augment must be an AugmentConfig or None, got {type(augment)}")
    size_t: tuple[Any, ...] = (image_size, image_size) \
        if isinstance(image_size, (int, np.integer)) else tuple(image_size)
    if len(size_t) != 2 or min(size_t) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(size_t[0]), int(size_t[1])


def _check_scan_lists(images: Any, labels: Any, exclude_from: Any, exclude_classes: Any,
                      mode: str) -> tuple[list[Any], list[Any], list[Any] | None]:
    """`EpisodeSampler`'s per-scan lists checked (one label volume per scan, and one
    ``exclude_from`` volume per scan when classes are excluded; in supervised mode the labels
    say where they are by default)."""
    for name, seq in (("images", images), ("labels", labels), ("exclude_from", exclude_from)):
        if isinstance(seq, (np.ndarray, Tensor)):
            raise TypeError(f"{name} must be a list of (D, H, W) volumes, one per scan; "
                            f"wrap a single volume as [{name}]")
    images, labels = list(images), list(labels)
    if not images:
        raise ValueError("images is empty: pass at least one (D, H, W) scan")
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label volumes; pass "
                         "one label volume per scan")
    if exclude_classes and exclude_from is None:
        if mode == "superpixel":
            raise ValueError("exclude_classes needs exclude_from in superpixel mode: pass the "
                             "label volumes saying where those classes are")
        exclude_from = labels
    if exclude_from is not None:
        exclude_from = list(exclude_from)
        if len(exclude_from) != len(images):
            raise ValueError(f"exclude_from has {len(exclude_from)} volumes for "
                             f"{len(images)} scans")
    return images, labels, exclude_from


class EpisodeSampler(IterableDataset):
    """Few-shot episodes: self-supervised from pseudolabels, or supervised from labels.

    An infinite, reproducible stream: episode ``i`` depends only on ``(seed, rank, i)``.
    The sampler is a ``torch.utils.data.IterableDataset`` of :class:`Episode`; iterating it
    (directly, or through ``DataLoader(sampler, batch_size=None, num_workers=W)``) yields
    ``episode(start), episode(start + 1), ...`` where ``start`` is the next index when the
    iteration begins; :meth:`batches` yields collated :class:`EpisodeBatch` es.

    Args:
        images: list of ``(D, H, W)`` scans (numpy or torch, any real dtype; an ``(H, W)``
            array counts as one slice). Intensities are used as given (no normalisation;
            the gamma augmentation works on each image's own min-max range), returned float32.
        labels: list of ``(D, H, W)`` integer label volumes matching ``images``: superpixel
            pseudolabels (0 = not usable, ids > 0) in superpixel mode; class labels (0 =
            background, 255 = ignore) in supervised mode. Float arrays with integral values
            are accepted.
        mode: ``"superpixel"`` (self-supervised) or ``"supervised"``.
        ways: N, classes per episode (distinct superpixels of one slice in superpixel mode).
        shots: S, support images per episode.
        image_size: side (or ``(H, W)``) of the episode images; slices of another size are
            resized (bilinear with antialiasing for images, nearest for labels), not cropped.
        augment: random transform applied independently to every support and the query;
            ``None`` for none.
        exclude_classes: setting 2: drop every slice that contains one of these label values
            (in ``exclude_from``). Empty (setting 1) by default.
        exclude_from: label volumes (same shapes as ``images``) saying where the excluded
            classes are; defaults to ``labels`` in supervised mode, required in superpixel mode.
        min_foreground: minimum pixels (after resizing to ``image_size``) of a superpixel or
            class for its slice to be used for it.
        seed: seed of the stream; ``None`` draws one from the OS (recorded in
            :meth:`state_dict`, so the run can still be resumed).
        rank: distributed rank; each rank gets its own stream.
        device: where episodes are built and augmented (CPU by default). A CUDA device keeps
            the volumes on the GPU; use it without ``DataLoader`` workers.
        max_resamples: how many times a transform that makes a foreground vanish is redrawn
            before the item is left untransformed.

    Attributes:
        resample_count: number of item transforms redrawn so far because a class vanished
            (in this process; ``DataLoader`` workers keep their own count).

    Raises:
        ValueError: mismatched shapes, NaN images, negative or non-integer labels, a scan
            without foreground, no usable slice or class combination (messages name the scan).
        TypeError: wrong input types.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> imgs = [rng.random((3, 24, 24)) for _ in range(2)]
        >>> labs = [np.zeros((3, 24, 24), np.int64) for _ in range(2)]
        >>> for lab in labs:
        ...     lab[:, 4:12, 4:12], lab[:, 14:20, 14:20] = 1, 2
        >>> sampler = EpisodeSampler(imgs, labs, mode="supervised", ways=2, shots=2,
        ...                          image_size=24, min_foreground=10, seed=1)
        >>> info = sampler.describe(0)
        >>> info.support_scan != info.query_scan, info.classes
        (True, (1, 2))
        >>> int(sampler.sample().query_label.max()), sampler.next_index
        (2, 1)
    """

    def __init__(self, images: Sequence[Any], labels: Sequence[Any], *,
                 mode: Literal["superpixel", "supervised"] = "superpixel",
                 ways: int = 1, shots: int = 1, image_size: int | tuple[int, int] = 256,
                 augment: AugmentConfig | None = _DEFAULT_AUGMENT,
                 exclude_classes: Sequence[int] = (),
                 exclude_from: Sequence[Any] | None = None,
                 min_foreground: int = 100, seed: int | None = None, rank: int = 0,
                 device: str | torch.device | None = None, max_resamples: int = 10) -> None:
        super().__init__()
        size = _check_settings(mode=mode, ways=ways, shots=shots, min_foreground=min_foreground,
                               rank=rank, max_resamples=max_resamples, augment=augment,
                               image_size=image_size, seed=seed)
        images, labels, exclude_from = _check_scan_lists(images, labels, exclude_from,
                                                         exclude_classes, mode)
        self.mode = mode
        self.ways = int(ways)
        self.shots = int(shots)
        self.image_size = size
        self.augment = None if augment is None or augment.is_identity else augment
        self.exclude_classes = tuple(sorted({int(c) for c in exclude_classes}))
        self.min_foreground = int(min_foreground)
        self.rank = int(rank)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.max_resamples = int(max_resamples)
        entropy = np.random.SeedSequence().entropy if seed is None else seed
        self.seed = int(entropy)  # type: ignore[arg-type]
        self.resample_count = 0
        self._next_index = 0

        per_scan, keep_masks = self._load_scans(images, labels, exclude_from)
        if mode == "superpixel":
            self._build_superpixel_index(per_scan, keep_masks)
        else:
            self._build_supervised_index(per_scan, keep_masks)
        logger.info("EpisodeSampler(%s): %d scans, %d usable slices, %d excluded (setting 2), "
                    "%d-way %d-shot at %s", mode, len(images), self.num_slices,
                    self.excluded_slices, self.ways, self.shots, size)

    def _load_scans(self, images: list[Any], labels: list[Any], exclude_from: list[Any] | None
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], list[np.ndarray]]:
        """Check each scan, resize it to ``image_size`` onto the device, and count its classes.

        Sets ``_images``, ``_labels`` and ``excluded_slices``; returns, per scan, the
        `_slice_counts` of its labels and which of its slices setting 2 keeps."""
        self._images: list[Tensor] = []
        self._labels: list[Tensor] = []
        self.excluded_slices = 0
        per_scan: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        keep_masks: list[np.ndarray] = []
        for s, (img, lab) in enumerate(zip(images, labels, strict=True)):
            img_np = _volume(img, f"image of scan {s}")
            check_real(img_np, f"image of scan {s}")
            check_finite(img_np, f"image of scan {s}")
            lab_np = to_label_map(_volume(lab, f"labels of scan {s}"), f"labels of scan {s}")
            lab_np = lab_np.astype(np.int64, copy=False)
            if img_np.shape != lab_np.shape:
                raise ValueError(f"scan {s}: image shape {img_np.shape} != label shape "
                                 f"{lab_np.shape}; each label volume must match its image")
            if self.mode == "supervised":
                has_fg = bool(((lab_np > 0) & (lab_np != IGNORE_INDEX)).any())
            else:
                has_fg = bool(lab_np.any())
            if not has_fg:
                raise ValueError(f"labels of scan {s} have no foreground (all 0"
                                 f"{' or 255' if self.mode == 'supervised' else ''}); remove the "
                                 "scan or check its (pseudo)labels")
            keep: np.ndarray = np.ones(img_np.shape[0], dtype=bool)
            if self.exclude_classes:
                assert exclude_from is not None
                ex = to_label_map(_volume(exclude_from[s], f"exclude_from of scan {s}"),
                                  f"exclude_from of scan {s}")
                if ex.shape != img_np.shape:
                    raise ValueError(f"scan {s}: exclude_from shape {ex.shape} != image shape "
                                     f"{img_np.shape}")
                keep = np.asarray(~np.isin(ex, self.exclude_classes).any(axis=(1, 2)))
                self.excluded_slices += int((~keep).sum())
            img_t, lab_t = _resize(img_np, lab_np, self.image_size)
            per_scan.append(_slice_counts(lab_t))
            keep_masks.append(keep)
            self._images.append(img_t.to(self.device))
            self._labels.append(lab_t.to(self.device))
        return per_scan, keep_masks

    # ------------------------------------------------------------------ indices
    def _build_superpixel_index(self, per_scan, keep_masks) -> None:
        scans, zs, ptr, ids = [], [], [0], []
        for s, (z, sid, cnt) in enumerate(per_scan):
            ok = (cnt >= self.min_foreground) & keep_masks[s][z]
            z, sid = z[ok], sid[ok]
            if z.size == 0:
                continue
            slices, starts, n_per = np.unique(z, return_index=True, return_counts=True)
            usable = n_per >= self.ways
            for zz, st, n in zip(slices[usable], starts[usable], n_per[usable], strict=True):
                scans.append(s)
                zs.append(int(zz))
                ids.append(sid[st:st + n])
                ptr.append(ptr[-1] + int(n))
        if not scans:
            raise ValueError(
                f"no usable slice: none has {self.ways} superpixel(s) of >= "
                f"{self.min_foreground} pixels (at image_size {self.image_size})"
                + (f" outside the {self.excluded_slices} excluded slices" if self.exclude_classes
                   else "") + "; lower min_foreground or ways, or check the pseudolabels")
        self._slice_scan = np.asarray(scans, dtype=np.int64)
        self._slice_z = np.asarray(zs, dtype=np.int64)
        self._cand_ptr = np.asarray(ptr, dtype=np.int64)
        self._cand_ids = np.concatenate(ids).astype(np.int64)
        self.num_slices = len(scans)
        self.classes: tuple[int, ...] = ()

    def _build_supervised_index(self, per_scan, keep_masks) -> None:
        exclude = set(self.exclude_classes)
        # presence[(scan, z)] -> set of classes with >= min_foreground pixels
        slice_scan, slice_z, present = [], [], []
        class_values: set[int] = set()
        for s, (z, cls, cnt) in enumerate(per_scan):
            ok = (cnt >= self.min_foreground) & keep_masks[s][z] & (cls != IGNORE_INDEX)
            if exclude:
                ok &= ~np.isin(cls, sorted(exclude))
            z, cls = z[ok], cls[ok]
            for zz in np.unique(z):
                slice_scan.append(s)
                slice_z.append(int(zz))
                present.append(cls[z == zz])
                class_values.update(int(c) for c in cls[z == zz])
        classes = sorted(class_values)
        if not classes:
            raise ValueError(f"no usable slice: no class has >= {self.min_foreground} pixels in a "
                             "kept slice; lower min_foreground or check the labels")
        col = {c: i for i, c in enumerate(classes)}
        presence = np.zeros((len(slice_scan), len(classes)), dtype=bool)
        for row, cls in enumerate(present):
            presence[row, [col[int(c)] for c in cls]] = True
        slice_scan_a = np.asarray(slice_scan, dtype=np.int64)
        slice_z_a = np.asarray(slice_z, dtype=np.int64)
        n_scans = len(self._images)
        if math.comb(len(classes), self.ways) > _MAX_COMBINATIONS:
            raise ValueError(f"{len(classes)} classes taken {self.ways} at a time is more than "
                             f"{_MAX_COMBINATIONS} combinations; use fewer ways")
        combos: list[tuple[tuple[int, ...], list[np.ndarray], np.ndarray]] = []
        for combo in itertools.combinations(range(len(classes)), self.ways):
            rows = np.flatnonzero(presence[:, list(combo)].all(axis=1))
            scans = np.unique(slice_scan_a[rows])
            if n_scans > 1 and scans.size < 2:
                continue
            if n_scans == 1 and rows.size < 2:
                continue
            per = [slice_z_a[rows[slice_scan_a[rows] == sc]] for sc in scans]
            combos.append((tuple(classes[i] for i in combo), per, scans))
        if not combos:
            need = "two scans" if n_scans > 1 else "two slices"
            raise ValueError(f"no usable class combination: no {self.ways} classes appear together "
                             f"(>= {self.min_foreground} pixels each) in {need}; lower ways or "
                             "min_foreground")
        self._combos = combos
        self.classes = tuple(sorted({c for combo in combos for c in combo[0]}))
        self.num_slices = int(presence.any(axis=1).sum())

    # ------------------------------------------------------------------ randomness
    def _seed_sequence(self, index: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(self.rank, int(index)))

    def _choose(self, index: int, rng: np.random.Generator) -> EpisodeInfo:
        if self.mode == "superpixel":
            k = int(rng.integers(self.num_slices))
            cands = self._cand_ids[self._cand_ptr[k]:self._cand_ptr[k + 1]]
            ids = rng.choice(cands, size=self.ways, replace=False)
            scan, z = int(self._slice_scan[k]), int(self._slice_z[k])
            return EpisodeInfo(index=index, support_scan=scan, support_slices=(z,) * self.shots,
                               query_scan=scan, query_slice=z,
                               classes=tuple(int(i) for i in ids))
        classes, per_scan, scans = self._combos[int(rng.integers(len(self._combos)))]
        if len(self._images) == 1:
            only = per_scan[0]
            qpos = int(rng.integers(only.size))
            query_scan = support_scan = int(scans[0])
            query_slice = int(only[qpos])
            pool = np.delete(only, qpos)
        else:
            order = rng.permutation(scans.size)
            support_pos, query_pos = int(order[0]), int(order[1])
            support_scan, query_scan = int(scans[support_pos]), int(scans[query_pos])
            query_slice = int(rng.choice(per_scan[query_pos]))
            pool = per_scan[support_pos]
        picks = rng.choice(pool, size=self.shots, replace=pool.size < self.shots)
        return EpisodeInfo(index=index, support_scan=support_scan,
                           support_slices=tuple(int(z) for z in picks), query_scan=query_scan,
                           query_slice=query_slice, classes=classes)

    def describe(self, index: int) -> EpisodeInfo:
        """Which scans, slices and classes episode ``index`` uses (cheap: no image work).

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> info = s.describe(3)  # superpixel mode: supports and query share the slice
            >>> info.query_slice == info.support_slices[0], s.next_index
            (True, 0)
        """
        choice_seq, _ = self._seed_sequence(index).spawn(2)
        return self._choose(int(index), np.random.default_rng(choice_seq))

    # ------------------------------------------------------------------ episodes
    def _selected(self, label_slice: Tensor, classes: tuple[int, ...]) -> Tensor:
        """Label slice -> map with n at class n's pixels, 255 at ignore, else 0."""
        out = torch.zeros_like(label_slice, dtype=torch.float32)
        if self.mode == "supervised":
            out[label_slice == IGNORE_INDEX] = IGNORE_INDEX
        for n, value in enumerate(classes, start=1):
            out[label_slice == value] = n
        return out

    def _transform(self, images: Tensor, selected: Tensor, generator: torch.Generator
                   ) -> tuple[Tensor, Tensor]:
        """Augment (B, 1, H, W) images and class maps; no class may vanish from an item that
        shows every class (an item that lacks one before, e.g. a query slice that does not
        show the support's region, is transformed once and kept as it comes out)."""
        assert self.augment is not None
        b = images.shape[0]
        size = self.image_size
        params = sample_params(self.augment, b, size, generator=generator, device=self.device)
        first_img, first_sel = apply_geometry(images, selected, params)
        assert first_img is not None and first_sel is not None
        warped_img: Tensor = first_img
        warped_sel: Tensor = first_sel
        classes = torch.arange(1, self.ways + 1, device=self.device, dtype=selected.dtype)

        def shows_every_class(sel: Tensor) -> Tensor:  # (B,) bool
            return (sel.flatten(1)[:, :, None] == classes).any(dim=1).all(dim=1)

        whole = shows_every_class(selected)
        for _ in range(self.max_resamples + 1):
            bad = whole & ~shows_every_class(warped_sel)
            n_bad = int(bad.sum())
            if n_bad == 0:
                break
            self.resample_count += n_bad
            new = sample_params(self.augment, n_bad, size, generator=generator,
                                device=self.device)
            params = params.replace_items(bad, new)
            redo_img, redo_sel = apply_geometry(images[bad], selected[bad], new)
            assert redo_img is not None and redo_sel is not None
            warped_img[bad], warped_sel[bad] = redo_img, redo_sel
        else:  # still vanishing after max_resamples redraws: keep those items unwarped
            bad = whole & ~shows_every_class(warped_sel)
            if bool(bad.any()):
                logger.debug("%d item(s) left untransformed after %d redraws", int(bad.sum()),
                             self.max_resamples)
                keep = TransformParams.identity(int(bad.sum()), device=self.device)
                params = params.replace_items(bad, keep)
                warped_img[bad], warped_sel[bad] = images[bad], selected[bad]
        return apply_intensity(warped_img, params), warped_sel

    def episode(self, index: int) -> Episode:
        """Episode number ``index`` (a pure function of ``(seed, rank, index)``).

        Args:
            index: non-negative episode index.

        Returns:
            An :class:`Episode` (shapes and dtypes as documented there) on the sampler's device.

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> e = s.episode(3)
            >>> e.query_label.dtype, e.query_image.equal(s.episode(3).query_image), s.next_index
            (torch.int64, True, 0)
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"index must be a non-negative int, got {index!r}")
        choice_seq, torch_seq = self._seed_sequence(index).spawn(2)
        info = self._choose(int(index), np.random.default_rng(choice_seq))
        sup_img = self._images[info.support_scan][list(info.support_slices)]
        sup_lab = self._labels[info.support_scan][list(info.support_slices)]
        q_img = self._images[info.query_scan][info.query_slice][None]
        q_lab = self._labels[info.query_scan][info.query_slice][None]
        images = torch.cat([sup_img, q_img])[:, None]                        # (S+1, 1, H, W)
        selected = self._selected(torch.cat([sup_lab, q_lab]), info.classes)[:, None]
        if self.augment is not None:
            generator = torch.Generator()
            generator.manual_seed(int(torch_seq.generate_state(1, np.uint64)[0]))
            images, selected = self._transform(images, selected, generator)
        sel = selected[:, 0].long()
        classes = torch.arange(1, self.ways + 1, device=sel.device)
        sup_masks = (sel[:-1, None] == classes[None, :, None, None]).float()
        return Episode(support_images=images[:-1], support_masks=sup_masks,
                       query_image=images[-1], query_label=sel[-1].clone())

    def sample(self) -> Episode:
        """The next episode of the stream (advances the position by one).

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> ep = s.sample(); torch.equal(ep.query_image, s.episode(0).query_image), s.next_index
            (True, 1)
        """
        episode = self.episode(self._next_index)
        self._next_index += 1
        return episode

    @property
    def next_index(self) -> int:
        """Index of the episode `sample` returns next (an int; iteration starts there too).

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> _ = [s.sample() for _ in range(3)]; s.next_index
            3
        """
        return self._next_index

    def __iter__(self) -> Iterator[Episode]:
        info = get_worker_info()
        if info is None:
            while True:
                yield self.sample()
        index = self._next_index + info.id
        while True:
            yield self.episode(index)
            index += info.num_workers

    def batches(self, batch_size: int) -> EpisodeBatches:
        """An ``IterableDataset`` of :class:`EpisodeBatch` es of ``batch_size`` episodes.

        Batch ``j`` holds episodes ``start + j * batch_size ...`` (``start`` = the sampler's
        next index when iteration begins); with ``DataLoader(..., batch_size=None,
        num_workers=W)`` worker ``w`` builds batches ``w, w + W, ...``, so the stream is the
        same for every ``W``.

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> tuple(s.batches(4).batch(1).support_images.shape)  # episodes 4..7
            (4, 1, 1, 16, 16)
        """
        return EpisodeBatches(self, batch_size)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Position and seed of the stream (plain Python values), for `load_state_dict`.

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> _ = s.sample(); state = s.state_dict()
            >>> state["next_index"], state["seed"], state["mode"], state["num_slices"]
            (1, 0, 'superpixel', 2)
        """
        return {"next_index": self._next_index, "seed": self.seed, "mode": self.mode,
                "ways": self.ways, "shots": self.shots, "num_slices": self.num_slices}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream saved by :meth:`state_dict` (sets the seed and next index).

        Raises:
            ValueError: the state comes from a sampler with another mode, ways, shots or
                data (number of usable slices).

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> state = s.state_dict(); first = s.sample().query_image
            >>> s.load_state_dict(state); torch.equal(s.sample().query_image, first)
            True
        """
        missing = {"next_index", "seed"} - set(state)
        if missing:
            raise ValueError(f"not an EpisodeSampler state: missing {sorted(missing)}")
        for key in ("mode", "ways", "shots", "num_slices"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"the state was saved by a sampler with {key}={state[key]!r}, "
                                 f"this one has {getattr(self, key)!r}; build the sampler with "
                                 "the same data and settings to resume")
        if int(state["next_index"]) < 0:
            raise ValueError(f"next_index must be >= 0, got {state['next_index']}")
        self.seed = int(state["seed"])
        self._next_index = int(state["next_index"])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(mode={self.mode!r}, ways={self.ways}, shots={self.shots}, "
                f"image_size={self.image_size}, scans={len(self._images)}, "
                f"slices={self.num_slices}, seed={self.seed}, rank={self.rank})")


class EpisodeBatches(IterableDataset):
    """Batches of episodes from an `EpisodeSampler` (see `EpisodeSampler.batches`): an
    ``IterableDataset`` of `EpisodeBatch`, batch ``j`` = episodes ``start + j B ...``.

    Example:
        >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
        >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
        >>> next(iter(s.batches(3))).query_labels.shape  # (B, H, W)
        torch.Size([3, 16, 16])
    """

    def __init__(self, sampler: EpisodeSampler, batch_size: int) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.sampler = sampler
        self.batch_size = batch_size

    def batch(self, number: int, *, start: int = 0) -> EpisodeBatch:
        """Batch ``number`` counted from episode ``start``: episodes ``start + number B ...``.

        Example:
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=16, seed=0)
            >>> batch = s.batches(2).batch(1, start=4)  # episodes 6 and 7
            >>> torch.equal(batch.query_images[1], s.episode(7).query_image)
            True
        """
        first = start + number * self.batch_size
        return collate_episodes([self.sampler.episode(i)
                                 for i in range(first, first + self.batch_size)])

    def __iter__(self) -> Iterator[EpisodeBatch]:
        start = self.sampler.next_index
        info = get_worker_info()
        number, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            yield self.batch(number, start=start)
            number += step
