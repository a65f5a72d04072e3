"""Whole-volume segmentation: alignment, localisation, clean-up, recipe, no query labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshotseg import ALPNet, SupportQueryPredictor, evaluation
from fewshotseg.models.alp import AdaptiveLocalPrototypePool
from fewshotseg.preprocess import mri
from fewshotseg.volume import (
    VolumeConfig,
    align_slices,
    clean_up,
    dtw_path,
    prepare_support,
    segment_volume,
    segment_with,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread


@pytest.fixture(scope="module")
def predictor() -> SupportQueryPredictor:
    torch.manual_seed(0)
    return SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)


def scan(depth: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scan whose slices differ along depth, with class 2 in slices 3..6."""
    rng = np.random.default_rng(seed)
    zz = np.linspace(0, 1, depth)[:, None, None]
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    image = (np.sin(6 * zz + 4 * yy) + np.cos(5 * zz * xx) + 0.05 * rng.random((depth, 40, 40)))
    labels = np.zeros((depth, 40, 40), np.int64)
    labels[3:7, 10:30, 12:28] = 2
    return image.astype(np.float32) * 300 + 500, labels


# -------------------------------------------------------------------------- alignment


def _brute_force_cost(cost: np.ndarray) -> float:
    """Least total cost over every monotonic path, by enumeration (tiny inputs only)."""
    n, m = cost.shape
    best = np.inf
    moves = [(1, 0), (0, 1), (1, 1)]
    for length in range(max(n, m) - 1, n + m - 1):
        for steps in itertools.product(moves, repeat=length):
            i = j = 0
            total = cost[0, 0]
            for di, dj in steps:
                i, j = i + di, j + dj
                if i >= n or j >= m:
                    break
                total += cost[i, j]
            else:
                if (i, j) == (n - 1, m - 1):
                    best = min(best, total)
    return best


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), m=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_dtw_path_is_monotonic_complete_and_optimal(n, m, seed):
    cost = np.random.default_rng(seed).random((n, m))
    path = dtw_path(cost)
    assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
    for (i0, j0), (i1, j1) in itertools.pairwise(path):
        assert (i1 - i0, j1 - j0) in {(1, 0), (0, 1), (1, 1)}
    assert sum(cost[i, j] for i, j in path) == pytest.approx(_brute_force_cost(cost))


def test_alignment_recovers_dropped_and_repeated_slices():
    # support slice s has a distinct feature pattern; the query skips and repeats some
    rng = np.random.default_rng(1)
    support = torch.from_numpy(rng.standard_normal((12, 16, 4, 4)).astype(np.float32))
    order = [0, 1, 3, 4, 4, 5, 7, 8, 9, 11]
    query = support[order] + 0.01 * torch.randn(len(order), 16, 4, 4)
    np.testing.assert_allclose(align_slices(query, support)[[0, 2, 5, 6, 9]], [0, 3, 5, 7, 11])


# -------------------------------------------------------------------------- clean-up


def test_clean_up_keeps_the_largest_component_fills_holes_and_spares_other_classes():
    lab = np.zeros((3, 12, 12), np.int64)
    lab[0:3, 2:9, 2:9] = 1
    lab[1, 5, 5] = 0  # a hole
    lab[1, 4, 4] = 2  # another class inside: kept
    lab[0, 11, 11] = 1  # a stray voxel of class 1
    out = clean_up(lab, [1, 2], largest_component=True, fill_holes=True)
    assert out[0, 11, 11] == 0 and out[1, 5, 5] == 1 and out[1, 4, 4] == 2
    assert (out == 1).sum() == (lab == 1).sum()  # -1 stray, +1 hole
    off = clean_up(lab, [1, 2], largest_component=False, fill_holes=False)
    np.testing.assert_array_equal(off, lab)


def _clean_up_whole_volume(labels, classes, fill_holes):
    """clean_up written plainly on the whole volume (no bounding boxes): the reference."""
    from scipy import ndimage

    out = labels.copy()
    for cls in classes:
        mask = out == cls
        components, n = ndimage.label(mask)
        if n > 1:
            keep = components == int(np.argmax(np.bincount(components.ravel())[1:])) + 1
            out[mask & ~keep] = 0
            mask = keep
        if fill_holes:
            for z in range(len(out)):
                filled = ndimage.binary_fill_holes(mask[z])
                out[z][filled & (out[z] == 0)] = cls
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 100_000), fill=st.booleans(), density=st.floats(0.05, 0.6))
def test_clean_up_inside_bounding_boxes_equals_the_whole_volume(seed, fill, density):
    rng = np.random.default_rng(seed)
    lab = np.where(rng.random((4, 12, 13)) < density, rng.integers(1, 4, (4, 12, 13)), 0)
    np.testing.assert_array_equal(
        clean_up(lab, [1, 2, 3], largest_component=True, fill_holes=fill),
        _clean_up_whole_volume(lab, [1, 2, 3], fill),
    )


# -------------------------------------------------------------------------- pipeline


def test_slices_outside_the_aligned_extent_come_back_empty(predictor):
    image, labels = scan()
    out = segment_volume(predictor, image, labels, image, config=VolumeConfig(threshold=0.0))
    # the query is the support itself: the alignment is the identity, so the class can only
    # appear in slices 3..6, and with threshold 0 it does appear there
    assert not out[:3].any() and not out[7:].any()
    assert all((out[z] == 2).any() for z in range(3, 7))
    # without localisation the same model labels slices outside the organ's extent
    every = segment_volume(predictor, image, labels, image,
                           config=VolumeConfig(threshold=0.0, localise="none"))
    assert every[:3].any() or every[7:].any()


@pytest.mark.parametrize("localise", ["align", "relative", "none"])
@pytest.mark.parametrize("support", ["aligned", "chunks"])
def test_every_configuration_returns_a_label_map_of_the_query(predictor, localise, support):
    image, labels = scan()
    labels[5:9, 2:8, 2:8] = 1
    query = scan(depth=7, seed=1)[0][:, :36, :38]
    config = VolumeConfig(localise=localise, support=support, shots=2)
    out = segment_volume(predictor, image, labels, query, config=config)
    assert out.shape == query.shape and out.dtype == np.int64
    assert set(np.unique(out)) <= {0, 1, 2}


class _CountingPredictor(SupportQueryPredictor):
    """Counts the slices the backbone encodes."""

    encoded = 0

    def encode_slices(self, images):
        self.encoded += len(images)
        return super().encode_slices(images)


@pytest.mark.parametrize("localise", ["align", "relative"])
def test_a_prepared_support_gives_the_same_labels_and_is_encoded_once(localise):
    torch.manual_seed(0)
    predictor = _CountingPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
    image, labels = scan(depth=12)
    labels[6:10, 2:8, 2:8] = 1
    queries = [scan(depth=9, seed=1)[0], scan(depth=12, seed=2)[0][:, :36, :38]]
    config = VolumeConfig(localise=localise, threshold=0.3)
    expected = [segment_volume(predictor, image, labels, q, config=config) for q in queries]

    support = predictor.encode_support_volume(image, labels)
    predictor.encoded = 0
    got = [predictor.segment_volume_with(support, q, config=config) for q in queries]
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_array_equal(g, e)
    support_encodes = predictor.encoded - sum(len(q) for q in queries)
    # alignment encodes every support slice once, relative depth only the slices it picks;
    # either way no support slice twice across the two queries
    labelled = np.flatnonzero(labels.any(axis=(1, 2)))
    if localise == "align":
        assert support_encodes == len(image)
    else:
        assert 0 < support_encodes <= len(labelled)
    predictor.encoded = 0
    predictor.segment_volume_with(support, queries[0], config=config)
    assert predictor.encoded == len(queries[0])


def test_support_sets_pooled_together_classify_like_each_pooled_alone(predictor):
    image, labels = scan(depth=12)
    support = predictor.encode_support_volume(image, labels)
    shots = [[3, 4], [4, 6], [5, 6]]
    together = support.support_sets(2, shots)
    query = predictor.encode_slices(image[[2, 5, 9]])
    got = predictor.probabilities(query, together.select([2, 0, 1]), (40, 40))
    for row, g in enumerate([2, 0, 1]):
        masks = torch.from_numpy((labels[shots[g]] == 2)[:, None].astype(np.float32))
        alone = predictor.support_from_features(support.features(shots[g]), masks, (2,))
        expected = predictor.probabilities(query[row : row + 1], alone, (40, 40))
        torch.testing.assert_close(got[row : row + 1], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="batch 3"):
        predictor.probabilities(query[:2], together, (40, 40))


def test_a_support_prepared_by_another_predictor_is_refused(predictor):
    image, labels = scan()
    other = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
    support = other.encode_support_volume(image, labels)
    with pytest.raises(ValueError, match="another predictor"):
        predictor.segment_volume_with(support, image)
    with pytest.raises(TypeError, match="VolumeSupport"):
        predictor.segment_volume_with((image, labels), image)
    with pytest.raises(ValueError, match="query_volume"):
        other.segment_volume_with(support, image[0])


# -------------------------------------------------------------------------- several supports


@pytest.mark.parametrize("localise", ["align", "relative"])
def test_the_same_support_twice_gives_the_labels_of_one(predictor, localise):
    # two identical supports vote alike and their mean probability is each one's
    image, labels = scan(depth=12)
    labels[6:10, 2:8, 2:8] = 1
    query = scan(depth=9, seed=1)[0]
    support = prepare_support(predictor, image, labels)
    config = VolumeConfig(localise=localise, threshold=0.3)
    one = segment_with(predictor, support, query, config=config)
    np.testing.assert_array_equal(segment_with(predictor, [support, support], query,
                                               config=config), one)  # fmt: skip
    np.testing.assert_array_equal(segment_with(predictor, [support], query, config=config), one)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), depth=st.integers(7, 12), localise=st.sampled_from(
    ["align", "relative"]))  # fmt: skip
def test_the_order_of_two_supports_does_not_matter(predictor, seed, depth, localise):
    # the vote counts and a sum of two probabilities are symmetric, to the last bit
    image, labels = scan(depth=12, seed=seed)
    other, other_labels = scan(depth=depth, seed=seed + 1)
    other_labels = np.roll(other_labels, 1, axis=0)  # the class a slice lower
    query = scan(depth=9, seed=seed + 2)[0]
    a = prepare_support(predictor, image, labels)
    b = prepare_support(predictor, other, other_labels)
    config = VolumeConfig(localise=localise, threshold=0.3)
    ab = segment_with(predictor, [a, b], query, config=config)
    assert (ab == 2).any()  # something to compare
    np.testing.assert_array_equal(ab, segment_with(predictor, [b, a], query, config=config))


def _support_with_extent(predictor, lo: int, hi: int):
    image, labels = scan(depth=14)
    labels[:] = 0
    labels[lo : hi + 1, 10:30, 12:28] = 2
    return prepare_support(predictor, image, labels)


@pytest.mark.parametrize(
    ("extents", "expected"),
    [
        ([(2, 5), (3, 6), (10, 12)], {3, 4, 5}),  # two of three agree: the odd one is outvoted
        ([(2, 5), (10, 12)], {2, 3, 4, 5, 10, 11, 12}),  # one of two is half: either extent
        ([(2, 5), (3, 6), (4, 7), (10, 12)], {3, 4, 5, 6}),  # at least two of four
    ],
)
def test_a_class_is_segmented_where_at_least_half_the_supports_put_it(
    predictor, extents, expected
):
    # relative depth on equal depths maps query slice z to support slice z in every support,
    # and threshold 0 segments every localised slice: the labelled slices are the vote
    supports = [_support_with_extent(predictor, lo, hi) for lo, hi in extents]
    query = scan(depth=14, seed=3)[0]
    config = VolumeConfig(localise="relative", threshold=0.0, largest_component=False)
    out = segment_with(predictor, supports, query, config=config)
    assert set(np.flatnonzero((out == 2).any(axis=(1, 2))).tolist()) == expected


@pytest.mark.parametrize(("threshold", "labelled"), [(0.5, True), (0.6, False)])
def test_supports_average_their_probabilities_before_the_threshold(
    predictor, monkeypatch, threshold, labelled
):
    # support A says 0.9 everywhere, support B 0.2: the mean 0.55 passes 0.5, not 0.6
    from fewshotseg import volume

    a, b = (prepare_support(predictor, *scan()) for _ in range(2))
    level = {id(a): 0.9, id(b): 0.2}

    class Level:  # stands for a support's pooled sets: it only carries the level
        def __init__(self, value):
            self.value = value

        def select(self, items):
            return self

    def plan(config, support, cls, pos, zs):
        return Level(level[id(support)]), np.zeros(len(zs), np.int64)

    def probabilities(feats, sets, out_size):
        fg = torch.full((len(feats), 1, *out_size), sets.value)
        return torch.cat([1 - fg, fg], dim=1)

    monkeypatch.setattr(volume, "_support_plan", plan)
    monkeypatch.setattr(predictor, "probabilities", probabilities)
    config = VolumeConfig(localise="none", threshold=threshold)
    out = segment_with(predictor, [a, b], scan()[0], config=config)
    assert bool((out == 2).all()) is labelled and bool((out == 0).all()) is not labelled


def test_several_support_volumes_through_segment_volume(predictor):
    image, labels = scan(depth=12)
    other, other_labels = scan(depth=10, seed=4)
    query = scan(depth=9, seed=1)[0]
    both = [prepare_support(predictor, image, labels),
            prepare_support(predictor, other, other_labels)]  # fmt: skip
    expected = segment_with(predictor, both, query)
    got = predictor.segment_volume([image, other], [labels, other_labels], query)
    np.testing.assert_array_equal(got, expected)


def test_bad_sets_of_supports_raise_clear_errors(predictor):
    image, labels = scan()
    two = labels.copy()
    two[1, :4, :4] = 1
    with pytest.raises(ValueError, match="as many label volumes"):
        predictor.segment_volume([image, image], labels, image)
    with pytest.raises(ValueError, match="as many label volumes"):
        predictor.segment_volume([image, image], [labels], image)
    with pytest.raises(ValueError, match="label different classes"):
        predictor.segment_volume([image, image], [labels, two], image)
    # naming the classes both label settles it
    out = predictor.segment_volume([image, image], [labels, two], image, classes=[2])
    assert set(np.unique(out).tolist()) <= {0, 2}
    with pytest.raises(TypeError, match="non-empty sequence"):
        predictor.segment_volume_with([], image)
    other = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32)
    mixed = [prepare_support(predictor, image, labels), prepare_support(other, image, labels)]
    with pytest.raises(ValueError, match="another predictor"):
        predictor.segment_volume_with(mixed, image)


def test_a_model_without_local_prototypes_segments_volumes_too():
    # PANet-style pooling averages over the shots, so sets are pooled whole, not combined
    torch.manual_seed(0)
    pool = AdaptiveLocalPrototypePool(local=False)
    panet = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8, pool=pool),
                                  image_size=32)
    image, labels = scan()
    out = segment_volume(panet, image, labels, image, config=VolumeConfig(threshold=0.0))
    assert not out[:3].any() and not out[7:].any()
    assert all((out[z] == 2).any() for z in range(3, 7))


def test_raw_and_preprocessed_volumes_give_the_same_labels():
    torch.manual_seed(3)
    net = ALPNet(backbone="tiny", feature_dim=8)
    pred = SupportQueryPredictor(net, image_size=32, modality="mri")
    image, labels = scan()
    query = scan(seed=4)[0]
    raw = pred.segment_volume(image, labels, query, config=VolumeConfig(threshold=0.3))
    pre = pred.segment_volume(mri(image), labels, mri(query), config=VolumeConfig(threshold=0.3))
    assert (raw == pre).mean() >= 0.999
    plain = SupportQueryPredictor(net, image_size=32)  # no recipe: preprocessing is the user's
    assert pred.modality == "mri" and plain.modality is None


def test_predictor_from_checkpoint_takes_the_checkpoint_modality(tmp_path):
    net = ALPNet(backbone="tiny", feature_dim=8)
    torch.save({"model": net.state_dict(), "model_config": net.model_config, "image_size": 32,
                "modality": "ct", "version": "0"}, tmp_path / "m.pt")
    assert SupportQueryPredictor.from_checkpoint(tmp_path / "m.pt").modality == "ct"
    with pytest.raises(ValueError, match="modality must be one of"):
        SupportQueryPredictor(net, modality="pet")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"classes": []}, ValueError, "classes is empty"),
        ({"classes": 2}, TypeError, "sequence of label values"),
        ({"classes": [5]}, ValueError, "not labelled in the support"),
    ],
)
def test_bad_classes_raise_clear_errors(predictor, kwargs, error, match):
    image, labels = scan()
    with pytest.raises(error, match=match):
        predictor.segment_volume(image, labels, image, **kwargs)


@pytest.mark.parametrize("modality", [None, "mri"])
@pytest.mark.parametrize("which", ["support_volume", "query_volume"])
def test_a_non_finite_voxel_is_reported_with_the_input_it_is_in(modality, which):
    # with an intensity recipe the check used to fire inside it, naming only "volume"
    image, labels = scan()
    bad = image.astype(np.float32).copy()
    bad[1, 2, 3] = np.nan
    p = SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=32,
                              modality=modality)
    support, query = (bad, image) if which == "support_volume" else (image, bad)
    with pytest.raises(ValueError, match=f"^{which} contains NaN"):
        p.segment_volume(support, labels, query)


def test_unlabelled_support_raises(predictor):
    image, labels = scan()
    with pytest.raises(ValueError, match="no foreground"):
        predictor.segment_volume(image, np.zeros_like(labels), image)
    with pytest.raises(ValueError, match="negative"):
        predictor.segment_volume(image, labels - 1, image)


# -------------------------------------------------------------------------- the protocol


class Recording:
    """A predictor that remembers what segment_volume returned."""

    def __init__(self, inner: SupportQueryPredictor) -> None:
        self.inner, self.outputs = inner, []

    def segment_volume(self, *args, **kwargs):
        out = self.inner.segment_volume(*args, **kwargs)
        self.outputs.append(out)
        return out


def test_realistic_protocol_never_reads_the_query_labels_before_scoring(predictor):
    image, labels = scan()
    query, truth = scan(seed=5)
    rec = Recording(predictor)
    scored = evaluation.evaluate_pair(rec, image, labels, query, truth, [2],
                                      protocol="realistic")
    blind = evaluation.evaluate_pair(rec, image, labels, query, np.zeros_like(truth), [2],
                                     protocol="realistic")
    np.testing.assert_array_equal(rec.outputs[0], rec.outputs[1])
    row, blind_row = scored.rows[0], blind.rows[0]
    assert row.protocol == "realistic" and row.n_slices == query.shape[0]  # every slice scored
    assert row.tp == int(((rec.outputs[0] == 2) & (truth == 2)).sum())
    assert blind_row.tp == 0 and blind_row.fn == 0 and row.fn + row.tp == (truth == 2).sum()


def test_realistic_protocol_scores_what_several_supports_segment(predictor):
    image, labels = scan(depth=12)
    other, other_labels = scan(depth=10, seed=4)
    query, truth = scan(depth=9, seed=1)
    rec = Recording(predictor)
    table = evaluation.evaluate_pair(rec, [image, other], [labels, other_labels], query, truth,
                                     [2], protocol="realistic", support_id=(8, 10))
    expected = predictor.segment_volume([image, other], [labels, other_labels], query,
                                        classes=[2])
    np.testing.assert_array_equal(rec.outputs[0], expected)
    row = table.rows[0]
    assert row.support == "8+10" and row.n_slices == query.shape[0]
    assert row.tp == int(((expected == 2) & (truth == 2)).sum())


def test_realistic_protocol_needs_segment_volume_and_one_way():
    image, labels = scan()
    with pytest.raises(TypeError, match="segment_volume"):
        evaluation.evaluate_pair(lambda s, m, q: q, image, labels, image, labels, [2],
                                 protocol="realistic")
    with pytest.raises(ValueError, match="1-way"):
        evaluation.evaluate_pair(Recording(None), image, labels, image, labels, [2],
                                 protocol="realistic", ways="all")
