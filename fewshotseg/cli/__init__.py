"""Command line: ``fewshotseg ...`` / ``python -m fewshotseg ...``.

Subcommands (each has ``--help``):

- ``pseudolabel``: scans -> superpixel pseudolabel files next to them (or in ``--out-dir``);
- ``train``: scans [+ pseudolabels] -> a checkpoint folder (resumable; works under ``torchrun``);
- ``predict``: support image + support label + query -> label file (+ PNG overlay);
- ``evaluate``: checkpoint + labelled scans -> Dice table (printed, and CSV/JSON with ``--out``);
- ``demo``: the main job: the shipped model on the shipped CHAOS scans, paper protocol.

Every scan goes through the same intensity recipe (``--modality``, default ``mri``: clip the
top 0.5 %, z-score), in training and at prediction; ``train`` records it in the checkpoint and
``predict``/``evaluate`` reuse it. Pseudolabels are computed on the raw scans (the labeler
normalises by itself). Errors print one line, ``fewshotseg: error: ...``, and exit with status 1
(2 for bad arguments); ``--debug`` shows the traceback instead.

The package: ``_parser`` builds the argument parser, ``_commands`` holds one handler per
subcommand, ``_common`` what several of them share; this module runs them (:func:`main`): logging,
warnings as log lines, errors as one line, Ctrl-C and SIGTERM as exit statuses.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from fewshotseg.cli._common import CLIError, expand_paths  # noqa: F401 (expand_paths: was here)
from fewshotseg.cli._parser import build_parser

__all__ = ["CLIError", "build_parser", "main"]

logger = logging.getLogger("fewshotseg")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Through ``tqdm.write``: an active progress bar is cleared and redrawn below the line
        instead of the line running into it."""
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` for the command line: one log line, no source line."""
    logger.warning("warning: %s", message)


def _setup_logging(args: argparse.Namespace) -> tuple[int, logging.Handler]:
    """Route the library's log records to stderr; returns what to undo afterwards."""
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    previous = logger.level
    logger.setLevel(level)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return previous, handler


def _resume_hint(args: argparse.Namespace) -> str:
    """Where an interrupted run's checkpoint is and how to go on."""
    folder = getattr(args, "checkpoint_dir", None)
    if folder is None:
        return "checkpoint saved, rerun to resume"
    return (
        f"checkpoint saved in {Path(folder) / 'last.pt'}; resume with the same command "
        "(it continues from there)"
    )


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(
        err,
        (
            CLIError,
            FileNotFoundError,
            ValueError,
            TypeError,
            ImportError,
            FileExistsError,
            PermissionError,
        ),
    ):
        return text
    return f"{type(err).__name__}: {text}"


def _subcommand_parser(parser: argparse.ArgumentParser, command: str | None) -> Any:
    """The parser of ``command`` (``fewshotseg COMMAND``), else ``parser`` itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the subcommand, whose --help lists its flags
        _subcommand_parser(parser, args.command).error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    if args.command is None:
        parser.print_help()
        return 2
    previous, handler = _setup_logging(args)
    try:
        with warnings.catch_warnings():  # library warnings become log lines (restored after)
            warnings.showwarning = _log_warning
            return int(args.func(args))
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signal_number", None)  # training.TrainingInterrupted
        if signum is None:
            print("fewshotseg: interrupted", file=sys.stderr)
            return 130
        print(f"fewshotseg: {stop}; {_resume_hint(args)}", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        if args.debug:
            raise
        print(f"fewshotseg: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:  # leave the library's logger as it was (main may run inside another program)
        logger.removeHandler(handler)
        logger.setLevel(previous)

