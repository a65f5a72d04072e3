"""The documentation a new user reads: install commands that work, the site's docstring rewrite,
the README's test command equal to CI's, and (slow, with the [docs] extra) the strict build."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _fenced_commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_no_page_installs_from_a_package_index():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for command in _fenced_commands(page.read_text()):
            assert not re.search(r"pip install [\"']?fewshotseg\b", command), (page.name, command)


def test_readme_gives_the_cpu_only_torch_command():
    commands = _fenced_commands((REPO / "README.md").read_text())
    cpu = [c for c in commands if CPU_INDEX in c]
    assert cpu and all("torch torchvision" in c for c in cpu)
    assert CPU_INDEX in (REPO / "docs" / "index.md").read_text()


def test_readme_test_command_is_cis():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    [command] = [c for c in _fenced_commands(readme) if "pytest" in c]
    assert command in ci


def test_docs_extra_is_documented():
    assert '".[docs]"' in (REPO / "docs" / "index.md").read_text()
    assert "[docs]" in (REPO / "README.md").read_text()


# ------------------------------------------------------------ the site's docstring rewrite
@pytest.fixture(scope="module")
def site():
    griffe = pytest.importorskip("griffe", reason='the [docs] extra: pip install -e ".[docs]"')
    path = REPO / "docs" / "griffe_docstrings.py"
    spec = importlib.util.spec_from_file_location("griffe_docstrings", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    package = griffe.load("fewshotseg", search_paths=[str(REPO)])
    return module, package, griffe


def test_roles_become_cross_references_or_code(site):
    module, package, griffe = site
    fold = package["evaluation.evaluate_fold"]
    text = module.rewrite(fold, "see :func:`evaluate_pair` and :class:`fewshotseg.io.Volume`")
    assert text == (
        "see [`evaluate_pair`][fewshotseg.evaluation.evaluate_pair] and "
        "[`fewshotseg.io.Volume`][fewshotseg.io.Volume]"
    )
    # outside the package, private, or unknown: plain code, never a dangling link
    for role in (":func:`skimage.segmentation.slic`", ":meth:`_eval_mode`", ":func:`nowhere`"):
        name = role.split("`")[1]
        assert module.rewrite(fold, role) == f"`{name}`"


def test_example_sections_become_doctest_blocks(site):
    module, package, griffe = site
    doc = "Summary.\n\n    Example:\n        >>> 1\n        1\n"
    text = module.rewrite(package["metrics"], doc)
    assert "    Examples:\n" in text and "Example:\n" not in text.replace("Examples:", "")
    sections = griffe.Docstring(text, parser="google").parse()
    assert any(s.kind.value == "examples" for s in sections)


@pytest.mark.slow
def test_mkdocs_build_is_strict_clean(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip('mkdocs is not installed: pip install -e ".[docs]"')
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert ":func:" not in (tmp_path / "site" / "api" / "index.html").read_text()


# ----------------------------------------------------------------- the data tests' folder
def test_chaos_folder_comes_from_the_environment(tmp_path):
    from tests.conftest import CHAOS_ENV, DEFAULT_CHAOS_DIR, chaos_dir_from_env, chaos_skip_reason

    assert chaos_dir_from_env({CHAOS_ENV: str(tmp_path)}) == tmp_path
    assert chaos_dir_from_env({CHAOS_ENV: "  "}) == DEFAULT_CHAOS_DIR
    assert chaos_dir_from_env({}) == DEFAULT_CHAOS_DIR
    reason = chaos_skip_reason(tmp_path)  # an empty folder: the skip says where and what to set
    assert reason is not None and str(tmp_path) in reason and CHAOS_ENV in reason
    (tmp_path / "image_1.nii.gz").write_bytes(b"")
    assert chaos_skip_reason(tmp_path) is None


@pytest.mark.slow  # a pytest in a subprocess (half a minute on two busy cores)
def test_data_tests_run_on_a_folder_named_by_the_environment(tmp_path):
    """A subprocess with FEWSHOTSEG_CHAOS_DIR pointing at an empty folder: the data tests
    skip, and the -ra summary names the folder and the variable."""
    env = {**os.environ, "FEWSHOTSEG_CHAOS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(REPO / "tests" / "test_demo.py"), "-k", "equal_the_source_files"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "SKIPPED" in done.stdout and str(tmp_path) in done.stdout
    assert "FEWSHOTSEG_CHAOS_DIR" in done.stdout
