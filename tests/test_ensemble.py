"""PredictorEnsemble and segment_with over several models: averaging, voting, identities."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fewshotseg import volume
from fewshotseg.ensemble import PredictorEnsemble
from fewshotseg.evaluation import evaluate_pair
from fewshotseg.inference import SupportQueryPredictor
from fewshotseg.models import ALPNet
from fewshotseg.training import TrainConfig, Trainer
from fewshotseg.volume import VolumeConfig


def _model(seed: int) -> ALPNet:
    torch.manual_seed(seed)
    return ALPNet(backbone="tiny", feature_dim=8).eval()


def _predictor(seed: int, **kwargs) -> SupportQueryPredictor:
    return SupportQueryPredictor(_model(seed), image_size=kwargs.pop("image_size", 32), **kwargs)


@pytest.fixture(scope="module")
def members():
    return [_predictor(0), _predictor(1)]


@pytest.fixture(scope="module")
def scan():
    """A support volume with two classes over different slices, and a query of other depth."""
    rng = np.random.default_rng(0)
    image = rng.random((10, 40, 40)).astype(np.float32)
    labels = np.zeros((10, 40, 40), np.int64)
    labels[2:7, 8:24, 8:24] = 1
    labels[4:9, 20:36, 18:34] = 3
    image[labels == 1] += 1.0
    image[labels == 3] -= 0.5
    query = np.concatenate([image[1:], image[:2]]) + 0.05 * rng.random((11, 40, 40))
    return image, labels, query.astype(np.float32)


# ------------------------------------------------------------------------------------------
# identities: one member, or the same weights twice, is that model
# ------------------------------------------------------------------------------------------


def test_one_member_scores_exactly_as_its_predictor(members, scan):
    image, labels, query = scan
    alone, ensemble = members[0], PredictorEnsemble(members[:1])
    np.testing.assert_array_equal(
        ensemble.predict_proba(image[3:5], labels[3:5], query[:4]),
        alone.predict_proba(image[3:5], labels[3:5], query[:4]),
    )
    np.testing.assert_array_equal(
        ensemble.segment_volume(image, labels, query), alone.segment_volume(image, labels, query)
    )


def test_the_same_weights_twice_give_that_model(members, scan):
    image, labels, query = scan
    twin = SupportQueryPredictor(copy.deepcopy(members[0].model), image_size=32)
    ensemble = PredictorEnsemble([members[0], twin])
    alone = members[0]
    np.testing.assert_array_equal(
        ensemble.predict(image[4], labels[4], query), alone.predict(image[4], labels[4], query)
    )
    for config in (VolumeConfig(), VolumeConfig(localise="relative", shots=1)):
        np.testing.assert_array_equal(
            ensemble.segment_volume(image, labels, query, config=config),
            alone.segment_volume(image, labels, query, config=config),
        )


def test_the_volume_functions_take_an_ensemble_or_a_list_alike(members, scan):
    image, labels, query = scan
    ensemble = PredictorEnsemble(members)
    np.testing.assert_array_equal(
        volume.segment_volume(ensemble, image, labels, query),
        volume.segment_volume(members, image, labels, query),
    )


def test_member_order_does_not_matter(members, scan):
    image, labels, query = scan
    ab = PredictorEnsemble(members).segment_volume(image, labels, query)
    ba = PredictorEnsemble(members[::-1]).segment_volume(image, labels, query)
    np.testing.assert_array_equal(ab, ba)


# ------------------------------------------------------------------------------------------
# averaging
# ------------------------------------------------------------------------------------------


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    depth=st.integers(1, 3),
    size=st.tuples(st.integers(20, 48), st.integers(20, 48)),
    sizes=st.sampled_from([(32, 32), (32, 48)]),
)
def test_predict_proba_is_the_members_mean_and_predict_its_argmax(depth, size, sizes):
    members = [_predictor(s, image_size=n) for s, n in zip((0, 1), sizes, strict=True)]
    ensemble = PredictorEnsemble(members)
    rng = np.random.default_rng(depth)
    img = rng.random((36, 36)).astype(np.float32)
    mask = np.zeros((36, 36), np.int64)
    mask[4:16, 4:20] = 2
    mask[20:32, 10:30] = 5
    query = rng.random((depth, *size)).astype(np.float32)
    proba = ensemble.predict_proba(img, mask, query)
    mean = sum(m.predict_proba(img, mask, query) for m in members) / 2
    assert proba.shape == (3, depth, *size) and proba.dtype == np.float32
    np.testing.assert_allclose(proba, mean, atol=1e-6)
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        ensemble.predict(img, mask, query), np.array([0, 2, 5])[proba.argmax(0)]
    )


def test_torch_in_torch_out(members, scan):
    image, labels, query = scan
    ensemble = PredictorEnsemble(members)
    proba = ensemble.predict_proba(torch.from_numpy(image[4]), labels[4], torch.from_numpy(query))
    out = ensemble.predict(image[4], torch.from_numpy(labels[4]), torch.from_numpy(query))
    assert isinstance(proba, torch.Tensor) and proba.shape == (3, *query.shape)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.long
    assert set(out.unique().tolist()) <= {0, 1, 3}


def test_volume_foreground_lies_between_the_members_intersection_and_union(members, scan):
    """Without localisation and clean-up, a voxel's mean of two probabilities is above the
    threshold when both are and only when one is."""
    image, labels, query = scan
    config = VolumeConfig(localise="none", largest_component=False, threshold=0.5)
    one = [m.segment_volume(image, labels, query, classes=[1], config=config) == 1 for m in members]
    both = PredictorEnsemble(members).segment_volume(
        image, labels, query, classes=[1], config=config
    ) == 1
    assert (one[0] != one[1]).any(), "the two random models should disagree somewhere"
    assert not (one[0] & one[1] & ~both).any()
    assert not (both & ~(one[0] | one[1])).any()
    assert (both != one[0]).any() and (both != one[1]).any()  # both models count


def test_an_extent_either_of_two_models_finds_is_segmented(members, scan, monkeypatch):
    """Localisation by vote: with two models and one support, a slice that one model aligns
    inside the class's extent is segmented, even if the other aligns it outside."""
    image, labels, query = scan
    real = volume._query_positions
    calls = []

    def positions(config, feats, support):  # model 0 maps the query inside, model 1 outside
        calls.append(support.predictor)
        inside = support.predictor is members[0]
        return np.full(feats.shape[0], 4.0 if inside else 0.0)

    monkeypatch.setattr(volume, "_query_positions", positions)
    config = VolumeConfig(largest_component=False, threshold=0.0)
    ensemble = PredictorEnsemble(members)
    out = ensemble.segment_volume(image, labels, query, classes=[1], config=config)
    assert calls == members
    assert (out == 1).all(axis=(1, 2)).all()  # threshold 0: every slice in the extent, fully
    monkeypatch.setattr(volume, "_query_positions", real)


def test_several_supports_with_several_models(members, scan):
    image, labels, query = scan
    ensemble = PredictorEnsemble(members)
    supports = ensemble.encode_support_volume(image, labels) + ensemble.encode_support_volume(
        image[::-1].copy(), labels[::-1].copy()
    )
    out = ensemble.segment_volume_with(supports, query)
    assert len(supports) == 4 and out.shape == query.shape
    np.testing.assert_array_equal(
        out,
        ensemble.segment_volume(
            [image, image[::-1].copy()], [labels, labels[::-1].copy()], query
        ),
    )


# ------------------------------------------------------------------------------------------
# the evaluation protocols take an ensemble as they take one model
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["paper", "whole_volume", "realistic"])
def test_every_protocol_scores_an_ensemble_of_twins_as_the_model(members, scan, protocol):
    image, labels, query = scan
    query_labels = np.concatenate([labels[1:], labels[:2]])
    twin = SupportQueryPredictor(copy.deepcopy(members[0].model), image_size=32)
    scores = [
        evaluate_pair(p, image, labels, query, query_labels, [1, 3], protocol=protocol)
        for p in (members[0], PredictorEnsemble([members[0], twin]))
    ]
    assert scores[0] == scores[1]


# ------------------------------------------------------------------------------------------
# construction and errors
# ------------------------------------------------------------------------------------------


def test_from_checkpoints_loads_one_member_per_file(tmp_path, scan):
    paths = []
    for seed in (3, 4):
        trainer = Trainer(_model(seed), sampler=None, config=TrainConfig(progress=False))
        trainer.save(tmp_path / f"m{seed}.pt")
        paths.append(tmp_path / f"m{seed}.pt")
    ensemble = PredictorEnsemble.from_checkpoints(paths, image_size=32)
    image, labels, query = scan
    expected = sum(
        SupportQueryPredictor(_model(s), image_size=32).predict_proba(image[4], labels[4], query)
        for s in (3, 4)
    ) / 2
    assert len(ensemble) == 2 and "2 models" in repr(ensemble)
    np.testing.assert_allclose(ensemble.predict_proba(image[4], labels[4], query), expected,
                               atol=1e-6)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda m: PredictorEnsemble([]), ValueError, "empty"),
        (lambda m: PredictorEnsemble(m[0]), TypeError, "list of predictors"),
        (lambda m: PredictorEnsemble([m[0], m[0]]), ValueError, "more than once"),
        (lambda m: PredictorEnsemble([m[0], "model.pt"]), TypeError, "SupportQueryPredictor"),
        (
            lambda m: PredictorEnsemble([m[0], _predictor(2, modality="ct")]),
            ValueError,
            "intensity recipes",
        ),
        (lambda m: PredictorEnsemble.from_checkpoints("a.pt"), TypeError, "single path"),
        (lambda m: PredictorEnsemble.from_checkpoints([]), ValueError, "one path per model"),
    ],
)
def test_bad_ensembles_raise_saying_what_to_fix(members, make, error, match):
    with pytest.raises(error, match=match):
        make(members)


def test_segment_with_checks_which_model_prepared_each_support(members, scan):
    image, labels, query = scan
    mine = volume.prepare_support(members[0], image, labels)
    stranger = volume.prepare_support(_predictor(5), image, labels)
    with pytest.raises(ValueError, match="prepared none of the supports"):
        volume.segment_with(members, [mine], query)
    with pytest.raises(ValueError, match="another predictor"):
        volume.segment_with(members, [mine, stranger], query)
    with pytest.raises(TypeError, match="list of them"):
        volume.segment_with({"a": members[0]}, [mine], query)
