"""Hypothesis fuzzing of the two user-facing calls, `predict` and `segment_volume`, with a tiny
model and small shapes: every input gives a correct label map or a clear ValueError/TypeError.

The example counts are fixed by ``max_examples`` below; ``pytest tests/test_fuzz.py
--hypothesis-show-statistics`` prints how many ran (docs/benchmarks.md, "Reliability").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fewshotseg import ALPNet, SupportQueryPredictor

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module")
def predictor():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield SupportQueryPredictor(ALPNet(backbone="tiny", feature_dim=8), image_size=16)
    torch.set_num_threads(before)


def _clear(err: Exception) -> bool:
    """A clear error: one line or a few, saying what was expected, no internals."""
    text = str(err)
    return 10 < len(text) < 400 and "Traceback" not in text


# ---------------------------------------------------------------------------- predict

anything = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int8, np.uint16, np.bool_, np.int64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=10),
    ),
    st.none(), st.integers(), st.lists(st.integers(0, 3), max_size=4), st.text(max_size=3),
)  # fmt: skip


@settings(FUZZ, max_examples=150)
@given(img=anything, mask=anything, query=anything)
def test_predict_on_malformed_inputs_raises_clear_errors(predictor, img, mask, query):
    try:
        out = predictor.predict(img, mask, query)
    except (ValueError, TypeError) as err:
        assert _clear(err), str(err)
        event(f"rejected: {type(err).__name__}")
        return
    event("accepted")
    # accepted: then it must be a correct answer
    assert out.shape == np.shape(query)
    assert set(np.unique(out).tolist()) <= {int(v) for v in np.unique(mask)} | {0}


@settings(FUZZ, max_examples=100)
@given(
    data=st.data(),
    shots=st.integers(1, 3),
    size=st.tuples(st.integers(12, 24), st.integers(12, 24)),
    depth=st.integers(1, 4),
    values=st.lists(st.integers(1, 300), min_size=1, max_size=3, unique=True),
)
def test_predict_on_valid_inputs_is_correct(predictor, data, shots, size, depth, values):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    img = rng.normal(data.draw(st.floats(-1e3, 1e3)), 10.0, (shots, *size)).astype(np.float32)
    mask = np.zeros((shots, *size), np.int64)
    h, w = size
    for k, v in enumerate(values):  # a band per class, big enough to survive resizing
        mask[:, k * h // len(values) : (k + 1) * h // len(values), : w // 2 + 2] = v
    query = rng.random((depth, *size)).astype(np.float32)
    event(f"{len(values)}-way {shots}-shot")
    proba = predictor.predict_proba(img, mask, query)
    out = predictor.predict(img, mask, query)
    assert out.shape == query.shape and out.dtype == np.int64
    assert proba.shape == (len(values) + 1, *query.shape)
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    lut = np.array([0, *sorted(values)])
    np.testing.assert_array_equal(out, lut[proba.argmax(0)])


# ---------------------------------------------------------------------- segment_volume


@settings(FUZZ, max_examples=60)
@given(
    data=st.data(),
    depth=st.integers(1, 6),
    qdepth=st.integers(1, 6),
    size=st.tuples(st.integers(8, 20), st.integers(8, 20)),
    values=st.lists(st.integers(1, 9), min_size=0, max_size=3, unique=True),
)
def test_segment_volume_gives_a_label_map_or_a_clear_error(
    predictor, data, depth, qdepth, size, values
):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    volume = rng.random((depth, *size)).astype(np.float32) * 100
    labels = np.zeros((depth, *size), np.int64)
    for v in values:
        z = data.draw(st.integers(0, depth - 1))
        y, x = data.draw(st.integers(0, size[0] - 4)), data.draw(st.integers(0, size[1] - 4))
        labels[z : z + 2, y : y + 4, x : x + 4] = v
    query = rng.random((qdepth, *data.draw(st.sampled_from([size, (size[1], size[0])]))))
    classes = data.draw(st.one_of(st.none(), st.none(), st.just([]), st.just(1), st.lists(
        st.sampled_from([0, *values, 10]), max_size=3)))  # fmt: skip
    try:
        out = predictor.segment_volume(volume, labels, query.astype(np.float32), classes=classes)
    except (ValueError, TypeError) as err:
        assert _clear(err), str(err)
        event(f"rejected: {type(err).__name__}")
        return
    event("accepted")
    present = {int(v) for v in np.unique(labels) if v}
    assert present, "segment_volume accepted a support without any label"
    assert out.shape == query.shape and out.dtype == np.int64
    allowed = present if classes is None else set(classes)
    assert set(np.unique(out).tolist()) <= allowed | {0}
