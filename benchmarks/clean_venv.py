"""A new user's first hour, checked: a clean venv, the built wheel, every example with no
arguments, every command's ``--help`` and ``fewshotseg demo``; fails on any traceback.

    python benchmarks/clean_venv.py                 # build the wheel, fresh venv, CPU-only torch
    python benchmarks/clean_venv.py --torch-index default   # torch from pip's configured index
    python benchmarks/clean_venv.py --extras viz    # the wheel with an extra ("viz", "io,viz")
    python benchmarks/clean_venv.py --python .venv/bin/python   # no install: check this env
    python benchmarks/clean_venv.py --fast          # skip the minute-long steps (03, 04, demo)

Each check runs in its own empty working folder (examples write ``./fewshotseg-examples``, the
demo ``./fewshotseg-demo.png``), with ``MPLBACKEND=Agg``. Exit status 1 when any check exits
non-zero or prints ``Traceback``; a table of checks and their times is printed either way.
Installing needs the package registries (about 200 MB with the CPU-only torch).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
#: The examples whose bare run takes a minute or more on two busy cores.
SLOW = {"03_predict.py", "04_evaluate.py", "demo"}


@dataclass
class Check:
    name: str
    argv: list[str]
    timeout: float = 900


@dataclass
class Outcome:
    check: Check
    ok: bool
    seconds: float
    why: str = ""


def checks(python: str, *, fast: bool) -> list[Check]:
    """Every ``--help``, the demo and every example, as commands for ``python``."""
    out = [Check("fewshotseg --help", [python, "-m", "fewshotseg", "--help"])]
    commands = subprocess.run(
        [python, "-c", "import argparse; from fewshotseg.cli import build_parser; "
         "[sub] = [a for a in build_parser()._actions "
         "if isinstance(a, argparse._SubParsersAction)]; print(*sub.choices)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for command in commands:
        out.append(Check(f"{command} --help", [python, "-m", "fewshotseg", command, "--help"]))
    out.append(Check("demo", [python, "-m", "fewshotseg", "demo"]))
    for script in sorted((REPO / "examples").glob("*.py")):
        out.append(Check(script.name, [python, str(script)]))
    return [c for c in out if not (fast and c.name in SLOW)]


def run_check(check: Check) -> Outcome:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="fewshotseg-check-") as cwd:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                check.argv, cwd=cwd, env=env, capture_output=True, text=True,
                timeout=check.timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return Outcome(check, False, check.timeout, f"timed out after {check.timeout:.0f} s")
        seconds = time.perf_counter() - started
    text = done.stdout + done.stderr
    if "Traceback" in text:
        return Outcome(check, False, seconds, "traceback:\n" + text[-3000:])
    if done.returncode != 0:
        return Outcome(check, False, seconds, f"exit {done.returncode}:\n" + text[-3000:])
    return Outcome(check, True, seconds)


def make_venv(folder: Path, *, torch_index: str, extras: str) -> str:
    """A fresh venv with the freshly built wheel; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = str(folder / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    if torch_index != "default":  # torch first, from the CPU-only index (no CUDA libraries)
        subprocess.run([*pip, "torch", "torchvision", "--index-url", torch_index], check=True)
    wheels = folder / "wheels"
    subprocess.run(
        [python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
    )
    [wheel] = wheels.glob("fewshotseg-*.whl")
    subprocess.run([*pip, f"{wheel}[{extras}]" if extras else str(wheel)], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="check this interpreter's environment; install nothing")
    parser.add_argument("--venv", type=Path, help="where to make the venv (default: a temp dir)")
    parser.add_argument("--torch-index", default=CPU_TORCH_INDEX,
                        help=f"index for torch/torchvision (default {CPU_TORCH_INDEX}; "
                        "'default': pip's configured index, e.g. PyPI or a mirror)")  # fmt: skip
    parser.add_argument("--extras", default="", help="extras of the wheel, e.g. viz or io,viz")
    parser.add_argument("--fast", action="store_true", help=f"skip {', '.join(sorted(SLOW))}")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fewshotseg-venv-") as scratch:
        if args.python:
            python = str(Path(args.python).absolute())  # the checks run in other folders
        else:
            folder = args.venv or Path(scratch) / "venv"
            started = time.perf_counter()
            python = make_venv(folder, torch_index=args.torch_index, extras=args.extras)
            print(f"venv {folder} with the wheel in {time.perf_counter() - started:.0f} s")
        outcomes = []
        for check in checks(python, fast=args.fast):
            outcome = run_check(check)
            print(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.seconds:6.1f} s  {check.name}",
                  flush=True)  # fmt: skip
            if not outcome.ok:
                print("     " + outcome.why.replace("\n", "\n     "))
            outcomes.append(outcome)
    failed = [o.check.name for o in outcomes if not o.ok]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} checks passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
