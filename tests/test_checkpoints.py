"""Checkpoint files: content hash, bounds, non-finite weights, versions, unsafe and damaged files,
readable architecture mismatches."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from fewshotseg import ALPNet, SupportQueryPredictor
from fewshotseg.checkpoints import (
    CONTENT_HASH_KEY,
    content_hash,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from fewshotseg.training import TrainConfig, Trainer
from fewshotseg.weights import PRETRAINED, SHIPPED_DIR

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


def _checkpoint(**extra):
    torch.manual_seed(0)
    model = ALPNet(backbone="tiny", feature_dim=8)
    return {"model": model.state_dict(), "model_config": model.model_config, "step": 3,
            "image_size": 32, "modality": "mri", "version": "0.1.0", **extra}  # fmt: skip


def test_saved_checkpoints_carry_a_hash_that_is_checked(tmp_path):
    path = tmp_path / "a.pt"
    save_checkpoint(_checkpoint(), path)
    ckpt = load_checkpoint(path)
    assert ckpt[CONTENT_HASH_KEY] == content_hash(ckpt)
    # flip bytes inside the largest weight tensor's stored data: torch itself loads such a file
    weight = max(ckpt["model"].values(), key=lambda t: t.numel())
    raw = bytearray(path.read_bytes())
    start = raw.find(weight.numpy().tobytes()[:64])
    assert start > 0
    raw[start + 8 : start + 40] = bytes(b ^ 0xFF for b in raw[start + 8 : start + 40])
    path.write_bytes(bytes(raw))
    assert isinstance(torch.load(path, weights_only=True), dict)  # silently "fine" for torch
    with pytest.raises(ValueError, match="corrupt: its content hash"):
        load_checkpoint(path)


def test_content_hash_ignores_layout_and_key_order_but_not_values():
    a = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"x": 1, "y": [1, 2.5, None]}}
    transposed = torch.arange(6.0).reshape(2, 3).t().contiguous().t()  # same values, strided
    assert not transposed.is_contiguous()
    b = {"meta": {"y": [1, 2.5, None], "x": 1}, "w": transposed}
    assert content_hash(a) == content_hash(b)
    b["w"] = b["w"].clone()
    b["w"][0, 0] = 1e-30
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) != content_hash({**a, "meta": {"x": True, "y": [1, 2.5, None]}})


def test_old_checkpoints_without_a_hash_still_load(tmp_path):
    shipped = SHIPPED_DIR / PRETRAINED["chaos-ssl"]  # written before checkpoints had a hash
    if shipped.is_file():
        ckpt = load_checkpoint(shipped)
        assert CONTENT_HASH_KEY not in ckpt and "model" in ckpt
    path = tmp_path / "old.pt"
    torch.save(_checkpoint(), path)  # as fewshotseg 0.1 wrote them: no hash
    assert load_checkpoint(path)["step"] == 3
    assert SupportQueryPredictor.from_checkpoint(path).image_size == 32


def test_non_finite_weights_are_rejected(tmp_path):
    ckpt = _checkpoint()
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][key] = ckpt["model"][key].clone()
    ckpt["model"][key].view(-1)[0] = float("nan")
    save_checkpoint(ckpt, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=f"NaN or infinite weights.*{key}"):
        load_checkpoint(tmp_path / "nan.pt")


@pytest.mark.parametrize(
    "extra, culprit",
    [({"image_size": 20000}, "image_size=20000"), ({"image_size": "256"}, "image_size='256'"),
     ({"step": -1}, "step=-1"), ({"modality": "xray"}, "unknown intensity recipe 'xray'")],
)  # fmt: skip
def test_metadata_is_bounded(tmp_path, extra, culprit):
    save_checkpoint(_checkpoint(**extra), tmp_path / "m.pt")
    with pytest.raises(ValueError, match=culprit.replace("(", r"\(")) as err:
        load_checkpoint(tmp_path / "m.pt")
    assert "m.pt" in str(err.value)


def test_model_config_is_bounded(tmp_path):
    ckpt = _checkpoint()
    ckpt["model_config"] = {**ckpt["model_config"], "feature_dim": 10**9}
    save_checkpoint(ckpt, tmp_path / "big.pt")
    with pytest.raises(ValueError, match="feature_dim"):
        load_checkpoint(tmp_path / "big.pt")


def test_a_newer_version_warns(tmp_path):
    save_checkpoint(_checkpoint(version="99.0.0"), tmp_path / "new.pt")
    with pytest.warns(UserWarning, match="fewshotseg 99.0.0, newer than"):
        load_checkpoint(tmp_path / "new.pt")
    save_checkpoint(_checkpoint(version="0.0.1"), tmp_path / "old.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(tmp_path / "old.pt")


def test_an_architecture_mismatch_is_one_readable_sentence(tmp_path):
    save_checkpoint(_checkpoint(), tmp_path / "tiny8.pt")
    other = ALPNet(backbone="tiny", feature_dim=16)
    with pytest.raises(ValueError) as err:
        load_model_state(other, load_checkpoint(tmp_path / "tiny8.pt")["model"],
                         source="checkpoint 'tiny8.pt'")  # fmt: skip
    message = str(err.value)
    assert len(message) < 700 and "\n" not in message
    assert "tiny8.pt" in message and "shape mismatch" in message
    assert "8x" in message and "16x" in message  # the shapes in the file and the model
    # resuming a run folder with a model of another architecture says the same
    cfg = TrainConfig(iterations=1, progress=False, checkpoint_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    save_checkpoint(
        {**_checkpoint(), "optimizer": {}, "scheduler": {}, "config": cfg.to_dict()},
        tmp_path / "run" / "last.pt",
    )
    trainer = Trainer(other, sampler=None, config=cfg, device="cpu")
    with pytest.raises(ValueError, match="does not fit this model") as err:
        trainer.fit()
    assert len(str(err.value)) < 700


def test_empty_and_truncated_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(ValueError, match=r"empty\.pt.* is empty \(0 bytes\)"):
        load_checkpoint(empty)
    save_checkpoint(_checkpoint(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt.*truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_checkpoint_holding_code_is_refused_without_advice_to_run_it(tmp_path):
    torch.save({"model": _RunsCode(), "model_config": {}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(err.value)
    assert "evil.pt" in message and "holds code" in message
    assert "weights_only" not in message
    # the backbone-weights path reads through the same guard
    with pytest.raises(ValueError, match="holds code"):
        ALPNet(backbone="resnet18", backbone_weights=tmp_path / "evil.pt")


def test_predictor_rejects_a_bad_checkpoint_before_allocating(tmp_path):
    save_checkpoint(_checkpoint(image_size=20000), tmp_path / "huge.pt")
    with pytest.raises(ValueError, match="image_size=20000"):
        SupportQueryPredictor.from_checkpoint(tmp_path / "huge.pt")
    # a well-formed one predicts
    save_checkpoint(_checkpoint(), tmp_path / "ok.pt")
    predictor = SupportQueryPredictor.from_checkpoint(tmp_path / "ok.pt")
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    label = np.zeros((32, 32), np.int64)
    label[8:20, 8:20] = 1
    assert predictor.predict(image, label, image).shape == (32, 32)
