"""Names renamed in 0.2 still work for one release, with a DeprecationWarning."""

from __future__ import annotations

import pytest

import fewshotseg as fss
from fewshotseg import evaluation, inference


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (inference, "SupportSet", inference.EncodedSupport),
        (fss, "SupportSet", inference.EncodedSupport),
        (evaluation, "Protocol", evaluation.ProtocolName),
    ],
)
def test_old_names_warn_and_give_the_new_object(module, old, new):
    with pytest.warns(DeprecationWarning, match=old):
        assert getattr(module, old) is new


def test_unknown_names_still_raise_attribute_error():
    for module in (fss, inference, evaluation):
        with pytest.raises(AttributeError, match="no attribute"):
            module.NoSuchName  # noqa: B018
