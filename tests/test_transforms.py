"""Properties of the paired transforms: identity, label values, batching, scale, gamma, replay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter

from fewshotseg.transforms import (
    AugmentConfig,
    TransformParams,
    apply_bias_field,
    apply_gamma,
    apply_geometry,
    apply_intensity,
    apply_params,
    gaussian_smooth,
    sample_params,
    sampling_grid,
)

SIZES = st.tuples(st.integers(4, 40), st.integers(4, 40))

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (large on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disk(h: int, w: int, radius: float, batch: int = 1) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) < radius**2
    return inside.float()[None, None].repeat(batch, 1, 1, 1)


# ---------------------------------------------------------------- config
def test_config_defaults_are_the_reference():
    c = AugmentConfig()
    assert (c.rotation, c.shift, c.shear) == (5.0, 5.0, 5.0)
    assert c.scale == (0.9, 1.2) and c.gamma == (0.5, 1.5)
    assert (c.elastic_alpha, c.elastic_sigma) == (10.0, 5.0)
    assert c.bias_field == 0.0  # the reference has no bias field
    assert not AugmentConfig.none().__class__(**{**AugmentConfig.none().__dict__,
                                                 "bias_field": 0.1}).is_identity
    assert not c.is_identity and AugmentConfig.none().is_identity


@pytest.mark.parametrize("kwargs", [
    {"rotation": -1.0}, {"shift": float("nan")}, {"shear": 90.0}, {"scale": (1.2, 0.9)},
    {"scale": (0.0, 1.0)}, {"gamma": (0.0, 1.0)}, {"elastic_sigma": 0.0},
    {"bias_field": -0.1}, {"bias_field": float("inf")},
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="AugmentConfig"):
        AugmentConfig(**kwargs)


def test_config_rejects_non_pairs():
    with pytest.raises(TypeError, match="scale"):
        AugmentConfig(scale=1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- identity
@settings(max_examples=25, deadline=None)
@given(size=SIZES, batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_identity_params_give_exactly_the_identity(size, batch, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 2, *size, generator=g)
    labels = torch.randint(0, 7, (batch, 1, *size), generator=g)
    for params in (TransformParams.identity(batch), TransformParams.identity(batch, size=size)):
        out_i, out_l = apply_params(images, labels, params)
        assert torch.equal(out_i, images) and torch.equal(out_l, labels)
    # a config with everything switched off samples identity parameters
    p = sample_params(AugmentConfig.none(), batch, size, generator=g)
    assert bool(p.is_identity().all()) and bool((p.gamma == 1).all())


def test_identity_items_are_kept_exact_inside_a_warped_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 16, 16, generator=g)
    params = sample_params(AugmentConfig(), 3, (16, 16), generator=g)
    params = params.replace_items(torch.tensor([False, True, False]), TransformParams.identity(1))
    out, _ = apply_geometry(images, None, params)
    assert torch.equal(out[1], images[1])
    assert not torch.equal(out[0], images[0])


def test_resampling_at_the_identity_grid_is_near_identity():
    # the grid itself (not the shortcut) is the identity to float precision
    h, w = 13, 21
    grid = sampling_grid(TransformParams.identity(1, size=(h, w)), (h, w))
    images = torch.rand(1, 1, h, w)
    out = torch.nn.functional.grid_sample(images, grid, align_corners=False)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- geometry conventions
@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, -2), (2, 5)])
def test_integer_shift_moves_content(dx, dy):
    labels = torch.arange(1, 20 * 24 + 1, dtype=torch.long).view(1, 1, 20, 24)
    images = labels.double()
    p = TransformParams.identity(1, dtype=torch.float64)
    p.shift[0] = torch.tensor([float(dx), float(dy)])
    out_i, out_l = apply_geometry(images, labels, p, image_padding="zeros")
    expected = torch.zeros_like(labels)
    ys, xs = slice(max(dy, 0), 20 + min(dy, 0)), slice(max(dx, 0), 24 + min(dx, 0))
    src_ys, src_xs = slice(max(-dy, 0), 20 - max(dy, 0)), slice(max(-dx, 0), 24 - max(dx, 0))
    expected[..., ys, xs] = labels[..., src_ys, src_xs]
    assert torch.equal(out_l, expected)
    torch.testing.assert_close(out_i, expected.double(), atol=1e-9, rtol=0)


def test_rotation_by_90_degrees_turns_x_into_y():
    lab = torch.zeros(1, 1, 9, 9, dtype=torch.long)
    lab[0, 0, 4, 7] = 5  # three pixels right of the centre
    p = TransformParams.identity(1)
    p.rotation[0] = 90.0
    _, out = apply_geometry(None, lab, p)
    assert torch.nonzero(out[0, 0]).tolist() == [[7, 4]]  # three pixels below the centre
    assert int(out.sum()) == 5


def test_non_square_images_keep_shapes_under_rotation():
    # a centred square stays a square of the same area under a 90-degree turn, also when H != W
    lab = torch.zeros(1, 1, 20, 40)
    lab[0, 0, 6:14, 16:24] = 1
    p = TransformParams.identity(1)
    p.rotation[0] = 90.0
    _, out = apply_geometry(None, lab, p)
    assert torch.equal(out, lab)


# ---------------------------------------------------------------- label values
@settings(max_examples=25, deadline=None)
@given(size=SIZES, seed=st.integers(0, 2**16), n_values=st.integers(1, 6))
def test_warped_label_map_keeps_only_its_own_values(size, seed, n_values):
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor([3, 17, 255, 1000, 42, 2**20])[:n_values]
    labels = values[torch.randint(0, n_values, (2, 1, *size), generator=g)]
    config = AugmentConfig(rotation=30.0, shift=8.0, shear=20.0, scale=(0.5, 1.5),
                           elastic_alpha=30.0, elastic_sigma=2.0)
    params = sample_params(config, 2, size, generator=g)
    _, out = apply_geometry(torch.rand(2, 1, *size, generator=g), labels, params)
    assert out.dtype == labels.dtype
    allowed = set(values.tolist()) | {0}
    assert set(out.unique().tolist()) <= allowed


def test_large_ids_survive_nearest_warping():
    labels = torch.full((1, 1, 8, 8), 2**24 + 1, dtype=torch.int64)
    p = TransformParams.identity(1)
    p.shift[0, 0] = 1.0
    _, out = apply_geometry(None, labels, p)
    assert set(out.unique().tolist()) == {0, 2**24 + 1}


# ---------------------------------------------------------------- batching and replay
def test_batched_equals_per_item():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 1, 24, 30, generator=g)
    labels = torch.randint(0, 5, (4, 1, 24, 30), generator=g)
    params = sample_params(AugmentConfig(), 4, (24, 30), generator=g)
    batch_i, batch_l = apply_params(images, labels, params)
    for k in range(4):
        one_i, one_l = apply_params(images[k:k + 1], labels[k:k + 1], params.select(k))
        torch.testing.assert_close(batch_i[k:k + 1], one_i, atol=1e-6, rtol=1e-6)
        assert torch.equal(batch_l[k:k + 1], one_l)


def test_same_seed_same_params_and_outputs():
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        params = sample_params(AugmentConfig(), 3, (16, 16), generator=g)
        return params, apply_params(torch.ones(3, 1, 16, 16).cumsum(-1), None, params)[0]

    (p1, o1), (p2, o2), (p3, _) = run(5), run(5), run(6)
    assert torch.equal(o1, o2) and torch.equal(p1.displacement, p2.displacement)
    assert not torch.equal(p1.rotation, p3.rotation)


def test_disabling_elastic_keeps_the_other_parameters():
    full = sample_params(AugmentConfig(), 3, (8, 8), generator=torch.Generator().manual_seed(1))
    rigid = sample_params(AugmentConfig(elastic_alpha=0.0), 3, (8, 8),
                          generator=torch.Generator().manual_seed(1))
    assert rigid.displacement is None
    for name in ("rotation", "shear", "scale", "shift", "gamma"):
        assert torch.equal(getattr(full, name), getattr(rigid, name))


def test_sampled_ranges():
    cfg = AugmentConfig()
    p = sample_params(cfg, 500, (4, 4), generator=torch.Generator().manual_seed(0))
    assert p.rotation.abs().max() <= 5 and p.shear.abs().max() <= 5 and p.shift.abs().max() <= 5
    assert 0.9 <= p.scale.min() and p.scale.max() <= 1.2
    assert 0.5 <= p.gamma.min() and p.gamma.max() <= 1.5
    assert p.rotation.min() < -4 and p.rotation.max() > 4  # the whole range is used


# ---------------------------------------------------------------- scale and elastic
@pytest.mark.parametrize("elastic", [False, True])
def test_mask_area_follows_sampled_scale(elastic):
    g = torch.Generator().manual_seed(11)
    h = w = 128
    radius = 30.0
    masks = _disk(h, w, radius, batch=12)
    config = AugmentConfig(elastic_alpha=10.0 if elastic else 0.0)
    params = sample_params(config, 12, (h, w), generator=g)
    _, out = apply_geometry(None, masks, params)
    ratio = out.sum((1, 2, 3)) / masks.sum((1, 2, 3))
    expected = params.scale**2
    # nearest interpolation changes the area by at most ~half a pixel along the boundary
    perimeter_fraction = 2 * math.pi * radius * 1.2 / (math.pi * radius**2)
    tol = 0.25 * perimeter_fraction + (0.02 if elastic else 0.0)
    assert (ratio - expected).abs().max() < tol, (ratio, expected)


def test_gaussian_smooth_matches_scipy_constant_mode():
    x = torch.rand(2, 2, 37, 70, dtype=torch.float64) * 2 - 1
    for sigma in (1.0, 5.0, 9.5):
        ours = gaussian_smooth(x, sigma).numpy()
        ref = gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="constant", truncate=4.0)
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_elastic_displacement_has_the_reference_magnitude():
    # uniform noise (variance 1/3) smoothed by a 2-D Gaussian of sigma s keeps a variance of
    # about 1/3 / (4 pi s^2) away from the border: alpha 10, sigma 5 -> RMS ~0.33 px
    p = sample_params(AugmentConfig(), 4, (160, 160), generator=torch.Generator().manual_seed(0))
    inner = p.displacement[:, :, 30:-30, 30:-30]
    rms = float(inner.pow(2).mean().sqrt())
    expected = 10.0 * math.sqrt(1 / 3 / (4 * math.pi * 25.0))
    assert abs(rms - expected) < 0.15 * expected


# ---------------------------------------------------------------- gamma
def test_gamma_matches_formula_and_keeps_range():
    x = torch.tensor([[-2.0, 0.0, 1.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    out = apply_gamma(x, torch.tensor([2.0, 0.5]))
    unit = (x[0] + 2) / 8
    torch.testing.assert_close(out[0], unit**2 * 8 - 2)
    assert torch.equal(out[1], x[1])  # constant image unchanged
    assert out[0].min() == -2 and out[0].max() == 6


def test_gamma_one_is_exact_identity_and_order_is_kept():
    x = torch.randn(3, 1, 9, 9)
    assert torch.equal(apply_gamma(x, torch.ones(3)), x)
    out = apply_gamma(x, torch.tensor([0.5, 1.0, 1.5]))
    for k in range(3):  # monotone: the order of the pixel values is unchanged
        assert torch.equal(torch.argsort(out[k].flatten(), stable=True),
                           torch.argsort(x[k].flatten(), stable=True))


def test_gamma_rejects_bad_exponents():
    with pytest.raises(ValueError, match="positive"):
        apply_gamma(torch.rand(1, 4), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="shape"):
        apply_gamma(torch.rand(2, 4), torch.tensor([1.0]))


# ---------------------------------------------------------------- errors and devices
def test_apply_geometry_rejects_bad_shapes():
    p = TransformParams.identity(2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        apply_geometry(torch.rand(2, 8, 8), None, p)
    with pytest.raises(ValueError, match="parameters have 2"):
        apply_geometry(torch.rand(3, 1, 8, 8), None, p)
    with pytest.raises(TypeError, match="floating"):
        apply_geometry(torch.ones(2, 1, 8, 8, dtype=torch.long), None, p)
    q = sample_params(AugmentConfig(), 2, (8, 8), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="size="):
        apply_geometry(torch.rand(2, 1, 9, 9), None, q)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    labels = torch.randint(0, 4, (2, 1, 32, 32))
    params = sample_params(AugmentConfig(bias_field=0.3), 2, (32, 32), generator=g)
    cpu_i, cpu_l = apply_params(images, labels, params)
    gpu_i, gpu_l = apply_params(images.cuda(), labels.cuda(), params.to("cuda"))
    torch.testing.assert_close(gpu_i.cpu(), cpu_i, atol=1e-4, rtol=1e-4)
    assert (gpu_l.cpu() != cpu_l).float().mean() < 0.01  # nearest ties may round differently
    p_gpu = sample_params(AugmentConfig(), 2, (32, 32), generator=torch.Generator().manual_seed(0),
                          device="cuda")
    torch.testing.assert_close(p_gpu.rotation.cpu(), params.rotation)


# ---------------------------------------------------------------- bias field
def test_bias_field_is_drawn_last_and_in_range():
    """Switching the bias field on changes no other parameter of the same seed."""
    plain = sample_params(AugmentConfig(), 200, (8, 8), generator=torch.Generator().manual_seed(3))
    biased = sample_params(AugmentConfig(bias_field=0.3), 200, (8, 8),
                           generator=torch.Generator().manual_seed(3))
    assert plain.bias_field is None and biased.bias_field is not None
    assert biased.bias_field.shape == (200, 4, 4)
    for name in ("rotation", "shear", "scale", "shift", "gamma", "displacement"):
        assert torch.equal(getattr(plain, name), getattr(biased, name))
    assert biased.bias_field.abs().max() <= 0.3 and biased.bias_field.abs().max() > 0.29


def test_constant_log_gain_scales_above_the_minimum():
    x = torch.randn(2, 1, 7, 9)
    log_gain = torch.stack([torch.full((4, 4), math.log(1.5)), torch.zeros(4, 4)])
    out = apply_bias_field(x, log_gain)
    lo = x[0].min()
    torch.testing.assert_close(out[0], (x[0] - lo) * 1.5 + lo)
    assert torch.equal(out[1], x[1])  # an all-zero field is the exact identity
    assert apply_bias_field(x, None) is x


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(0.1, 10.0), b=st.floats(-5.0, 5.0))
def test_bias_field_commutes_with_affine_intensity_maps(seed, a, b):
    """A gain on the signal above the background: a*x + b in, a*out + b out (any units)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 12, 10, generator=g, dtype=torch.float64)
    log_gain = (torch.rand(2, 4, 4, generator=g, dtype=torch.float64) - 0.5) * 0.8
    torch.testing.assert_close(apply_bias_field(a * x + b, log_gain),
                               a * apply_bias_field(x, log_gain) + b)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=SIZES)
def test_bias_field_is_smooth_positive_and_keeps_the_background(seed, size):
    g = torch.Generator().manual_seed(seed)
    log_gain = (torch.rand(1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1) * 0.3
    h, w = size
    x = torch.ones(1, 1, h + 1, w, dtype=torch.float64)
    x[0, 0, h] = 0.0  # a background row (the minimum) that must stay put
    out = apply_bias_field(x, log_gain)[0, 0]
    assert bool((out[h] == 0).all())
    log_field = out[:h].log()  # the signal was 1, so this is the log-gain itself
    # cubic convolution (Keys, a = -0.75) changes by at most 3 x the largest control value
    # per control interval, and the 4 control points span the image: a slow field
    for dim, n in ((0, h + 1), (1, w)):
        if log_field.shape[dim] > 1:
            step = float(log_field.diff(dim=dim).abs().max())
            assert step <= 3 * 0.3 * 3 / (n - 1) + 1e-9
    assert float(log_field.abs().max()) <= 0.3 * 1.375 + 1e-9  # Keys: sum |K| <= 1.375


def test_bias_field_rejects_bad_shapes():
    with pytest.raises(ValueError, match="log_gain"):
        apply_bias_field(torch.rand(2, 1, 8, 8), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="images"):
        apply_bias_field(torch.rand(8, 8), torch.zeros(1, 4, 4))


def test_apply_intensity_is_bias_then_gamma_and_replace_items_mixes_fields():
    x = torch.rand(3, 1, 8, 8)
    p = sample_params(AugmentConfig(bias_field=0.3), 3, (8, 8),
                      generator=torch.Generator().manual_seed(0))
    expected = apply_gamma(apply_bias_field(x, p.bias_field), p.gamma)
    torch.testing.assert_close(apply_intensity(x, p), expected)
    # redrawing an item from a config without the field gives it the identity field (zeros)
    mixed = p.replace_items(torch.tensor([False, True, False]), TransformParams.identity(1))
    assert mixed.bias_field is not None and bool((mixed.bias_field[1] == 0).all())
    assert torch.equal(mixed.bias_field[0], p.bias_field[0])


def test_every_intensity_recipe_has_a_training_transform():
    from fewshotseg.preprocess import INTENSITY_RECIPES

    for modality in INTENSITY_RECIPES:
        assert AugmentConfig.for_modality(modality).rotation == AugmentConfig().rotation
    assert AugmentConfig.for_modality("mri").bias_field > 0  # coils shade MRI, not CT
    with pytest.raises(ValueError, match="modality"):
        AugmentConfig.for_modality("t2")
