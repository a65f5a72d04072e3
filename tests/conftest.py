"""Shared test set-up: CHAOS data location and the CUDA skip.

The CHAOS T2-SPIR folder (``image_N.nii.gz`` / ``label_N.nii.gz``) is ``$FEWSHOTSEG_CHAOS_DIR``
when set, else ``../shared/data/chaos_t2spir`` beside the repository, defined here only. Tests
that need it take the ``chaos_dir`` fixture, are marked ``data`` and skip with the path they
looked in (``-ra`` prints the reasons).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: The environment variable naming the CHAOS T2-SPIR folder for the ``data`` tests.
CHAOS_ENV = "FEWSHOTSEG_CHAOS_DIR"
DEFAULT_CHAOS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chaos_t2spir"


def chaos_dir_from_env(environ: dict[str, str] | os._Environ = os.environ) -> Path:
    """``$FEWSHOTSEG_CHAOS_DIR`` (``~`` expanded) if set and not empty, else the default."""
    value = environ.get(CHAOS_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_CHAOS_DIR


CHAOS_DIR = chaos_dir_from_env()


def chaos_skip_reason(folder: Path = CHAOS_DIR) -> str | None:
    """Why the ``data`` tests cannot run (None when they can)."""
    if (folder / "image_1.nii.gz").is_file():
        return None
    return (
        f"CHAOS T2-SPIR data not found at {folder} (no image_1.nii.gz); set {CHAOS_ENV} "
        "to the folder to run the data tests"
    )


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def chaos_dir() -> Path:
    """The CHAOS T2-SPIR folder (``$FEWSHOTSEG_CHAOS_DIR`` or the default); skips when absent."""
    reason = chaos_skip_reason(CHAOS_DIR)
    if reason is not None:
        pytest.skip(reason)
    return CHAOS_DIR


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny tensors on two shared cores run far faster without
    intra-op threads (oversubscription). Test modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
