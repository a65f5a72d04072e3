"""AdaptiveLocalPrototypePool: hand-computed cases, properties, and the plain reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fewshotseg.models.alp import AdaptiveLocalPrototypePool
from tests.reference_alp import reference_alp


def random_support(seed, b, s, n, c, h, w, dtype=torch.float32):
    """Random features and one-hot masks in which every class appears in some shot."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, s, c, h, w, generator=g, dtype=dtype)
    labels = torch.randint(0, n + 1, (b, s, h, w), generator=g)
    assert s * h * w >= n, "not enough pixels for every class"
    for item in range(b):  # force one pixel of each class, at distinct random (shot, pixel)
        slots = torch.randperm(s * h * w, generator=g)[:n]
        for cls, slot in enumerate(slots.tolist(), start=1):
            labels[item, slot // (h * w), (slot % (h * w)) // w, slot % w] = cls
    masks = torch.stack([(labels == k) for k in range(1, n + 1)], dim=2).to(dtype)
    query = torch.randn(b, c, h + 1, w, generator=g, dtype=dtype)
    return feats, masks, query


# ----------------------------------------------------------------------- by hand
def test_hand_computed_window_one():
    """Two foreground pixels with different features, window 1 (every pixel a cell)."""
    feats = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]])  # (C=2, 2, 2)
    # pixel (0,0)=(1,0), (0,1)=(0,1), (1,0)=(-1,0), (1,1)=(0,-1)
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # foreground = top row
    query = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    pool = AdaptiveLocalPrototypePool(window_size=1)
    out = pool(feats[None, None], mask[None, None, None], query)
    # Foreground: local (1,0) -> 20, local (0,1) -> 0, class-level (0.5,0.5) -> 20/sqrt(2).
    sims = [20.0, 0.0, 20.0 / math.sqrt(2.0)]
    weights = [math.exp(v) for v in sims]
    fg = sum(v * wt for v, wt in zip(sims, weights, strict=True)) / sum(weights)
    # Background: local (-1,0) -> -20, local (0,-1) -> 0; no class-level prototype.
    bg = (-20.0 * math.exp(-20.0) + 0.0) / (math.exp(-20.0) + 1.0)
    assert out.shape == (1, 2, 1, 1)
    assert out[0, 1, 0, 0].item() == pytest.approx(fg, rel=1e-6)
    assert out[0, 0, 0, 0].item() == pytest.approx(bg, abs=1e-6)


def test_hand_computed_no_cell_passes_uses_class_level_prototypes():
    """Window 2 on a 2 x 2 map with half foreground: no cell reaches T = 0.95, so each class
    has only its masked average (background's too, as the fallback)."""
    feats = torch.tensor([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    query = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)
    out = AdaptiveLocalPrototypePool(window_size=2)(
        feats[None, None], mask[None, None, None], query
    )
    # fg prototype (1, 0): cos = 3/5; bg prototype (0, 1): cos = 4/5; times 20.
    torch.testing.assert_close(out.flatten(), torch.tensor([16.0, 12.0]))


def test_softmax_of_logits_is_eq6_probability():
    feats, masks, query = random_support(0, 1, 1, 2, 4, 6, 6)
    logits = AdaptiveLocalPrototypePool(window_size=2)(feats, masks, query)
    probs = logits.softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones_like(probs[:, 0]))


# ------------------------------------------------------------------- properties
dims = st.tuples(
    st.integers(1, 2),  # B
    st.integers(1, 3),  # S
    st.integers(1, 3),  # N
    st.integers(1, 6),  # C
    st.integers(1, 9),  # h
    st.integers(1, 9),  # w
)


@settings(max_examples=40, deadline=None)
@given(dims=dims, window=st.integers(1, 5), local=st.booleans(), seed=st.integers(0, 10_000))
def test_matches_plain_reference_any_shape(dims, window, local, seed):
    b, s, n, c, h, w = dims
    assume(s * h * w >= n)
    feats, masks, query = random_support(seed, b, s, n, c, h, w)
    pool = AdaptiveLocalPrototypePool(window_size=window, local=local)
    out = pool(feats, masks, query)
    assert out.shape == (b, n + 1, h + 1, w)
    assert torch.isfinite(out).all()
    expected = reference_alp(feats, masks, query, window=window, local=local)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(dims=dims, window=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_batched_equals_per_item(dims, window, seed):
    b, s, n, c, h, w = dims
    assume(s * h * w >= n)
    feats, masks, query = random_support(seed, b + 1, s, n, c, h, w)
    pool = AdaptiveLocalPrototypePool(window_size=window)
    whole = pool(feats, masks, query)
    for i in range(b + 1):
        one = pool(feats[i : i + 1], masks[i : i + 1], query[i : i + 1])
        torch.testing.assert_close(whole[i : i + 1], one, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    window=st.sampled_from([1, 2, 4]),
    quiet=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_combined_one_shot_sets_equal_sets_pooled_together(window, quiet, seed, data):
    # "busy" shots (random labels) have no cell that is >= 95 % background at windows >= 2,
    # "quiet" shots (one foreground pixel) have many: mixing them exercises the rule that
    # spans shots (background averages only when no shot has a local background cell)
    s, n, c, h, w = 4, 2, 6, 8, 8
    feats, masks, query = random_support(seed, 1, s, n, c, h, w)
    for shot, is_quiet in enumerate(quiet):
        if is_quiet:
            masks[0, shot] = 0
            masks[0, shot, shot % n, shot, shot] = 1
    pool = AdaptiveLocalPrototypePool(window_size=window)
    single = pool.prototypes(feats[0][:, None], masks[0][:, None], allow_empty=True)
    k = data.draw(st.integers(1, s))
    groups = [data.draw(st.permutations(list(range(s))))[:k] for _ in range(3)]
    combined = single.combine(torch.tensor(groups))
    for g, shots in enumerate(groups):
        joint = pool.prototypes(feats[:, shots], masks[:, shots], allow_empty=True)
        torch.testing.assert_close(
            pool.classify(query, combined.select(torch.tensor([g]))),
            pool.classify(query, joint),
            rtol=1e-5,
            atol=1e-5,
        )


@settings(max_examples=25, deadline=None)
@given(dims=dims, window=st.integers(1, 4), seed=st.integers(0, 10_000), data=st.data())
def test_shot_order_does_not_matter(dims, window, seed, data):
    b, s, n, c, h, w = dims
    assume(s * h * w >= n)
    feats, masks, query = random_support(seed, b, s, n, c, h, w)
    order = torch.tensor(data.draw(st.permutations(list(range(s)))))
    pool = AdaptiveLocalPrototypePool(window_size=window)
    torch.testing.assert_close(
        pool(feats, masks, query),
        pool(feats[:, order], masks[:, order], query),
        rtol=1e-5,
        atol=1e-5,
    )


@settings(max_examples=25, deadline=None)
@given(
    dims=dims,
    scale=st.floats(0.01, 100.0),
    local=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_positive_feature_scaling_changes_nothing(dims, scale, local, seed):
    b, s, n, c, h, w = dims
    assume(s * h * w >= n)
    feats, masks, query = random_support(seed, b, s, n, c, h, w, dtype=torch.float64)
    # Keep every query vector well above the normalisation floor (eps 1e-4) at any scale.
    small = query.norm(dim=1, keepdim=True) < 0.1
    query = torch.where(small, torch.ones_like(query), query)
    pool = AdaptiveLocalPrototypePool(window_size=2, local=local)
    torch.testing.assert_close(
        pool(feats, masks, query), pool(feats * scale, masks, query * scale), rtol=1e-6, atol=1e-6
    )


@settings(max_examples=25, deadline=None)
@given(c=st.integers(2, 6), n=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_query_equal_to_a_class_only_prototype_gets_that_class(c, n, seed):
    """One shot whose classes each cover one orthogonal-feature region; window larger than the
    map so each class has exactly one prototype (its masked average)."""
    g = torch.Generator().manual_seed(seed)
    n = min(n, c - 1)
    basis = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))[0]
    h = w = n + 1
    labels = torch.arange(n + 1).repeat_interleave(w).reshape(h, w)  # row k = class k
    feats = basis[:, labels]  # (C, h, w): class k's pixels all carry basis vector k
    masks = torch.stack([(labels == k) for k in range(1, n + 1)]).double()
    pool = AdaptiveLocalPrototypePool(window_size=h + 1)
    for k in range(n + 1):
        query = basis[:, k].reshape(1, c, 1, 1)
        out = pool(feats[None, None], masks[None, None], query)
        assert out[0, :, 0, 0].argmax().item() == k


def test_gradcheck_float64():
    feats, masks, query = random_support(3, 1, 2, 2, 3, 4, 4, dtype=torch.float64)
    feats.requires_grad_(True)
    query.requires_grad_(True)
    pool = AdaptiveLocalPrototypePool(window_size=2, threshold=0.5)

    def fn(f, q):
        return pool(f, masks, q)

    assert torch.autograd.gradcheck(fn, (feats, query), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------ behaviour
def test_resized_masks_match_reference():
    feats, _, query = random_support(5, 2, 2, 2, 4, 8, 8)
    masks = torch.zeros(2, 2, 2, 64, 64)
    masks[:, :, 0, 8:40, 8:40] = 1
    masks[:, :, 1, 40:60, 20:60] = 1
    pool = AdaptiveLocalPrototypePool(window_size=2)
    torch.testing.assert_close(
        pool(feats, masks, query), reference_alp(feats, masks, query, window=2)
    )


def test_structure_smaller_than_stride_keeps_a_prototype():
    """A 1-pixel class at 8x the feature size is missed by bilinear sampling; it falls back to
    area averaging instead of raising or vanishing."""
    feats, _, query = random_support(6, 1, 1, 1, 4, 4, 4)
    masks = torch.zeros(1, 1, 1, 32, 32)
    masks[..., 0, 0] = 1  # bilinear (align_corners=False) samples pixel centres 3.5, 11.5, ...
    out = AdaptiveLocalPrototypePool(window_size=2)(feats, masks, query)
    assert (out[:, 1] != 0).any()


def test_empty_class_raises_naming_item_and_class():
    feats, masks, query = random_support(1, 2, 1, 2, 4, 6, 6)
    masks[1, :, 1] = 0
    with pytest.raises(ValueError, match=r"batch item 1 .* class 2"):
        AdaptiveLocalPrototypePool()(feats, masks, query)


def test_allow_empty_gives_zero_similarity():
    feats, masks, query = random_support(1, 2, 1, 2, 4, 6, 6)
    masks[1, :, 1] = 0
    out = AdaptiveLocalPrototypePool(window_size=2)(feats, masks, query, allow_empty=True)
    assert torch.all(out[1, 2] == 0)
    assert torch.any(out[0, 2] != 0)


def test_prototypes_once_classify_many():
    feats, masks, query = random_support(2, 1, 2, 2, 5, 8, 8)
    pool = AdaptiveLocalPrototypePool(window_size=2)
    protos = pool.prototypes(feats, masks)
    queries = torch.randn(3, 5, 8, 8)
    batched = pool.classify(queries, protos.expand(3))
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], pool(feats, masks, queries[i : i + 1]))


def test_window_override_and_tuple_window():
    feats, masks, query = random_support(4, 1, 1, 1, 4, 8, 8)
    pool = AdaptiveLocalPrototypePool(window_size=4)
    torch.testing.assert_close(
        pool(feats, masks, query, window_size=(2, 2)),
        AdaptiveLocalPrototypePool(window_size=2)(feats, masks, query),
    )


@pytest.mark.parametrize(
    "kwargs", [{"threshold": 0.0}, {"threshold": 1.5}, {"temperature": 0}, {"window_size": 0}]
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError):
        AdaptiveLocalPrototypePool(**kwargs)


def test_bad_shapes_raise():
    pool = AdaptiveLocalPrototypePool()
    with pytest.raises(ValueError, match="support_features"):
        pool(torch.randn(1, 4, 8, 8), torch.ones(1, 1, 1, 8, 8), torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="do not match"):
        pool(torch.randn(1, 1, 4, 8, 8), torch.ones(1, 1, 1, 8, 8), torch.randn(1, 3, 8, 8))
