"""Tests for fewshotseg.weights: the shipped models and the preprocessing a checkpoint carries,
applied by whoever loads it (the predictor, the command line) after reading the file once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

import fewshotseg.checkpoints as checkpoints
from fewshotseg import inference, weights
from fewshotseg.cli import _common
from fewshotseg.inference import SupportQueryPredictor
from fewshotseg.models import ALPNet
from fewshotseg.weights import Preprocessing, preprocessing, pretrained_path

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture
def ct_checkpoint(tmp_path) -> Path:
    """A tiny untrained model saved as a checkpoint that carries image_size 32 and the CT
    recipe."""
    torch.manual_seed(0)
    model = ALPNet(backbone="tiny", feature_dim=8)
    path = tmp_path / "ct.pt"
    checkpoints.save_checkpoint(
        {"model": model.state_dict(), "model_config": model.model_config, "image_size": 32,
         "modality": "ct"},
        path,
    )  # fmt: skip
    return path


def test_the_registry_has_one_home():
    assert inference.PRETRAINED is weights.PRETRAINED  # the old name, the same dict
    assert pretrained_path("chaos-ssl") == weights.SHIPPED_DIR / "chaos_ssl.pt"
    with pytest.raises(ValueError, match=r"unknown pretrained model 'nope'.*chaos-ssl"):
        pretrained_path("nope")
    with pytest.raises(ValueError, match="unknown pretrained model"):
        SupportQueryPredictor.pretrained("nope")


def test_a_build_without_the_file_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'chaos_ssl.pt' are not in .*does not ship"):
        pretrained_path("chaos-ssl")
    with pytest.raises(FileNotFoundError, match="does not ship"):
        SupportQueryPredictor.pretrained("chaos-ssl")


def test_preprocessing_reads_what_the_checkpoint_says():
    assert preprocessing({"image_size": 64, "modality": "ct"}) == Preprocessing(64, "ct")
    assert preprocessing({}) == Preprocessing(None, None)  # an older file says nothing
    shipped = checkpoints.load_checkpoint(pretrained_path("chaos-ssl"))
    assert preprocessing(shipped) == Preprocessing(256, "mri")


def test_the_loaders_apply_the_checkpoints_preprocessing(ct_checkpoint):
    predictor = SupportQueryPredictor.from_checkpoint(ct_checkpoint)
    assert (predictor.image_size, predictor.modality) == (32, "ct")
    chosen = SupportQueryPredictor.from_checkpoint(ct_checkpoint, image_size=48, modality="none")
    assert (chosen.image_size, chosen.modality) == (48, "none")  # the caller's word wins
    shipped = SupportQueryPredictor.pretrained("chaos-ssl")
    assert (shipped.image_size, shipped.modality) == (256, "mri")


def _args(checkpoint: Path | None, **kw) -> argparse.Namespace:
    base = {"device": "cpu", "image_size": None, "checkpoint": checkpoint and str(checkpoint),
            "pretrained": None, "modality": None, "amp": False}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_the_command_line_reads_a_checkpoint_once(ct_checkpoint, monkeypatch):
    reads = []
    read = checkpoints.read_torch_file  # under load_checkpoint, whatever name it is called by

    def counted(path, **kwargs):
        reads.append(Path(path))
        return read(path, **kwargs)

    monkeypatch.setattr(checkpoints, "read_torch_file", counted)
    predictor, modality = _common._load_predictor(_args(ct_checkpoint))
    assert reads == [ct_checkpoint]
    assert modality == predictor.modality == "ct" and predictor.image_size == 32
    reads.clear()
    with pytest.warns(UserWarning, match="trained with the ct intensity recipe"):
        predictor, modality = _common._load_predictor(_args(ct_checkpoint, modality="mri"))
    assert reads == [ct_checkpoint] and modality == predictor.modality == "mri"
    reads.clear()
    predictor, modality = _common._load_predictor(_args(None, pretrained="chaos-ssl"))
    assert reads == [pretrained_path("chaos-ssl")] and modality == "mri"


def test_the_command_line_names_unknown_and_missing_shipped_models(monkeypatch, tmp_path):
    with pytest.raises(_common.CLIError, match="unknown pretrained model 'nope'"):
        _common._load_predictor(_args(None, pretrained="nope"))
    monkeypatch.setattr(weights, "SHIPPED_DIR", tmp_path)
    with pytest.raises(_common.CLIError, match="not shipped with this installation"):
        _common._load_predictor(_args(None, pretrained="chaos-ssl"))
