"""Inference cost: segment one CHAOS query volume with 3 support slices, against a baseline.

Usage:
    python benchmarks/bench_inference.py [--quick] [--threads 2] [--out FILE]

For each organ (default: the liver alone; ``--classes 1,2,3,4`` for all four), the 3 support
slices are the protocol's middle slices of the support scan (patient 8) and every slice of the
query scan (patient 2) is assigned one of them by relative depth, as
`SupportQueryPredictor.segment_volume` does.

* ours: `SupportQueryPredictor.segment_volume`: each support slice encoded and pooled once, query
  slices through the backbone in batches, results stitched on the CPU;
* baseline (the reference's approach): one full ``model(support, mask, query)`` forward per query
  slice, support re-encoded every time; written here, measured in the same run.

Both give the same labels (checked). Peak resident memory of segmenting a 200-slice volume is
measured in a fresh subprocess per backbone. Without the CHAOS data, synthetic volumes are used.

``--precision`` measures instead fp32 against bf16 autocast (``amp=True``), and bf16 with the
model in channels-last memory format: `segment_volume` of each fold-0 query volume (patients 1,
2, 3, 5 with support 8; the shipped demo pair 8 -> 2 without the CHAOS folder), 4 organs, with
the shipped model (``chaos-ssl``) or a random-init backbone named in ``--backbones`` (first
volume only); seconds per volume, the share of voxels whose label equals fp32's, and the Dice
against the ground truth per precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fewshotseg as fss
from fewshotseg import evaluation, preprocess

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chaos_t2spir"


def volumes(quick: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if (DATA / "image_8.nii.gz").is_file():
        cases = {c.id: c for c in fss.datasets.chaos_t2spir(DATA, ids=[8, 2])}
        sup, lab = cases["8"].image.array, cases["8"].label.astype(np.int64)
        qry = cases["2"].image.array
        source = "CHAOS support 8, query 2"
    else:
        rng = np.random.default_rng(0)
        sup = rng.random((30, 256, 256)).astype(np.float32)
        lab = np.zeros(sup.shape, np.int64)
        lab[5:25, 60:160, 40:150] = 1
        qry = rng.random((31, 256, 256)).astype(np.float32)
        source = "synthetic (CHAOS absent)"
    if quick:
        qry = qry[:6]
    return preprocess.mri(sup), lab, preprocess.mri(qry), source


def baseline(model: fss.ALPNet, sup, lab, qry, classes) -> np.ndarray:
    """One support + query forward per query slice and class (support re-encoded each time);
    the same slice assignment and class combination as `segment_volume`."""
    best = np.zeros(qry.shape, np.float32)
    out = np.zeros(qry.shape, np.int64)
    model.eval()
    for cls in classes:
        picks = evaluation.support_slice_indices(lab, cls)
        present = np.flatnonzero((lab == cls).any(axis=(1, 2)))
        lo, hi = present.min(), present.max()
        rel = np.arange(len(qry)) * len(sup) / len(qry)
        chunk = np.clip(((rel - lo) // (max(hi - lo, 1e-9) / 3)).astype(int), 0, 2)
        with torch.inference_mode():
            for z in range(len(qry)):
                s = picks[chunk[z]]
                s_img = torch.from_numpy(sup[s])[None, None, None]
                s_mask = torch.from_numpy(lab[s] == cls).float()[None, None, None]
                q = torch.from_numpy(qry[z])[None, None]
                proba = model(s_img, s_mask, q).softmax(1)[0, 1].numpy()
                take = (proba > 0.5) & (proba > best[z])
                best[z] = np.where(take, proba, best[z])
                out[z] = np.where(take, cls, out[z])
    return out


def precision_volumes(quick: bool) -> tuple[np.ndarray, np.ndarray, list, str]:
    """Raw support image and labels, ``[(id, raw query, query labels)]``, and the source."""
    if (DATA / "image_8.nii.gz").is_file():
        ids = [1, 2, 3, 5][: 1 if quick else 4]
        cases = {c.id: c for c in fss.datasets.chaos_t2spir(DATA, ids=[8, *ids])}
        sup = cases["8"]
        queries = [(str(i), cases[str(i)].image.array, cases[str(i)].label) for i in ids]
        return sup.image.array, sup.label.astype(np.int64), queries, "CHAOS fold 0"
    from fewshotseg.demo import load_demo_scans

    sup, qry = load_demo_scans()
    return (sup.image.array, sup.label.astype(np.int64),
            [(qry.id, qry.image.array, qry.label)], "shipped demo pair")  # fmt: skip


def _dice(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    a, b = pred == cls, truth == cls
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def bench_precision(args: argparse.Namespace) -> list[str]:
    from bench_training import cpu_description

    sup, lab, queries, source = precision_volumes(args.quick)
    classes = [int(c) for c in args.classes.split(",")] if args.classes != "1" else [1, 2, 3, 4]
    names = args.backbones.split(",") if args.backbones else ["chaos-ssl"]
    modes = ["fp32", "bf16", "bf16+cl", "bf16+cl+compile"]
    lines = [
        f"Machine: {cpu_description()}; {args.threads} threads, torch {torch.__version__}; "
        f"{source}, organs {classes}, batch {args.batch_size}.",
        "",
        "| model | mode | autocast dtype | volumes | s / volume | vs fp32 | first volume (s) "
        "| voxels = fp32 (worst volume) | mean Dice (%) |",
        "|" + " --- |" * 9,
    ]
    for name in names:
        vols = queries if name == "chaos-ssl" else queries[:1]
        reference: dict[str, np.ndarray] = {}
        base_time = None
        for mode in modes:
            kwargs = {"amp": mode != "fp32", "batch_size": args.batch_size}
            if name == "chaos-ssl":
                predictor = fss.SupportQueryPredictor.pretrained(name, **kwargs)
            else:
                torch.manual_seed(0)
                model = fss.ALPNet(backbone=name).eval()
                predictor = fss.SupportQueryPredictor(model, **kwargs)
            layout = torch.channels_last if "+cl" in mode else torch.contiguous_format
            predictor.model.to(memory_format=layout)
            if "+compile" in mode:
                predictor.model.encoder = torch.compile(predictor.model.encoder)
            # a predictor that knows its intensity recipe applies it to raw volumes itself
            raw = getattr(predictor, "modality", None) is not None
            prep = (lambda v: v) if raw else preprocess.mri
            s_img = prep(sup)
            start = time.perf_counter()  # warm-up (and compilation): the first volume
            predictor.segment_volume(s_img, lab, prep(vols[0][1]), classes=classes)
            first = time.perf_counter() - start
            seconds, agree, dice = [], [], []
            for q_id, q_img, q_lab in vols:
                start = time.perf_counter()
                out = predictor.segment_volume(s_img, lab, prep(q_img), classes=classes)
                seconds.append(time.perf_counter() - start)
                if mode == "fp32":
                    reference[q_id] = out
                agree.append(float((out == reference[q_id]).mean()))
                dice += [_dice(out, q_lab, c) for c in classes if (q_lab == c).any()]
            dtype = predictor_dtype(predictor)
            mean_s = float(np.mean(seconds))
            base_time = base_time or mean_s
            lines.append(
                f"| {name} | {mode} | {dtype} | {len(vols)} | {mean_s:.2f} | "
                f"{base_time / mean_s:.2f}x | {first:.1f} | {100 * min(agree):.2f} % | "
                f"{100 * np.mean(dice):.2f} |"
            )
            print(lines[-1], file=sys.stderr)
    return lines


def predictor_dtype(predictor: fss.SupportQueryPredictor) -> str:
    from fewshotseg.precision import autocast_dtype

    dtype = autocast_dtype(predictor.amp, predictor.device)
    return "fp32" if dtype is None else str(dtype).replace("torch.", "")


def memory_run(backbone: str, threads: int) -> float:
    """Peak RSS (MB) of segmenting a 200-slice volume, in this (fresh) process."""
    torch.set_num_threads(threads)
    sup, lab, qry, _ = volumes(quick=False)
    reps = int(np.ceil(200 / len(qry)))
    long = np.concatenate([qry] * reps)[:200]
    model = fss.ALPNet(backbone=backbone)
    predictor = fss.SupportQueryPredictor(model, batch_size=4)
    predictor.segment_volume(sup, lab, long, classes=[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--classes", default="1", help="organs, e.g. 1,2,3,4 (1 = liver)")
    parser.add_argument("--backbones", help="comma-separated (default: resnet18 and the paper's)")
    parser.add_argument("--out")
    parser.add_argument(
        "--precision", action="store_true", help="fp32 vs bf16 (vs bf16 + channels-last) instead"
    )
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        print(json.dumps({"peak_rss_mb": memory_run(args.memory, args.threads)}))
        return
    if args.precision:
        # a fresh inductor cache, so "first volume" includes the whole compilation
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))
        text = "\n".join(bench_precision(args))
        print(text)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(text + "\n")
        return

    sup, lab, qry, source = volumes(args.quick)
    names = ["tiny", "resnet18"] if args.quick else ["resnet18", "deeplabv3_resnet101"]
    if args.backbones:
        names = args.backbones.split(",")
    classes = [int(c) for c in args.classes.split(",")]
    lines = [
        f"Machine: {platform.machine()}, {args.threads} threads; {source}, {len(qry)} query "
        f"slices, 3 support slices per organ, organs {classes}, batch {args.batch_size}.",
        "",
        "| backbone | ours (s / volume) | baseline (s / volume) | speed-up | s / slice (ours) "
        "| peak RSS, 200 slices (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in names:
        torch.manual_seed(0)
        model = fss.ALPNet(backbone=name).eval()
        predictor = fss.SupportQueryPredictor(model, batch_size=args.batch_size)
        predictor.segment_volume(sup, lab, qry[:2], classes=classes)  # warm-up
        start = time.perf_counter()
        ours = predictor.segment_volume(sup, lab, qry, classes=classes)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = baseline(model, sup, lab, qry, classes)
        t_base = time.perf_counter() - start
        agree = float((ours == theirs).mean())
        if agree < 0.999:
            raise SystemExit(f"{name}: ours and the baseline disagree on {1 - agree:.2%} voxels")
        mem = "-"
        if not args.quick and classes == [1]:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--memory", name]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            mem = f"{json.loads(done.stdout.strip().splitlines()[-1])['peak_rss_mb']:.0f}"
        lines.append(
            f"| {name} | {t_ours:.2f} | {t_base:.2f} | {t_base / t_ours:.2f}x | "
            f"{t_ours / len(qry):.3f} | {mem} |"
        )
        print(lines[-1], file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
