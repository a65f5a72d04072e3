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

Precision and layout on the CPU (the ``mode`` column): ``fp32``; ``bf16`` (``amp=True``: bf16
autocast where the CPU runs bf16 natively; the column ``dtype`` says what autocast really used);
``+cl`` channels-last memory format for the model; ``+compile`` the backbone through
``torch.compile`` (its first step, compilation included, is reported apart). The table names the
CPU and its bf16-related flags (from /proc/cpuinfo, as ``lscpu`` shows them).

``--vs-reference`` adds the paper's training step against a baseline written below that does
what the reference implementation does (torchvision DeepLabV3-ResNet101 backbone, random init,
a 1 x 1 projection, the per-class-loop ALP of ``bench_model.py``, weighted cross-entropy plus
the alignment loss, SGD; fp32), in one process with steps interleaved, 1-way 1-shot, 256 x 256.

The share of peak uses the issue's figures: one ResNet-101 episode step is ~531 GFLOP and the
2 AVX2 cores here peak near 190 GFLOP/s; the ResNet-18 step is scaled by its forward FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PAPER_STEP_GFLOP = 531.0
CPU_PEAK_GFLOPS = 190.0
#: /proc/cpuinfo flags that decide how fast fp32 and bf16 convolutions can run
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
MODES = ("fp32", "fp32+cl", "fp32+compile", "bf16", "bf16+cl", "bf16+cl+compile")


def cpu_description() -> str:
    """The CPU's model name and which of `SPEED_FLAGS` it has (Linux; else the platform)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or platform.machine()
    name, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == platform.machine():
            name = value.strip()
        if key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    have = [f for f in SPEED_FLAGS if f in flags] or ["none of " + ", ".join(SPEED_FLAGS)]
    return f"{name}; flags: {' '.join(have)}"


def synthetic_sampler():
    import numpy as np

    import fewshotseg as fss

    rng = np.random.default_rng(0)
    ids = np.arange(64).reshape(8, 8).repeat(32, 0).repeat(32, 1) + 1
    images = [
        rng.random(65)[ids][None].repeat(4, 0).astype(np.float32)
        + 0.05 * rng.standard_normal((4, 256, 256)).astype(np.float32)
        for _ in range(2)
    ]
    labels = [ids[None].repeat(4, 0) for _ in range(2)]
    return fss.EpisodeSampler(images, labels, image_size=256, seed=0)


def make_trainer(backbone: str, batch: int, device: str, mode: str):
    """A `Trainer` in ``mode`` (see `MODES`): amp, memory format, compiled backbone."""
    import torch

    import fewshotseg as fss

    torch.manual_seed(0)
    model = fss.ALPNet(backbone=backbone)
    config = fss.TrainConfig(batch_size=batch, amp=mode.startswith("bf16"), progress=False)
    trainer = fss.Trainer(model, synthetic_sampler(), config, device=device)
    # set the layout explicitly, whatever the Trainer's default for this precision is
    layout = torch.channels_last if "+cl" in mode else torch.contiguous_format
    model.to(memory_format=layout)
    if "+compile" in mode:
        model.encoder = torch.compile(model.encoder)
    return trainer


def one(backbone: str, batch: int, steps: int, threads: int, device: str, mode: str) -> dict:
    import torch

    import fewshotseg as fss

    torch.set_num_threads(threads)
    trainer = make_trainer(backbone, batch, device, mode)
    sampler = trainer.sampler
    batches = [
        fss.collate_episodes([sampler.episode(i * batch + j) for j in range(batch)])
        for i in range(steps + 2)
    ]
    times = []
    first = 0.0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for i, b in enumerate(batches):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_step(b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i == 0:
            first = time.perf_counter() - start  # includes compilation with +compile
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    dtype = trainer._amp_dtype
    out = {
        "backbone": backbone,
        "batch": batch,
        "mode": mode,
        "dtype": "fp32" if dtype is None else str(dtype).replace("torch.", ""),
        "seconds_per_step": statistics.median(times),
        "first_step_s": first,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class ReferenceStep:
    """The reference implementation's training step, written from the method description:
    torchvision's DeepLabV3-ResNet101 backbone (random init, output stride 8, ASPP head unused)
    and a bias-free 1 x 1 projection 2048 -> 256, support and query through it in one call
    (grey slices repeated to 3 channels), ALP as a per-class loop (`bench_model.per_class_loop`,
    train window 4), weighted cross-entropy (background 0.05) plus the alignment loss (the
    query with its predicted mask segmenting the support), SGD; float32 throughout."""

    def __init__(self) -> None:
        import torch
        from torch import nn
        from torchvision.models.segmentation import deeplabv3_resnet101

        torch.manual_seed(0)
        net = deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=False)
        self.backbone = net.backbone  # layer4 as "out", dilated to output stride 8
        self.projection = nn.Conv2d(2048, 256, kernel_size=1, bias=False)
        params = [*self.backbone.parameters(), *self.projection.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def train_step(self, batch) -> float:
        import torch
        import torch.nn.functional as F
        from bench_model import per_class_loop

        # (B, S, 1, H, W), (B, S, N, H, W), (B, 1, H, W), (B, H, W)
        s_img, s_mask = batch.support_images, batch.support_masks
        q_img, q_lab = batch.query_images, batch.query_labels
        b, shots, ways, h, w = s_mask.shape
        self.backbone.train()
        self.optimizer.zero_grad(set_to_none=True)
        images = torch.cat([s_img.reshape(-1, 1, h, w), q_img]).expand(-1, 3, -1, -1)
        feats = self.projection(self.backbone(images)["out"])
        s_feat = feats[: b * shots].reshape(b, shots, *feats.shape[1:])
        q_feat = feats[b * shots :]
        scores = per_class_loop(s_feat, s_mask, q_feat, window=4)
        logits = F.interpolate(scores, size=(h, w), mode="bilinear")
        weight = torch.tensor([0.05] + [1.0] * ways)
        seg = F.cross_entropy(logits, q_lab, weight=weight, ignore_index=255)
        pred = logits.detach().argmax(1)  # (B, H, W)
        q_mask = torch.stack([pred == k for k in range(1, ways + 1)], 1).float()[:, None]
        s_lab = (s_mask[:, 0] * torch.arange(1, ways + 1).view(1, -1, 1, 1)).sum(1).long()
        align_scores = per_class_loop(q_feat[:, None], q_mask, s_feat[:, 0], window=4)
        align_logits = F.interpolate(align_scores, size=(h, w), mode="bilinear")
        loss = seg + F.cross_entropy(align_logits, s_lab, ignore_index=255)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def vs_reference(steps: int, threads: int) -> list[dict]:
    """The reference step against ours in fp32 and with ``amp=True``, in this one process, the
    three stepped in turn on the same episodes (so a change of load hits all three alike)."""
    import torch

    import fewshotseg as fss

    torch.set_num_threads(threads)
    contenders = {
        "reference (fp32)": ReferenceStep(),
        "ours, fp32": make_trainer("deeplabv3_resnet101", 1, "cpu", "fp32"),
        "ours, amp=True": make_trainer_default_layout("deeplabv3_resnet101", "cpu"),
    }
    sampler = synthetic_sampler()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(steps + 2):
        b = fss.collate_episodes([sampler.episode(i)])
        for name, step in contenders.items():
            start = time.perf_counter()
            step.train_step(b)
            if i >= 2:
                times[name].append(time.perf_counter() - start)
    ref = statistics.median(times["reference (fp32)"])
    rows = []
    for name, step in contenders.items():
        dtype = getattr(step, "_amp_dtype", None)
        layout = "channels_last" if _is_channels_last(step) else "NCHW"
        sec = statistics.median(times[name])
        rows.append(
            {
                "name": name,
                "dtype": "fp32" if dtype is None else str(dtype)[6:],
                "layout": layout,
                "seconds_per_step": sec,
                "ratio": sec / ref,
            }
        )
    return rows


def make_trainer_default_layout(backbone: str, device: str):
    """``amp=True`` exactly as a user gets it (the Trainer picks dtype and layout)."""
    import torch

    import fewshotseg as fss

    torch.manual_seed(0)
    config = fss.TrainConfig(amp=True, progress=False)
    return fss.Trainer(fss.ALPNet(backbone=backbone), synthetic_sampler(), config, device=device)


def _is_channels_last(step) -> bool:
    import torch

    module = step.model if hasattr(step, "model") else step.backbone
    weight = next(p for p in module.parameters() if p.dim() == 4)
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


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
    parser.add_argument(
        "--modes",
        help=f"comma-separated CPU modes for every row, of {', '.join(MODES)} (default: per row)",
    )
    parser.add_argument(
        "--vs-reference",
        type=int,
        metavar="STEPS",
        nargs="?",
        const=5,
        help="also time the paper's step against the reference baseline (default 5 steps)",
    )
    parser.add_argument("--skip-rows", action="store_true", help="only --vs-reference")
    parser.add_argument("--out")
    parser.add_argument(
        "--one", nargs=4, metavar=("BACKBONE", "BATCH", "STEPS", "MODE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--reference-run", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        backbone, batch, steps, mode = args.one
        print(json.dumps(one(backbone, int(batch), int(steps), args.threads, args.device, mode)))
        return
    if args.reference_run:
        print(json.dumps(vs_reference(args.reference_run, args.threads)))
        return

    on_gpu = args.device.startswith("cuda")
    if on_gpu:
        configs = [
            ("deeplabv3_resnet101", 1, 5, ["fp32", "bf16"]),
            ("resnet18", 1, 10, ["fp32", "bf16"]),
            ("resnet18", 4, 5, ["fp32", "bf16"]),
            ("resnet18", 8, 4, ["fp32", "bf16"]),
            ("deeplabv3_resnet101", 4, 10, ["fp32", "bf16"]),
            ("deeplabv3_resnet101", 8, 10, ["fp32", "bf16"]),
        ]
    elif args.quick:
        configs = [("tiny", 1, 2, ["fp32", "bf16", "bf16+cl"]), ("tiny", 4, 2, ["fp32", "bf16+cl"])]
    else:
        configs = [
            ("deeplabv3_resnet101", 1, 5, ["fp32", "bf16", "bf16+cl"]),
            ("resnet18", 1, 10, list(MODES)),
            ("resnet18", 4, 5, ["fp32", "bf16+cl"]),
            ("resnet18", 8, 4, ["fp32", "bf16+cl"]),
        ]
    if args.modes:
        configs = [(b, n, k, args.modes.split(",")) for b, n, k, _ in configs]
    if args.skip_rows:
        configs = []
    rows = []
    for backbone, batch, steps, modes in configs:
        for mode in modes:
            if mode not in MODES:
                raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
            if on_gpu:
                # One process for all GPU rows: peak GPU memory is reset per row, and a fresh
                # CUDA context per row would cost more device time than the measurements.
                rows.append(one(backbone, batch, steps, args.threads, args.device, mode))
                print(rows[-1], file=sys.stderr)
                continue
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--device",
                   args.device, "--one", backbone, str(batch), str(steps), mode]  # fmt: skip
            # a fresh inductor cache, so "first step" includes the whole compilation
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:  # e.g. torch.compile without a C++ compiler
                print(f"{backbone} {mode}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)

    lines = [
        f"Machine: {cpu_description()}; {os.cpu_count()} logical CPUs, {args.threads} threads, "
        f"device {args.device}, torch {torch_version()}.",
        "",
    ]
    if rows:
        lines += table(rows, args.device)
    if args.vs_reference and not on_gpu:
        cmd = [sys.executable, __file__, "--threads", str(args.threads),
               "--reference-run", str(args.vs_reference)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        ref_rows = json.loads(done.stdout.strip().splitlines()[-1])
        lines += [
            "",
            "The paper's step (DeepLabV3-ResNet101, random init, 1-way 1-shot, 256 x 256) against "
            f"the reference baseline, one process, {args.vs_reference} steps each, interleaved:",
            "",
            "| step | autocast dtype | layout | s / step | ours / reference |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in ref_rows:
            lines.append(
                f"| {r['name']} | {r['dtype']} | {r['layout']} | {r['seconds_per_step']:.3f} | "
                f"{r['ratio']:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


def torch_version() -> str:
    import torch

    return torch.__version__


def table(rows: list[dict], device: str) -> list[str]:
    on_gpu = device.startswith("cuda")
    ref_gflop = forward_gflop("deeplabv3_resnet101")
    fp32_time = {
        (r["backbone"], r["batch"]): r["seconds_per_step"] for r in rows if r["mode"] == "fp32"
    }
    lines = [
        "| backbone | batch | mode | autocast dtype | s / step | episodes / s | vs fp32 "
        "| share of CPU peak | first step (s) | peak RSS (MB) |"
        + (" peak GPU (MB) |" if on_gpu else ""),
        "|" + " --- |" * (11 if on_gpu else 10),
    ]
    for r in rows:
        share = ""
        if device == "cpu" and r["backbone"] in ("deeplabv3_resnet101", "resnet18"):
            ratio = forward_gflop(r["backbone"]) / ref_gflop
            gflop = PAPER_STEP_GFLOP * ratio * r["batch"]
            share = f"{100 * gflop / r['seconds_per_step'] / CPU_PEAK_GFLOPS:.0f} %"
        base = fp32_time.get((r["backbone"], r["batch"]))
        speedup = f"{base / r['seconds_per_step']:.2f}x" if base else ""
        # in one process the resident peak accumulates over rows, so only CPU rows report it
        rss = "" if on_gpu else f"{r['peak_rss_mb']:.0f}"
        line = (
            f"| {r['backbone']} | {r['batch']} | {r['mode']} | {r['dtype']} | "
            f"{r['seconds_per_step']:.3f} | {r['batch'] / r['seconds_per_step']:.2f} | {speedup} "
            f"| {share} | {r['first_step_s']:.1f} | {rss} |"
        )
        if "peak_gpu_mb" in r:
            line += f" {r['peak_gpu_mb']:.0f} |"
        lines.append(line)
    return lines


if __name__ == "__main__":
    main()
