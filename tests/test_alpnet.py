"""ALPNet and the backbones: shapes, windows per mode, weights by path, no downloads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshotseg.models import AdaptiveLocalPrototypePool, ALPNet
from fewshotseg.models.alpnet import standardize
from fewshotseg.models.backbones import build_encoder, coco_weights_path


def episode(seed=0, b=1, s=1, n=1, size=64, channels=1):
    g = torch.Generator().manual_seed(seed)
    sup = torch.rand(b, s, channels, size, size, generator=g) * 1000
    masks = torch.zeros(b, s, n, size, size)
    for k in range(n):
        lo = 4 + 12 * k
        masks[:, :, k, lo : lo + 20, lo : lo + 24] = 1
    query = torch.rand(b, channels, size, size, generator=g) * 1000
    return sup, masks, query


def test_paper_backbone_feature_shape():
    net = ALPNet(backbone="deeplabv3_resnet101").eval()
    with torch.inference_mode():
        feats = net.encode(torch.randn(1, 1, 256, 256))
    assert feats.shape == (1, 256, 32, 32)


def test_light_backbone_feature_shape_and_size():
    net = ALPNet(backbone="resnet18").eval()
    with torch.inference_mode():
        feats = net.encode(torch.randn(2, 3, 64, 96))
    assert feats.shape == (2, 256, 8, 12)
    assert 2.5e6 < sum(p.numel() for p in net.parameters()) < 3.2e6


def test_deeplab_backbones_are_output_stride_8_without_aspp():
    encoder = build_encoder("deeplabv3_resnet50", feature_dim=32).eval()
    with torch.inference_mode():
        assert encoder(torch.randn(1, 3, 64, 64)).shape == (1, 32, 8, 8)
    assert not any("classifier" in k for k in encoder.state_dict())


def test_forward_shapes_n_way_k_shot():
    net = ALPNet(backbone="tiny", feature_dim=16).eval()
    sup, masks, query = episode(b=2, s=3, n=2)
    with torch.inference_mode():
        out = net(sup, masks, query)
    assert out.shape == (2, 3, 64, 64)
    assert torch.isfinite(out).all()


def test_sizes_not_multiple_of_8_are_padded_and_cropped():
    """61 x 59 inputs: each image z-scored, then zero-padded at the bottom and right to 64 x 64
    (the masks padded with background), and the top-left 61 x 59 of the upsampled logits
    returned. The same steps done here by hand around the backbone and the pooling give the
    same numbers; padding on another side, resizing instead, or cropping elsewhere does not."""
    net = ALPNet(backbone="tiny", feature_dim=16).eval()
    sup, masks, query = episode(size=64, n=2)
    sup, masks, query = sup[..., :61, :59], masks[..., :61, :59], query[..., :61, :59]
    pad = (0, 5, 0, 3)  # F.pad order: left, right, top, bottom

    def features(images):  # (B, 1, 61, 59) -> (B, F, 8, 8)
        return net.encoder(F.pad(standardize(images), pad).expand(-1, 3, -1, -1))

    with torch.inference_mode():
        out = net(sup, masks, query)
        protos = net.pool.prototypes(
            features(sup[:, 0])[:, None], F.pad(masks, pad), window_size=net.window
        )
        logits = F.interpolate(net.pool.classify(features(query), protos), size=(64, 64),
                               mode="bilinear", align_corners=False)  # fmt: skip
    assert out.shape == (1, 3, 61, 59)
    torch.testing.assert_close(out, logits[..., :61, :59])
    # the crop keeps what the padded grid computed for the real pixels: not the padded rows
    assert not torch.allclose(out, logits[..., 3:, 5:])


def test_intensity_units_do_not_matter():
    """Each image is z-scored inside the model: an affine intensity change is invisible."""
    net = ALPNet(backbone="tiny", feature_dim=16).eval()
    sup, masks, query = episode(seed=3)
    with torch.inference_mode():
        a = net(sup, masks, query)
        b = net(sup * 0.01 + 7.0, masks, query * 3.0 - 100.0)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_grayscale_equals_repeated_rgb():
    net = ALPNet(backbone="tiny", feature_dim=16).eval()
    sup, masks, query = episode(seed=4)
    with torch.inference_mode():
        gray = net(sup, masks, query)
        rgb = net(sup.repeat(1, 1, 3, 1, 1), masks, query.repeat(1, 3, 1, 1))
    torch.testing.assert_close(gray, rgb)


@pytest.mark.parametrize("training, window", [(True, 4), (False, 2)])
def test_window_follows_mode(training, window):
    net = ALPNet(backbone="tiny", feature_dim=16, train_window=4, test_window=2)
    net.train(training)
    torch.manual_seed(0)
    sup, masks, query = episode(seed=5, size=128)
    with torch.no_grad():
        logits, sup_feats, query_feats = net.forward_with_features(sup, masks, query)
        pool = AdaptiveLocalPrototypePool(window_size=window)
        expected = torch.nn.functional.interpolate(
            pool(sup_feats, masks, query_feats), size=(128, 128), mode="bilinear"
        )
    torch.testing.assert_close(logits, expected)


def test_one_backbone_call_for_support_and_query():
    net = ALPNet(backbone="tiny", feature_dim=16).eval()
    calls = []
    net.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    sup, masks, query = episode(b=2, s=3)
    with torch.inference_mode():
        net(sup, masks, query)
    assert calls == [2 * 3 + 2]


def test_weights_saved_and_loaded_by_path_reproduce_outputs(tmp_path):
    torch.manual_seed(1)
    net = ALPNet(backbone="resnet18").eval()
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    torch.manual_seed(2)
    loaded = ALPNet(backbone="resnet18", backbone_weights=path).eval()
    sup, masks, query = episode(seed=6)
    with torch.inference_mode():
        assert torch.equal(net(sup, masks, query), loaded(sup, masks, query))


def test_fewshotseg_checkpoint_dict_is_accepted(tmp_path):
    net = ALPNet(backbone="tiny", feature_dim=16)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "model_config": net.model_config}, path)
    loaded = ALPNet(backbone="tiny", feature_dim=16, backbone_weights=path)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, loaded.encoder.state_dict()[key])


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_torchvision_state_dict_loads_the_backbone(tmp_path, prefix):
    from torchvision.models import resnet18

    torch.manual_seed(3)
    tv_state = resnet18(weights=None).state_dict()  # includes fc.*, which is ignored
    path = tmp_path / "tv.pt"
    torch.save({prefix + k: v for k, v in tv_state.items()}, path)
    net = ALPNet(backbone="resnet18", backbone_weights=path)
    assert torch.equal(
        net.encoder.backbone.layer3[1].conv2.weight, tv_state["layer3.1.conv2.weight"]
    )


def test_mismatched_weights_raise(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(ALPNet(backbone="tiny", feature_dim=16).encoder.backbone.state_dict(), path)
    with pytest.raises(ValueError, match="does not match backbone"):
        ALPNet(backbone="resnet18", backbone_weights=path)


def test_coco_weights_missing_raise_naming_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = coco_weights_path("deeplabv3_resnet101")
    assert expected.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        ALPNet(backbone="deeplabv3_resnet101", backbone_weights="coco")
    assert expected.name in str(err.value) and str(expected.parent) in str(err.value)


def test_coco_weights_are_read_from_the_hub_cache(tmp_path, monkeypatch):
    """A file the test writes where torchvision's cache keeps the COCO weights is loaded."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(4)
    tv_model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21)
    path = coco_weights_path("deeplabv3_resnet50")
    path.parent.mkdir(parents=True)
    torch.save(tv_model.state_dict(), path)
    net = ALPNet(backbone="deeplabv3_resnet50", backbone_weights="coco")
    assert torch.equal(net.encoder.backbone.conv1.weight, tv_model.backbone.conv1.weight)


def test_model_config_rebuilds_the_architecture():
    net = ALPNet(
        backbone="tiny",
        feature_dim=24,
        pool=AdaptiveLocalPrototypePool(threshold=0.9, local=False),
        train_window=3,
        test_window=1,
    )
    rebuilt = ALPNet.from_config(net.model_config)
    assert rebuilt.model_config == net.model_config
    rebuilt.load_state_dict(net.state_dict())


def test_custom_backbone_module():
    body = torch.nn.Conv2d(3, 12, kernel_size=8, stride=8)
    net = ALPNet(backbone=body).eval()
    sup, masks, query = episode()
    with torch.inference_mode():
        assert net(sup, masks, query).shape == (1, 2, 64, 64)
    assert net.model_config["backbone"] is None


def test_bad_inputs_raise():
    net = ALPNet(backbone="tiny", feature_dim=16)
    sup, masks, query = episode()
    with pytest.raises(ValueError, match="unknown backbone"):
        ALPNet(backbone="vgg")
    with pytest.raises(TypeError):
        ALPNet(backbone=3)
    with pytest.raises(ValueError, match="support_images"):
        net(sup[0], masks, query)
    with pytest.raises(ValueError, match="support_masks"):
        net(sup, masks[..., :32], query)
    with pytest.raises(ValueError, match="query_images"):
        net(sup, masks, query[..., :32])
    with pytest.raises(ValueError, match="channels"):
        net(sup.repeat(1, 1, 2, 1, 1), masks, query.repeat(1, 2, 1, 1))
