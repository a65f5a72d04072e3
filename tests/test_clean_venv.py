"""``benchmarks/clean_venv.py``: a new user's commands (every ``--help``, every example with no
arguments, the demo) end without a traceback. Here they run with this interpreter; the script
itself builds the wheel into a fresh venv first."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "clean_venv.py"


@pytest.fixture(scope="module")
def clean_venv():
    spec = importlib.util.spec_from_file_location("clean_venv", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["clean_venv"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["clean_venv"]


@pytest.fixture(scope="module")
def every_check(clean_venv):
    return clean_venv.checks(sys.executable, fast=False)


def test_checks_cover_every_command_and_example(clean_venv, every_check):
    names = [c.name for c in every_check]
    for command in ("pseudolabel", "train", "predict", "evaluate", "demo"):
        assert f"{command} --help" in names
    assert "demo" in names
    examples = sorted(p.name for p in (SCRIPT.parents[1] / "examples").glob("*.py"))
    assert [n for n in names if n.endswith(".py")] == examples
    assert clean_venv.SLOW < set(names)


def test_a_traceback_fails_even_with_exit_status_0(clean_venv):
    code = "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.print_exc()"
    outcome = clean_venv.run_check(clean_venv.Check("t", [sys.executable, "-c", code]))
    assert not outcome.ok and "ZeroDivisionError" in outcome.why
    outcome = clean_venv.run_check(clean_venv.Check("x", [sys.executable, "-c", "exit(3)"]))
    assert not outcome.ok and outcome.why.startswith("exit 3")
    assert clean_venv.run_check(clean_venv.Check("ok", [sys.executable, "-c", "pass"])).ok


def test_every_help_runs_without_a_traceback(clean_venv, every_check):
    helps = [c for c in every_check if "--help" in c.name]
    assert len(helps) == 6
    with ThreadPoolExecutor(max_workers=3) as pool:  # mostly imports: overlap them
        outcomes = list(pool.map(clean_venv.run_check, helps))
    failed = [(o.check.name, o.why) for o in outcomes if not o.ok]
    assert not failed


@pytest.mark.slow  # tests/test_examples.py runs it in-process
def test_training_example_runs_bare(clean_venv, every_check):
    [check] = [c for c in every_check if c.name == "02_train.py"]
    outcome = clean_venv.run_check(check)
    assert outcome.ok, outcome.why


@pytest.mark.slow
def test_everything_runs_bare_in_this_environment(clean_venv, capsys):
    """The whole list: examples 00-04, the demo (several minutes on two busy cores)."""
    assert clean_venv.main(["--python", sys.executable]) == 0, capsys.readouterr().out
