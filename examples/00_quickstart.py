"""Quickstart on synthetic data: pseudolabels -> self-supervised training -> few-shot prediction.

Self-contained (no data, no download, seconds on a CPU; ``--quick``: a few steps only):

1. make two synthetic "scans" with bright blobs standing in for organs;
2. compute superpixel pseudolabels of the first one (no labels used);
3. train a small ALPNet on self-supervised superpixel episodes;
4. segment the "organs" of the second scan from one labelled slice of the first, and score it.

    python examples/00_quickstart.py [--quick] [--steps N]

The real thing on CHAOS MRI: examples 01-04, or ``fewshotseg demo``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import fewshotseg as fss


def synthetic_scan(seed: int, depth: int = 8, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A (D, H, W) body with two blob "organs" (labels 1 and 2) whose size varies with depth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.zeros((depth, size, size), np.float32)
    labels = np.zeros((depth, size, size), np.int64)
    centre = 0.5 + rng.uniform(-0.03, 0.03, 2)
    for z in range(depth):
        body = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.42**2
        image[z][body] = 300
        radius = 0.12 * np.sin(np.pi * (z + 1) / (depth + 1))
        organ1 = (yy - centre[0] + 0.12) ** 2 + (xx - centre[1] + 0.1) ** 2 < radius**2
        organ2 = (yy - centre[0] - 0.15) ** 2 + (xx - centre[1] - 0.12) ** 2 < (0.7 * radius) ** 2
        image[z][organ1], labels[z][organ1] = 700, 1
        image[z][organ2], labels[z][organ2] = 1000, 2
    image += rng.normal(0, 20, image.shape).astype(np.float32)
    return np.clip(image, 0, None), labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps only (seconds)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 300)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    steps = args.steps or (5 if args.quick else 300)
    # a tiny network on 64 x 64 slices: more threads only add synchronisation (on two busy
    # cores, 300 steps took 3 min with the default thread count and 4 s with one)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    train_scan, _ = synthetic_scan(seed=0)  # its labels are never used
    query_scan, query_labels = synthetic_scan(seed=1)
    support_scan, support_labels = synthetic_scan(seed=2)

    # 1. pseudolabels: superpixels of the raw scan (the labeler normalises by itself)
    pseudo = fss.SuperpixelPseudolabeler(min_size=60)(train_scan)
    print(f"pseudolabels: up to {pseudo.max()} superpixels per slice")

    # 2. self-supervised episodes: segment one superpixel in a transformed copy of its slice
    image = fss.preprocess.mri(train_scan)  # the same recipe at training and prediction
    sampler = fss.EpisodeSampler([image], [pseudo], image_size=64, min_foreground=20, seed=0)

    # 3. train (ALPNet(backbone="resnet18") or the paper's "deeplabv3_resnet101" for real data)
    model = fss.ALPNet(backbone="tiny", feature_dim=32)
    config = fss.TrainConfig(
        iterations=steps, lr=1e-2, log_every=max(1, steps // 5), progress=False
    )
    history = fss.Trainer(model, sampler, config, device=args.device).fit()
    print(f"trained {steps} steps, loss {history.loss[0]:.3f} -> {history.loss[-1]:.3f}")

    # 4. few-shot: one labelled support slice, a whole query volume
    predictor = fss.SupportQueryPredictor(model, image_size=64)
    z = int(np.argmax((support_labels > 0).sum(axis=(1, 2))))
    prediction = predictor.predict(
        fss.preprocess.mri(support_scan)[z], support_labels[z], fss.preprocess.mri(query_scan)
    )
    scores = fss.dice(prediction, query_labels, classes=[1, 2])
    print("Dice: " + ", ".join(f"organ {c} {100 * d:.1f} %" for c, d in scores.items()))
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
