"""Average the model weights of several checkpoints (checkpoint averaging).

Usage:
    python benchmarks/average_checkpoints.py OUT.pt step_015000.pt step_017500.pt step_020000.pt

Floating-point tensors (weights and BatchNorm statistics) are averaged in float64; integer
counters are taken from the last file. The result loads with
`SupportQueryPredictor.from_checkpoint` (model, its config and preprocessing; no optimizer).
"""

from __future__ import annotations

import argparse

from fewshotseg.checkpoints import load_checkpoint, save_checkpoint

KEPT = ("model_config", "image_size", "modality", "step", "version")


def average(paths: list[str]) -> dict:
    ckpts = [load_checkpoint(p) for p in paths]
    last = ckpts[-1]
    model = {}
    for name, value in last["model"].items():
        if value.is_floating_point():
            total = sum(c["model"][name].double() for c in ckpts)
            model[name] = (total / len(ckpts)).to(value.dtype)
        else:
            model[name] = value
    return {"model": model, **{k: last[k] for k in KEPT if k in last}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    save_checkpoint(average(args.checkpoints), args.out)
    print(f"averaged {len(args.checkpoints)} checkpoints -> {args.out}")


if __name__ == "__main__":
    main()
