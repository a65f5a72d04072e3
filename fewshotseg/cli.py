"""Command line: ``fewshotseg ...`` / ``python -m fewshotseg ...``."""

from __future__ import annotations

import argparse

from fewshotseg._version import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewshotseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fewshotseg {__version__}")
    parser.parse_args(argv)
    return 0
