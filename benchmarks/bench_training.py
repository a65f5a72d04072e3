"""Training-step cost on this machine: seconds per iteration, share of peak, peak memory.

Usage:
    python benchmarks/bench_training.py [--quick] [--threads 2] [--out FILE]

On the CPU each configuration runs in a fresh subprocess (so its peak resident memory is its own):
random-init model, synthetic 256 x 256 superpixel episodes from `EpisodeSampler` (full
augmentation), `Trainer.train_step` timed after warm-up steps, median reported.

* the paper's backbone (DeepLabV3-ResNet101) and the light one (dilated ResNet-18), 1 episode;
* episodes per second against ``batch_size`` 1, 4 and 8 (light backbone; the paper's at 1);
* ``--device cuda`` runs the same on a GPU (all rows in one process), adding ``amp=True`` rows,
  batches 4 and 8 for the paper's backbone, and peak GPU memory per row.

The share of peak uses the issue's figures: one ResNet-101 episode step is ~531 GFLOP and the
2 AVX2 cores here peak near 190 GFLOP/s; the ResNet-18 step is scaled by its forward FLOPs.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

PAPER_STEP_GFLOP = 531.0
CPU_PEAK_GFLOPS = 190.0


def one(backbone: str, batch: int, steps: int, threads: int, device: str, amp: bool) -> dict:
    import numpy as np
    import torch

    import fewshotseg as fss

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    ids = np.arange(64).reshape(8, 8).repeat(32, 0).repeat(32, 1) + 1
    images = [
        rng.random(65)[ids][None].repeat(4, 0).astype(np.float32)
        + 0.05 * rng.standard_normal((4, 256, 256)).astype(np.float32)
        for _ in range(2)
    ]
    labels = [ids[None].repeat(4, 0) for _ in range(2)]
    sampler = fss.EpisodeSampler(images, labels, image_size=256, seed=0)
    torch.manual_seed(0)
    model = fss.ALPNet(backbone=backbone)
    trainer = fss.Trainer(
        model, sampler, fss.TrainConfig(batch_size=batch, amp=amp, progress=False), device=device
    )
    batches = [
        fss.collate_episodes([sampler.episode(i * batch + j) for j in range(batch)])
        for i in range(steps + 2)
    ]
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for i, b in enumerate(batches):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step(b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    out = {
        "backbone": backbone,
        "batch": batch,
        "amp": amp,
        "seconds_per_step": statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def forward_gflop(backbone: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import fewshotseg as fss

    model = fss.ALPNet(backbone=backbone).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.encode(torch.randn(1, 1, 256, 256))
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    parser.add_argument(
        "--one", nargs=4, metavar=("BACKBONE", "BATCH", "STEPS", "AMP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        backbone, batch, steps, amp = args.one
        print(
            json.dumps(one(backbone, int(batch), int(steps), args.threads, args.device, amp == "1"))
        )
        return

    if args.quick:
        configs = [("tiny", 1, 2), ("tiny", 4, 2)]
    else:
        configs = [
            ("deeplabv3_resnet101", 1, 5),
            ("resnet18", 1, 10),
            ("resnet18", 4, 5),
            ("resnet18", 8, 4),
        ]
        if args.device.startswith("cuda"):
            configs += [("deeplabv3_resnet101", 4, 10), ("deeplabv3_resnet101", 8, 10)]
    on_gpu = args.device.startswith("cuda")
    amps = [False, True] if on_gpu else [False]
    rows = []
    for backbone, batch, steps in configs:
        for amp in amps:
            if on_gpu:
                # One process for all GPU rows: peak GPU memory is reset per row, and a fresh
                # CUDA context per row would cost more device time than the measurements.
                rows.append(one(backbone, batch, steps, args.threads, args.device, amp))
                print(rows[-1], file=sys.stderr)
                continue
            cmd = [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--device",
                args.device,
                "--one",
                backbone,
                str(batch),
                str(steps),
                "1" if amp else "0",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)

    ref_gflop = {"deeplabv3_resnet101": forward_gflop("deeplabv3_resnet101")}
    lines = [
        f"Machine: {platform.machine()}, {args.threads} threads, device {args.device}.",
        "",
        "| backbone | batch | amp | s / step | episodes / s | share of CPU peak | peak RSS (MB) |"
        + (" peak GPU (MB) |" if args.device.startswith("cuda") else ""),
        "| --- | --- | --- | --- | --- | --- | --- |"
        + (" --- |" if args.device.startswith("cuda") else ""),
    ]
    for r in rows:
        share = ""
        if args.device == "cpu" and r["backbone"] in ("deeplabv3_resnet101", "resnet18"):
            ratio = forward_gflop(r["backbone"]) / ref_gflop["deeplabv3_resnet101"]
            gflop = PAPER_STEP_GFLOP * ratio * r["batch"]
            share = f"{100 * gflop / r['seconds_per_step'] / CPU_PEAK_GFLOPS:.0f} %"
        # in one process the resident peak accumulates over rows, so only CPU rows report it
        rss = "" if on_gpu else f"{r['peak_rss_mb']:.0f}"
        line = (
            f"| {r['backbone']} | {r['batch']} | {r['amp']} | {r['seconds_per_step']:.3f} | "
            f"{r['batch'] / r['seconds_per_step']:.2f} | {share} | {rss} |"
        )
        if "peak_gpu_mb" in r:
            line += f" {r['peak_gpu_mb']:.0f} |"
        lines.append(line)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
