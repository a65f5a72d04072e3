"""Episodes per second of EpisodeSampler against a straightforward scipy augmentation baseline.

Both run in this process on one CPU core (``torch.set_num_threads(1)``), on the same synthetic
scans (smooth random images, square superpixels of 24 px), at 256 x 256, with the
reference's full augmentation (affine + elastic + gamma) on every support and the query:

* ``fewshotseg``: ``EpisodeSampler(mode="superpixel").sample()``: one fused sampling grid and
  one ``grid_sample`` per copy kind, batched over the S + 1 copies.
* ``scipy baseline``: per copy, ``scipy.ndimage.affine_transform`` (order 1 image, order 0
  mask), then the elastic warp (two ``gaussian_filter`` of uniform noise and
  ``map_coordinates``, order 1 / 0), then gamma; the same slice/superpixel choice from
  precomputed candidate lists; returns the same tensors.

Usage::

    python benchmarks/bench_episodes.py            # full (~1 min)
    python benchmarks/bench_episodes.py --quick    # seconds
    python benchmarks/bench_episodes.py --out bench_episodes.md
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from fewshotseg.episodes import AugmentConfig, Episode, EpisodeSampler


def make_data(n_scans: int, depth: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    cells = (yy // 24) * (-(-size // 24)) + (xx // 24) + 1
    for _ in range(n_scans):
        noise = rng.normal(size=(depth, size, size))
        images.append(ndimage.gaussian_filter(noise, (0, 4, 4)).astype(np.float32) * 100)
        labels.append(np.broadcast_to(cells, (depth, size, size)).astype(np.int32))
    return images, labels


class ScipyBaseline:
    """Per-image scipy augmentation of the same episodes (the straightforward way)."""

    def __init__(self, images, labels, *, ways: int, shots: int, config: AugmentConfig,
                 min_foreground: int, seed: int) -> None:
        self.images, self.labels = images, labels
        self.ways, self.shots, self.cfg = ways, shots, config
        self.rng = np.random.default_rng(seed)
        self.slices = []
        for s, lab in enumerate(labels):
            for z in range(lab.shape[0]):
                ids, counts = np.unique(lab[z][lab[z] > 0], return_counts=True)
                ids = ids[counts >= min_foreground]
                if ids.size >= ways:
                    self.slices.append((s, z, ids))

    def _affine(self, shape):
        c, rng = self.cfg, self.rng
        rot = math.radians(rng.uniform(-c.rotation, c.rotation))
        shear = math.radians(rng.uniform(-c.shear, c.shear))
        scale = rng.uniform(*c.scale)
        shift = rng.uniform(-c.shift, c.shift, size=2)  # (dy, dx)
        # forward map in (row, col) = (y, x) coordinates about the centre
        rotm = np.array([[math.cos(rot), math.sin(rot)], [-math.sin(rot), math.cos(rot)]])
        shm = np.array([[1.0, 0.0], [math.tan(shear), 1.0]])
        fwd = scale * rotm @ shm
        inv = np.linalg.inv(fwd)
        centre = (np.asarray(shape) - 1) / 2
        offset = centre - inv @ (centre + shift)
        return inv, offset

    def _copy(self, image, mask):
        inv, offset = self._affine(image.shape)
        img = ndimage.affine_transform(image, inv, offset, order=1, mode="nearest")
        msk = ndimage.affine_transform(mask, inv, offset, order=0, mode="constant")
        c = self.cfg
        h, w = image.shape
        dy = ndimage.gaussian_filter(self.rng.uniform(-1, 1, (h, w)), c.elastic_sigma,
                                     mode="constant") * c.elastic_alpha
        dx = ndimage.gaussian_filter(self.rng.uniform(-1, 1, (h, w)), c.elastic_sigma,
                                     mode="constant") * c.elastic_alpha
        yy, xx = np.mgrid[:h, :w]
        coords = np.stack([yy + dy, xx + dx])
        img = ndimage.map_coordinates(img, coords, order=1, mode="nearest")
        msk = ndimage.map_coordinates(msk, coords, order=0, mode="constant")
        lo, hi = img.min(), img.max()
        gamma = self.rng.uniform(*c.gamma)
        img = ((img - lo) / (hi - lo)) ** gamma * (hi - lo) + lo
        return img, msk

    def sample(self) -> Episode:
        s, z, ids = self.slices[self.rng.integers(len(self.slices))]
        chosen = self.rng.choice(ids, size=self.ways, replace=False)
        image = self.images[s][z]
        sel = np.zeros(image.shape, dtype=np.float32)
        for n, i in enumerate(chosen, start=1):
            sel[self.labels[s][z] == i] = n
        imgs, sels = [], []
        for _ in range(self.shots + 1):
            for _attempt in range(11):
                img, msk = self._copy(image, sel)
                if all((msk == n).any() for n in range(1, self.ways + 1)):
                    break
            imgs.append(img)
            sels.append(msk)
        images = torch.from_numpy(np.stack(imgs).astype(np.float32))[:, None]
        labels = torch.from_numpy(np.stack(sels)).long()
        classes = torch.arange(1, self.ways + 1)
        masks = (labels[:-1, None] == classes[None, :, None, None]).float()
        return Episode(images[:-1], masks, images[-1], labels[-1])


def episodes_per_second(sample: Callable[[], Episode], n: int, repeats: int) -> float:
    for _ in range(3):
        sample()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            sample()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = 256
    n, repeats, configs = (10, 1, [(1, 1)]) if args.quick else (100, 3, [(1, 1), (1, 5), (3, 1)])
    images, labels = make_data(2, 4 if args.quick else 16, size)
    cfg = AugmentConfig()
    rows = []
    for ways, shots in configs:
        sampler = EpisodeSampler(images, labels, ways=ways, shots=shots, image_size=size,
                                 augment=cfg, min_foreground=100, seed=0)
        baseline = ScipyBaseline(images, labels, ways=ways, shots=shots, config=cfg,
                                 min_foreground=100, seed=0)
        ours = episodes_per_second(sampler.sample, n, repeats)
        base = episodes_per_second(baseline.sample, max(n // 4, 5), repeats)
        no_aug = EpisodeSampler(images, labels, ways=ways, shots=shots, image_size=size,
                                augment=None, min_foreground=100, seed=0)
        plain = episodes_per_second(no_aug.sample, n, repeats)
        rows.append((ways, shots, ours, base, ours / base, plain))
    lines = [
        f"Episodes per second, {size} x {size}, one CPU thread, full augmentation "
        f"(torch {torch.__version__}, {platform.processor() or platform.machine()}"
        f"{', quick run' if args.quick else ''}); median of {repeats} run(s).",
        "",
        "| ways | shots | fewshotseg (eps/s) | scipy baseline (eps/s) | speed-up | "
        "fewshotseg, no augmentation (eps/s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for ways, shots, ours, base, ratio, plain in rows:
        lines.append(f"| {ways} | {shots} | {ours:.0f} | {base:.1f} | {ratio:.1f}x | {plain:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
