"""The ``fewshotseg`` argument parser: shared option groups, then one builder per subcommand.

The training flags are generated from `fewshotseg.TrainConfig` (one per field, help text from
its docstring), so the command line and the library cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any, NoReturn

from fewshotseg._version import __version__
from fewshotseg.cli import _commands as commands
from fewshotseg.io import PSEUDOLABEL_TAG

_MODALITIES = ("mri", "ct", "none")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the way to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"fewshotseg: error: {message} (see '{self.prog} --help')\n")


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of a Google-style docstring."""
    docs: dict[str, str] = {}
    names: list[str] = []
    in_attrs = False
    for line in (cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        match = re.match(r"^ {8}([a-z_][a-z0-9_, ]*):\s*(.*)$", line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for n in names:
                docs[n] = match.group(2).strip()
        elif line.startswith(" " * 12) and names:
            for n in names:
                docs[n] += " " + stripped
        elif stripped:
            break
    return docs


def _amp_value(text: str) -> bool | str:
    """``--amp`` values: auto, on/true/1, off/false/0."""
    value = {"auto": "auto", "on": True, "true": True, "1": True, "off": False, "false": False,
             "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return value


def _add_inference_amp_flags(parser: argparse.ArgumentParser) -> None:
    """``--amp`` (on), ``--amp auto``, ``--no-amp`` (the default) for the predictor."""
    parser.add_argument(
        "--amp",
        nargs="?",
        const=True,
        type=_amp_value,
        default=False,
        metavar="auto",
        help="mixed precision: bf16 on a CPU that runs it natively (AVX512-BF16, AMX) and on "
        "CUDA; 'auto' is silent where it is not available (default: off, float32)",
    )
    parser.add_argument("--no-amp", dest="amp", action="store_false", help=argparse.SUPPRESS)


def _add_train_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, generated from the dataclass so they cannot drift.

    Every flag defaults to None, meaning "the preset's value"."""
    from fewshotseg.training import TrainConfig

    group = parser.add_argument_group(
        "training settings (fewshotseg.TrainConfig; default: the --preset's value)"
    )
    hints = typing.get_type_hints(TrainConfig)
    docs = _field_docs(TrainConfig)
    paper, cpu = TrainConfig(), TrainConfig.cpu_preset()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        p_val, c_val = getattr(paper, f.name), getattr(cpu, f.name)
        default = f"paper: {p_val}" + ("" if c_val == p_val else f", cpu: {c_val}")
        text = f"{docs.get(f.name, f.name)} ({default})".replace("%", "%%")
        if f.name == "amp":  # True, False or "auto": --amp, --amp auto, --no-amp
            group.add_argument(flag, nargs="?", const=True, type=_amp_value, default=None,
                               metavar="auto", help=text)
            group.add_argument("--no-amp", dest="amp", action="store_false", help=argparse.SUPPRESS)
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind in (int, float):
            group.add_argument(
                flag, type=kind, default=None, metavar=kind.__name__.upper(), help=text
            )
        else:
            group.add_argument(
                flag, type=str, default=None, metavar=f.name.split("_")[-1].upper(), help=text
            )


def _add_fold_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--fold",
        type=int,
        default=None,
        help="keep only this fold's training scans: the scans are cut into --folds folds by "
        "id (image_N -> N) exactly as 'evaluate --data' does, and the fold's queries and "
        "support are left out",
    )
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument(
        "--exclude", nargs="+", metavar="ID", help="leave out these scans (ids or file names)"
    )
    p.add_argument(
        "--show-split",
        action="store_true",
        help="print which scans --fold/--exclude keep and leave out, then stop",
    )


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """The option groups that several subcommands take as ``parents``: ``common`` (--debug,
    --quiet), ``scans_opts`` (--axis) and ``model_opts`` (which model, where, how)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    common.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    scans_opts = argparse.ArgumentParser(add_help=False)
    scans_opts.add_argument(
        "--axis",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="file axis (NIfTI order) to slice along (default 2, axial)",
    )
    model_opts = argparse.ArgumentParser(add_help=False)
    source = model_opts.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint",
        metavar="PATH",
        action="append",
        help="a checkpoint file, or a folder holding last.pt; repeat it to average several "
        "models' probabilities (an ensemble: fewshotseg.PredictorEnsemble)",
    )
    source.add_argument(
        "--pretrained",
        metavar="NAME",
        default=None,
        help="a model shipped with the package (e.g. chaos-ssl)",
    )
    model_opts.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    model_opts.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="network input size (default: the checkpoint's)",
    )
    model_opts.add_argument(
        "--modality",
        choices=_MODALITIES,
        default=None,
        help="intensity recipe (default: the checkpoint's, else mri)",
    )
    _add_inference_amp_flags(model_opts)
    return {"common": common, "scans_opts": scans_opts, "model_opts": model_opts}


def _add_pseudolabel(sub: Any, shared: dict[str, argparse.ArgumentParser]) -> None:
    """``fewshotseg pseudolabel``: scans -> superpixel pseudolabel files."""
    p = sub.add_parser(
        "pseudolabel",
        parents=[shared["common"], shared["scans_opts"]],
        help="scans -> superpixel pseudolabel files",
        description="Compute superpixel pseudolabels of unlabeled scans and write them next to "
        "each scan (image_1.nii.gz -> image_1.superpixels.nii.gz) or into --out-dir. Each scan's "
        "line says how much of it the body mask covers; a scan whose mask looks wrong gets a "
        "warning.",
    )
    p.add_argument("scans", nargs="+", help="scan files, DICOM folders or glob patterns")
    p.add_argument(
        "--mode",
        choices=("2d", "3d"),
        default="2d",
        help="2d: Felzenszwalb per slice (the paper's); 3d: supervoxels",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--min-size", type=int, help="granularity (default 400 px in 2d, 5000 in 3d)")
    p.add_argument("--scale", type=float, help="2d only: Felzenszwalb scale (default 10)")
    p.add_argument("--sigma", type=float, help="smoothing (default 0.8 px in 2d, 1 mm in 3d)")
    p.add_argument(
        "--body-threshold",
        type=float,
        help="intensity above which a voxel may be body, in the scans' units (e.g. -500 for "
        "CT in HU; default: automatic, a few noise sigmas above the background)",
    )
    p.add_argument("--out-dir", help="write here instead of next to the scans")
    p.add_argument("--tag", default=PSEUDOLABEL_TAG, help=argparse.SUPPRESS)
    p.add_argument("--overwrite", action="store_true", help="recompute existing files")
    _add_fold_flags(p)
    p.set_defaults(func=commands.cmd_pseudolabel)


def _add_episode_flags(p: argparse.ArgumentParser) -> None:
    """``fewshotseg train``'s flags for what its episodes are made of: size, intensities,
    augmentation, setting 2's exclusions."""
    p.add_argument("--image-size", type=int, default=None, help="episode size (default 256)")
    p.add_argument(
        "--min-foreground",
        type=int,
        default=100,
        help="smallest superpixel (pixels at --image-size) used as foreground",
    )
    p.add_argument("--no-augment", action="store_true", help="no random transform of the query")
    p.add_argument(
        "--bias-field",
        type=float,
        default=None,
        metavar="LOG_GAIN",
        help="largest log-gain of the smooth intensity field that augments every image "
        "(default: 0.5 for --modality mri, 0 for ct and none; 0 switches it off)",
    )
    p.add_argument(
        "--modality",
        choices=_MODALITIES,
        default=None,
        help="intensity recipe applied to every scan (default mri)",
    )
    p.add_argument(
        "--exclude-classes",
        type=int,
        nargs="+",
        metavar="C",
        help="setting 2: drop every slice that holds one of these label values",
    )
    p.add_argument(
        "--exclude-labels",
        nargs="+",
        metavar="PATH",
        help="label files saying where --exclude-classes are, one per scan",
    )


def _add_train(sub: Any, shared: dict[str, argparse.ArgumentParser]) -> None:
    """``fewshotseg train``: scans [+ pseudolabels] -> a checkpoint folder."""
    p = sub.add_parser(
        "train",
        parents=[shared["common"], shared["scans_opts"]],
        help="scans [+ pseudolabels] -> checkpoint (resumable)",
        description="Self-supervised training on superpixel episodes. Rerunning with the same "
        "--checkpoint-dir resumes (raise --iterations to train longer). Under torchrun each "
        "process trains on its own episode stream (DistributedDataParallel).",
    )
    p.add_argument("scans", nargs="+", help="scan files, DICOM folders or glob patterns")
    p.add_argument(
        "--pseudolabels",
        nargs="+",
        metavar="PATH",
        help="pseudolabel files, one per scan in the same order (default: found next "
        "to the scans or in --pseudolabel-dir, else computed now)",
    )
    p.add_argument("--pseudolabel-dir", help="folder of 'fewshotseg pseudolabel --out-dir'")
    _add_fold_flags(p)
    p.add_argument(
        "--mode",
        choices=("2d", "3d"),
        default="2d",
        help="pseudolabel mode when they are computed now",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for computing pseudolabels")
    p.add_argument(
        "--preset",
        choices=("cpu", "paper"),
        default="cpu",
        help="cpu: resnet18, 6250 steps of 4 episodes (1-2 h on 2 cores depending on the CPU; "
        "the log gives the measured time per step and an ETA after 5 steps); paper: "
        "deeplabv3_resnet101, 100k steps (a GPU; add --backbone-weights coco as the "
        "paper did). Default cpu",
    )
    p.add_argument(
        "--backbone",
        help="resnet18, deeplabv3_resnet50, deeplabv3_resnet101, tiny (default: the preset's)",
    )
    p.add_argument(
        "--backbone-weights",
        metavar="coco|PATH",
        help="coco (from the torch hub cache, never downloaded) or a weights file",
    )
    p.add_argument("--feature-dim", type=int, default=256, help="feature channels (default 256)")
    p.add_argument(
        "--no-local", action="store_true", help="class-level prototypes only (the PANet ablation)"
    )
    _add_episode_flags(p)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    _add_train_config_flags(p)
    p.set_defaults(func=commands.cmd_train)


def _add_predict(sub: Any, shared: dict[str, argparse.ArgumentParser]) -> None:
    """``fewshotseg predict``: support scan + labels + query -> label file."""
    p = sub.add_parser(
        "predict",
        parents=[shared["common"], shared["scans_opts"], shared["model_opts"]],
        help="support image + label + query -> label file",
        description="Segment a query scan from a labelled support scan, no query labels needed "
        "(SupportQueryPredictor.segment_volume): the query's slices are aligned with the "
        "support's by anatomy, each organ is segmented only where the alignment puts it, with "
        "its nearest support slices, and kept as its largest 3D component.",
    )
    p.add_argument("support", help="support scan")
    p.add_argument("support_label", help="its label file")
    p.add_argument("query", help="query scan")
    p.add_argument(
        "--add-support",
        nargs=2,
        action="append",
        default=[],
        metavar=("SCAN", "LABEL"),
        help="another labelled support scan (repeat for more): the supports vote on where each "
        "organ lies in the query and average their probabilities, so one scan's unusual "
        "anatomy matters far less (on CHAOS, five folds: 70.3 Dice with 1 scan, 78.9 with 3; "
        "docs/results.md)",
    )
    p.add_argument("-o", "--out", help="label file to write (default: QUERY.prediction.<suffix>)")
    p.add_argument(
        "--overlay",
        metavar="PNG",
        help="also write an overlay PNG: four query slices chosen by where each class was "
        "segmented (the support-matched range): one holding every organ where their ranges "
        "overlap, the rest spread over the ranges; organs named by --class-names or --dataset",
    )
    p.add_argument(
        "--class-names",
        nargs="+",
        metavar="VALUE=NAME",
        help="names for the overlay's legend, e.g. 1=liver 4=spleen",
    )
    p.add_argument(
        "--dataset",
        choices=("chaos_t2spir", "synapse_ct", "mscmrseg_bssfp"),
        help="take the class names from one of the paper's datasets (and warn when its "
        "modality differs from the model's)",
    )
    p.add_argument(
        "--classes",
        type=int,
        nargs="+",
        metavar="C",
        help="label values to segment (default: all in the support label)",
    )
    p.add_argument(
        "--support-slices",
        type=int,
        nargs="+",
        metavar="Z",
        help="use these support slices together for every query slice instead",
    )
    p.set_defaults(func=commands.cmd_predict)


def _add_evaluate(sub: Any, shared: dict[str, argparse.ArgumentParser]) -> None:
    """``fewshotseg evaluate``: model + labelled scans -> Dice table."""
    p = sub.add_parser(
        "evaluate",
        parents=[shared["common"], shared["scans_opts"], shared["model_opts"]],
        help="checkpoint + labelled scans -> Dice table",
        description="Score a model with the few-shot protocol: on a fold of an image_N/label_N "
        "folder (--data), or on --images/--labels where the first pair is the support (the "
        "first N with --supports N).",
    )
    p.add_argument("--data", help="folder in the image_N / label_N layout (e.g. CHAOS)")
    p.add_argument("--fold", type=int, default=0, help="fold index (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--images", nargs="+", help="scans; the first is the support (--supports)")
    p.add_argument("--labels", nargs="+", help="their label files, same order")
    p.add_argument(
        "--dataset",
        choices=("chaos_t2spir", "synapse_ct", "mscmrseg_bssfp"),
        help="class names and evaluated classes of one of the paper's datasets",
    )
    p.add_argument("--classes", type=int, nargs="+", metavar="C", help="label values to score")
    p.add_argument(
        "--protocol",
        choices=("paper", "whole_volume", "realistic"),
        default="paper",
        help="paper: the query's labels pick the scored slices and support chunks (the paper's "
        "tables); whole_volume: every slice scored, chunks still from the query's labels; "
        "realistic: segment_volume with no query labels, every slice scored (what a user gets)",
    )
    p.add_argument(
        "--setting",
        type=int,
        choices=(1, 2),
        default=1,
        help="the paper's setting: 1 (default; training may have seen the test organs) or 2 "
        "(the model was trained with --exclude-classes of one group; scores that group only, "
        "needs --group)",
    )
    p.add_argument(
        "--group",
        choices=("upper", "lower"),
        help="with --setting 2: the test group (upper: liver + spleen, lower: kidneys)",
    )
    p.add_argument(
        "--ways",
        choices=("1", "all"),
        default="1",
        help="1 (the paper's, one class per pass) or all (N-way)",
    )
    p.add_argument(
        "--supports",
        type=int,
        default=1,
        metavar="N",
        help="labelled support scans (default 1; more needs --protocol realistic): with --data "
        "the fold's support and the scans after it in its group (training scans, whose labels "
        "training never reads); with --images the first N pairs",
    )
    p.add_argument("--out", help="write the rows to a .csv or .json file")
    p.set_defaults(func=commands.cmd_evaluate)


def _add_demo(sub: Any, shared: dict[str, argparse.ArgumentParser]) -> None:
    """``fewshotseg demo``: the shipped model on the shipped scans."""
    p = sub.add_parser(
        "demo",
        parents=[shared["common"]],
        help="the shipped model on the shipped CHAOS scans (the main job)",
        description="Segment liver, kidneys and spleen of CHAOS patient 2 from support patient "
        "8 (shipped with the package), with the paper's protocol; print the Dice per organ and "
        "the time, and write an overlay PNG.",
    )
    p.add_argument(
        "--data",
        help="a CHAOS-layout folder: fold --fold of it (support 8, queries 1, 2, 3, 5 for fold 0)",
    )
    p.add_argument(
        "--fold", type=int, default=None, help="with --data: which fold (0-4, default 0)"
    )
    p.add_argument("--checkpoint", metavar="PATH", help="your own checkpoint instead")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument(
        "--protocol",
        choices=("paper", "whole_volume"),
        default="paper",
        help="paper (default): the query's labels pick the scored slices, as in the paper's "
        "tables; whole_volume: every slice segmented and scored",
    )
    p.add_argument(
        "--out",
        default="fewshotseg-demo.png",
        help="overlay PNG to write (default fewshotseg-demo.png)",
    )
    p.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--modality", choices=_MODALITIES, default=None, help=argparse.SUPPRESS)
    _add_inference_amp_flags(p)
    p.set_defaults(func=commands.cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``fewshotseg`` argument parser with its five subcommands."""
    parser = _Parser(
        prog="fewshotseg",
        description="Few-shot medical image segmentation trained without annotations (SSL-ALPNet).",
        epilog="Run 'fewshotseg demo' first; 'fewshotseg COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"fewshotseg {__version__}")
    shared = _shared_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_pseudolabel, _add_train, _add_predict, _add_evaluate, _add_demo):
        add(sub, shared)
    return parser
