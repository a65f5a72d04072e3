"""The built wheel carries the typing marker, the demo data and the CLI entry point."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fewshotseg

ROOT = Path(__file__).resolve().parents[1]


def missing_build_requirements() -> list[str]:
    """What ``pip wheel --no-build-isolation`` needs in this environment and lacks: setuptools
    and a ``bdist_wheel`` (setuptools' own since 70.1, else the ``wheel`` package). Without
    them the wheel cannot be built here, which is a skip; any other build failure fails."""
    if importlib.util.find_spec("setuptools") is None:
        return ["setuptools>=64", "wheel"]
    if importlib.util.find_spec("setuptools.command.bdist_wheel") is None:
        if importlib.util.find_spec("wheel") is None:
            return ["wheel"]
    return []


def source_copy(dest: Path) -> Path:
    """What the wheel is built from: pyproject.toml, README, LICENSE and the package, copied so
    that the build cannot reuse a stale ``build/`` folder of the checkout (a module deleted in
    the source would still be shipped) or write one into it."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "fewshotseg", dest / "fewshotseg", ignore=ignore)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    missing = missing_build_requirements()
    if missing:
        pytest.skip(f"cannot build without isolation here: pip install {' '.join(missing)}")
    out = tmp_path_factory.mktemp("wheel")
    source = source_copy(tmp_path_factory.mktemp("source") / "fewshotseg-src")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
           "-w", str(out), str(source)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("fewshotseg-*.whl")
    return path


def test_wheel_carries_typing_marker_and_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fewshotseg/py.typed" in names
    assert "fewshotseg/data/chaos_demo.npz" in names
    assert "fewshotseg/data/ATTRIBUTION.md" in names
    shipped = ROOT / "fewshotseg" / "data" / "chaos_ssl.pt"
    if shipped.is_file():
        assert "fewshotseg/data/chaos_ssl.pt" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


def test_wheel_ships_exactly_the_source_modules(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if n.startswith("fewshotseg/") and n.endswith(".py")}
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fewshotseg").rglob("*.py")}
    assert shipped == source


def test_wheel_declares_console_script_and_version(wheel):
    zf = zipfile.ZipFile(wheel)
    dist = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "fewshotseg = fewshotseg.cli:main" in zf.read(dist).decode()
    assert f"fewshotseg-{fewshotseg.__version__}" in wheel.name


def test_module_version_flag():
    done = subprocess.run(
        [sys.executable, "-m", "fewshotseg", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    assert fewshotseg.__version__ in done.stdout
