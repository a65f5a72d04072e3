"""Tests for fewshotseg.viz: overlays as figures and PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fewshotseg import viz  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 32, 32)).astype(np.float32)
    truth = np.zeros((5, 32, 32), np.int32)
    truth[3, 5:20, 5:20] = 1  # slice 3 has the most foreground
    truth[1, 2:4, 2:4] = 2
    truth[3, 25:30, 25:30] = 2
    prediction = np.roll(truth, 2, axis=2)
    return image, truth, prediction


def _legend_texts(fig) -> list[str]:
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


@pytest.mark.parametrize("style", ["contour", "fill"])
def test_save_overlay_writes_a_png(tmp_path: Path, style: str) -> None:
    image, truth, prediction = _volume()
    out = viz.save_overlay(
        image, truth, prediction, path=tmp_path / "sub" / "o.png", style=style, dpi=50
    )
    data = out.read_bytes()
    assert out == tmp_path / "sub" / "o.png"
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_contour_overlay_picks_the_busiest_slice_and_names_classes() -> None:
    image, truth, prediction = _volume()
    fig = viz.overlay(image, truth, prediction, classes={1: "liver", 2: "spleen", 3: "kidney"})
    assert fig._suptitle.get_text() == "slice 3"
    assert len(fig.axes) == 1
    # kidney is absent from the slice, so not in the legend; line styles are explained
    assert _legend_texts(fig) == ["liver", "spleen", "truth", "prediction"]
    # two classes x (truth, prediction) contour sets
    assert len(fig.axes[0].collections) == 4


def test_fill_overlay_has_one_panel_per_label_map() -> None:
    image, truth, prediction = _volume()
    fig = viz.overlay(image, truth, prediction, style="fill", slice_index=1, title="case 1")
    assert [ax.get_title() for ax in fig.axes] == ["truth", "prediction"]
    assert fig._suptitle.get_text() == "case 1"
    assert _legend_texts(fig) == ["class 2"]
    assert len(viz.overlay(image, prediction=prediction, style="fill").axes) == 1


def test_2d_slice_image_only_and_rotation() -> None:
    image, truth, _ = _volume()
    fig = viz.overlay(image[3], rot90=1)
    assert fig._suptitle is None
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown, np.rot90(image[3]))
    assert _legend_texts(fig) == []
    fig = viz.overlay(image, truth, slice_index=-1)  # empty slice: nothing drawn, no error
    assert fig._suptitle.get_text() == "slice 4"


def test_errors() -> None:
    image, truth, _ = _volume()
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(image, truth[:, :10])
    with pytest.raises(ValueError, match="style"):
        viz.overlay(image, truth, style="outline")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slice_index"):
        viz.overlay(image[0], truth[0], slice_index=0)
    with pytest.raises(ValueError, match="out of range"):
        viz.overlay(image, truth, slice_index=5)
    with pytest.raises(ValueError, match="whole numbers"):
        viz.overlay(image, truth + 0.5)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(image, truth, alpha=0.0)


def test_support_query_figure_names_organs_with_their_dice() -> None:
    from fewshotseg.viz import support_query_figure

    support, s_lab = np.zeros((10, 12)), np.zeros((10, 12), int)
    s_lab[1:4, 1:4], s_lab[6:9, 6:9] = 1, 2
    query, truth = np.ones((8, 8)), np.zeros((8, 8), int)
    truth[2:5, 2:5] = 1
    names, dice = {1: "liver", 2: "spleen"}, {1: 0.5, 2: float("nan")}
    fig = support_query_figure(support, s_lab, query, truth, truth, classes=names, dice=dice)
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert legend == ["liver: Dice 50.0 %", "spleen"]  # no score shown for an unscored organ
    with pytest.raises(ValueError, match="query: prediction"):
        support_query_figure(support, s_lab, query, truth, truth[:4])


# ------------------------------------------------------------ slices chosen by class extents


def _figure_texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_slice_extents_are_first_and_last_slice_per_class() -> None:
    labels = np.zeros((12, 3, 3), np.int16)
    labels[2:7, 0, 0], labels[9, 1, 1], labels[4, 2, 2] = 3, 1, 3  # class 3 twice, in one extent
    assert viz.slice_extents(labels) == {1: (9, 9), 3: (2, 6)}
    assert viz.slice_extents(np.zeros((4, 2, 2), int)) == {}
    with pytest.raises(ValueError, match="D, H, W"):
        viz.slice_extents(labels[0])


def test_extent_slices_show_every_class_then_fill_the_widest_gaps() -> None:
    labels = np.zeros((40, 3, 3), int)
    labels[0:10, 0, 0] = 1  # extents 0-9 and 5-14 overlap: one slice, the middle of 5..9
    labels[5:15, 1, 1] = 2
    labels[20:30, 2, 2] = 3  # alone: the middle of 20..29 (24 and 25 tie: the first)
    assert viz.extent_slices(labels, 2) == [7, 24]
    assert viz.extent_slices(labels, 1) == [7, 24]  # every class is shown, whatever count says
    # the gaps are counted in slices inside an extent (15..19 hold nothing and are skipped):
    # 7..24 spans 12 such slices, so its middle (13) comes first, then the middle of 0..7
    assert viz.extent_slices(labels, 4) == [3, 7, 13, 24]
    for count in (1, 3, 6):
        shown = viz.extent_slices(labels, count)
        assert all(labels[z].any() for z in shown)
        assert {1, 2, 3} <= {int(v) for z in shown for v in np.unique(labels[z])}


def test_extent_slices_prefer_a_slice_holding_every_class_of_a_group() -> None:
    labels = np.zeros((10, 3, 3), int)
    labels[0:10, 0, 0] = 1
    labels[5, 0, 0] = 0  # class 1 skips slice 5, the middle of the common range 4..6
    labels[4:7, 1, 1] = 2
    assert viz.extent_slices(labels, 1) == [4]  # 4 and 6 hold both classes; 4 comes first


def test_extent_slices_on_short_or_empty_extents() -> None:
    labels = np.zeros((40, 2, 2), int)
    labels[10:13, 0, 0] = 1
    assert viz.extent_slices(labels, 4) == [10, 11, 12]  # no more slices than the extent has
    assert viz.extent_slices(np.zeros((5, 2, 2), int), 3) == [1, 2, 3]  # nothing: whole volume
    with pytest.raises(ValueError, match="count"):
        viz.extent_slices(labels, 0)


def test_overlay_slices_name_the_classes_and_never_say_class_n() -> None:
    image = np.random.default_rng(1).normal(size=(6, 16, 16))
    labels = np.zeros((6, 16, 16), int)
    labels[1:5, 2:8, 2:8], labels[2:4, 10:14, 10:14] = 1, 4
    zs = viz.extent_slices(labels, 3)
    fig = viz.overlay_slices(image, labels, zs, classes={1: "liver", 4: "spleen"}, title="q")
    texts = _figure_texts(fig)
    assert "liver" in texts and "spleen" in texts
    assert not any(t.startswith("class") for t in texts)
    assert [ax.get_title() for ax in fig.axes] == [f"slice {z}" for z in zs]
    assert "class 4" in _figure_texts(viz.overlay_slices(image, labels, zs))  # unnamed: a number
