"""Core-model figures: ALP forward time against a per-class loop, and backbone cost.

Usage:
    python benchmarks/bench_model.py [--quick] [--threads 2] [--out FILE]

1. ALP on 256 x 32 x 32 features (1-way 1-shot, a superpixel-sized and an organ-sized mask),
   train window 4 and test window 2: our vectorised module against a straightforward
   implementation written below (loop over batch items and classes, boolean indexing of the
   qualifying cells, a 1 x 1 convolution per class: the reference code's approach). Both are
   checked to agree before timing. Median of repeated runs, forward only.
2. Each backbone: parameters, and forward time of one episode (1 support + 1 query, 256 x 256,
   eval mode, no gradients).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from fewshotseg.models import AdaptiveLocalPrototypePool, ALPNet


def per_class_loop(sup_feats, sup_masks, query, *, window, threshold=0.95, temperature=20.0):
    """Straightforward ALP: python loops over batch items and classes."""
    b_count, shots, c, h, w = sup_feats.shape
    out = []
    for b in range(b_count):
        fg = F.interpolate(sup_masks[b], size=(h, w), mode="bilinear")  # (S, N, h, w)
        bg = (1 - fg.sum(1, keepdim=True)).clamp(0, 1)
        masks = torch.cat([bg, fg], 1)
        pooled = F.avg_pool2d(sup_feats[b], window)  # (S, C, gh, gw)
        cells = pooled.permute(0, 2, 3, 1).reshape(-1, c)
        fractions = F.avg_pool2d(masks, window)  # (S, N + 1, gh, gw)
        q = F.normalize(query[b : b + 1], dim=1, eps=1e-4)
        scores = []
        for k in range(masks.shape[1]):
            local = cells[(fractions[:, k] >= threshold).reshape(-1)]
            glob = (sup_feats[b] * masks[:, k : k + 1]).sum((2, 3)) / (
                masks[:, k : k + 1].sum((2, 3)) + 1e-5
            )
            protos = local if (k == 0 and len(local)) else torch.cat([local, glob])
            protos = F.normalize(protos, dim=1, eps=1e-4)
            sims = F.conv2d(q, protos[..., None, None]) * temperature
            scores.append((sims.softmax(1) * sims).sum(1))
        out.append(torch.cat(scores)[None])
    return torch.cat(out)


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_alp(repeats: int) -> list[str]:
    torch.manual_seed(0)
    feats = torch.randn(1, 1, 256, 32, 32)
    query = torch.randn(1, 256, 32, 32)
    rows = [
        "| mask | window | ours (ms) | per-class loop (ms) | speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    masks = {}
    small = torch.zeros(1, 1, 1, 256, 256)
    small[..., 100:140, 90:130] = 1  # ~40 x 40 px: a superpixel
    masks["superpixel (40 x 40 px)"] = small
    large = torch.zeros(1, 1, 1, 256, 256)
    large[..., 40:200, 30:170] = 1  # a liver-sized region
    masks["organ (160 x 140 px)"] = large
    for name, mask in masks.items():
        for window in (4, 2):
            pool = AdaptiveLocalPrototypePool(window_size=window)
            with torch.inference_mode():
                ours = pool(feats, mask, query)
                theirs = per_class_loop(feats, mask, query, window=window)
                torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
                t_ours = median_ms(lambda p=pool, m=mask: p(feats, m, query), repeats)
                t_loop = median_ms(
                    lambda m=mask, w=window: per_class_loop(feats, m, query, window=w), repeats
                )
            rows.append(
                f"| {name} | {window} | {t_ours:.2f} | {t_loop:.2f} | {t_loop / t_ours:.2f}x |"
            )
    return rows


def bench_backbones(repeats: int, names: list[str]) -> list[str]:
    rows = [
        "| backbone | parameters (M) | episode forward, eval (s) |",
        "| --- | --- | --- |",
    ]
    sup = torch.randn(1, 1, 1, 256, 256)
    mask = torch.zeros(1, 1, 1, 256, 256)
    mask[..., 80:160, 80:160] = 1
    query = torch.randn(1, 1, 256, 256)
    for name in names:
        torch.manual_seed(0)
        net = ALPNet(backbone=name).eval()
        params = sum(p.numel() for p in net.parameters()) / 1e6
        with torch.inference_mode():
            seconds = median_ms(lambda n=net: n(sup, mask, query), repeats, warmup=1) / 1e3
        rows.append(f"| {name} | {params:.2f} | {seconds:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, light backbones only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the Markdown here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    alp_repeats = 5 if args.quick else 200
    names = (
        ["tiny", "resnet18"]
        if args.quick
        else ["resnet18", "deeplabv3_resnet50", "deeplabv3_resnet101"]
    )
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads.",
        "",
        "ALP forward, 256 x 32 x 32 features, 1-way 1-shot (median):",
        "",
        *bench_alp(alp_repeats),
        "",
        "Backbones (1 support + 1 query at 256 x 256):",
        "",
        *bench_backbones(1 if args.quick else 5, names),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
