"""Shared test set-up: CHAOS data location and the CUDA skip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CHAOS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chaos_t2spir"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def chaos_dir() -> Path:
    """The CHAOS T2-SPIR folder beside the project; skips the test when it is absent."""
    if not (CHAOS_DIR / "image_1.nii.gz").is_file():
        pytest.skip(f"CHAOS data not found at {CHAOS_DIR}")
    return CHAOS_DIR
