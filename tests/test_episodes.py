"""EpisodeSampler: shapes, non-empty foreground, determinism (workers, resume), setting 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fewshotseg.episodes import (
    AugmentConfig,
    Episode,
    EpisodeBatch,
    EpisodeSampler,
    collate_episodes,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (large on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _grid_superpixels(depth: int, size: int, cell: int, offset: int = 0) -> np.ndarray:
    """(D, size, size) label volume of square superpixels, ids 1.. consecutive per volume."""
    yy, xx = np.mgrid[:size, :size]
    per_row = -(-size // cell)
    one = (yy // cell) * per_row + (xx // cell) + 1
    return np.stack([one + offset + z * per_row**2 for z in range(depth)]).astype(np.int32)


def _scans(n: int = 2, depth: int = 4, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(depth, size, size)).astype(np.float32) for _ in range(n)]


def _organs(depth: int, size: int, present: dict[int, list[int]]) -> np.ndarray:
    """Label volume with class c as a block in the slices listed in present[c]."""
    lab = np.zeros((depth, size, size), dtype=np.int64)
    step = size // 4
    for c, slices in present.items():
        y0 = ((c - 1) % 4) * step
        for z in slices:
            lab[z, y0:y0 + step, step:3 * step] = c
    return lab


def _equal(a: Episode, b: Episode) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k))
               for k in ("support_images", "support_masks", "query_image", "query_label"))


def _superpixel_sampler(**kw) -> EpisodeSampler:
    images = _scans(2, 4, 32)
    labels = [_grid_superpixels(4, 32, 8), _grid_superpixels(4, 32, 16)]
    kw = {"image_size": 32, "min_foreground": 20, "seed": 0} | kw
    return EpisodeSampler(images, labels, **kw)


# ---------------------------------------------------------------- shapes and content
@pytest.mark.parametrize(("ways", "shots"), [(1, 1), (2, 1), (3, 5)])
def test_superpixel_episode_shapes_and_dtypes(ways, shots):
    ep = _superpixel_sampler(ways=ways, shots=shots).sample()
    assert ep.support_images.shape == (shots, 1, 32, 32)
    assert ep.support_masks.shape == (shots, ways, 32, 32)
    assert ep.query_image.shape == (1, 32, 32) and ep.query_label.shape == (32, 32)
    assert ep.support_images.dtype == ep.support_masks.dtype == torch.float32
    assert ep.query_image.dtype == torch.float32 and ep.query_label.dtype == torch.int64
    assert set(ep.support_masks.unique().tolist()) <= {0.0, 1.0}
    assert (ep.support_masks.sum(1) <= 1).all()  # one-hot: classes never overlap
    assert set(ep.query_label.unique().tolist()) == set(range(ways + 1))


def test_superpixel_episode_without_augmentation_is_the_slice_and_its_superpixel():
    images = _scans(1, 3, 16)
    labels = [_grid_superpixels(3, 16, 8)]
    sampler = EpisodeSampler(images, labels, image_size=16, min_foreground=4, augment=None,
                             seed=4, shots=2)
    for i in range(5):
        info = sampler.describe(i)
        ep = sampler.episode(i)
        z = info.query_slice
        assert info.support_slices == (z, z) and info.support_scan == info.query_scan == 0
        expected = torch.from_numpy(labels[0][z] == info.classes[0])
        assert torch.equal(ep.query_label, expected.long())
        assert torch.equal(ep.support_masks[1, 0], expected.float())
        assert torch.equal(ep.query_image[0], torch.from_numpy(images[0][z]))


def test_every_superpixel_id_can_be_drawn():
    # the reference's randint(1, max_id) never drew the last id; here every id is drawn
    labels = [_grid_superpixels(1, 12, 4)]  # ids 1..9
    sampler = EpisodeSampler(_scans(1, 1, 12), labels, image_size=12, min_foreground=1, seed=0,
                             augment=None)
    drawn = {sampler.describe(i).classes[0] for i in range(300)}
    assert drawn == set(range(1, 10))


def test_min_foreground_filters_superpixels():
    lab = np.zeros((2, 20, 20), dtype=np.int32)
    lab[0, :10, :10] = 1        # 100 px
    lab[0, 15:17, 15:17] = 2    # 4 px: too small
    lab[1, :3, :3] = 3          # 9 px: too small, slice 1 unusable
    sampler = EpisodeSampler([np.ones((2, 20, 20))], [lab], image_size=20, min_foreground=50,
                             seed=0, augment=None)
    assert sampler.num_slices == 1
    assert {sampler.describe(i).classes for i in range(50)} == {(1,)}


def test_slices_are_resized_to_image_size():
    lab = np.zeros((2, 24, 40), dtype=np.int32)
    lab[:, 4:20, 5:35] = 7
    sampler = EpisodeSampler([np.random.default_rng(0).random((2, 24, 40))], [lab],
                             image_size=(48, 80), min_foreground=10, seed=0, augment=None)
    ep = sampler.sample()
    assert ep.query_image.shape == (1, 48, 80)
    assert int(ep.query_label.sum()) == 4 * int((lab[0] == 7).sum())  # nearest x2 upsampling


def test_supervised_support_and_query_come_from_different_scans():
    present = {1: [1, 2, 3], 2: [2, 3, 4], 3: [0, 1]}
    labels = [_organs(5, 32, present) for _ in range(3)]
    sampler = EpisodeSampler(_scans(3, 5, 32), labels, mode="supervised", ways=2, shots=3,
                             image_size=32, min_foreground=10, seed=2)
    assert sampler.classes == (1, 2, 3)
    for i in range(40):
        info = sampler.describe(i)
        assert info.support_scan != info.query_scan
        for z in (*info.support_slices, info.query_slice):
            for c in info.classes:
                assert z in present[c]
        ep = sampler.episode(i)
        assert ep.support_masks.shape == (3, 2, 32, 32)
        assert (ep.support_masks.flatten(2).sum(-1) > 0).all()


def test_supervised_single_scan_uses_another_slice():
    labels = [_organs(6, 32, {1: [0, 1, 2, 3]})]
    sampler = EpisodeSampler(_scans(1, 6, 32), labels, mode="supervised", image_size=32,
                             min_foreground=10, seed=0, shots=2)
    for i in range(30):
        info = sampler.describe(i)
        assert info.query_scan == info.support_scan == 0
        assert info.query_slice not in info.support_slices


def test_supervised_ignore_label_is_kept():
    lab = _organs(3, 32, {1: [0, 1, 2]})
    lab[:, 0:2, :] = 255
    sampler = EpisodeSampler(_scans(2, 3, 32), [lab, lab.copy()], mode="supervised",
                             image_size=32, min_foreground=10, seed=0, augment=None)
    ep = sampler.sample()
    assert set(ep.query_label.unique().tolist()) == {0, 1, 255}
    assert sampler.classes == (1,)
    assert float(ep.support_masks[:, :, 0:2].sum()) == 0.0  # ignore is not foreground


# ---------------------------------------------------------------- never empty
def test_thousand_episodes_have_foreground_in_every_support_and_query():
    sampler = _superpixel_sampler(ways=2, shots=2, min_foreground=20,
                                  augment=AugmentConfig(shift=10.0, rotation=20.0))
    for i in range(1000):
        ep = sampler.episode(i)
        assert (ep.support_masks.flatten(2).sum(-1) > 0).all(), i
        for n in (1, 2):
            assert bool((ep.query_label == n).any()), i


def test_vanishing_foreground_is_redrawn_and_counted():
    # one-pixel superpixels at the border: large shifts often push them out of the image
    lab = np.zeros((1, 16, 16), dtype=np.int32)
    lab[0, 0, 0], lab[0, 15, 15] = 1, 2
    sampler = EpisodeSampler([np.random.default_rng(0).random((1, 16, 16))], [lab],
                             image_size=16, min_foreground=1, seed=0,
                             augment=AugmentConfig(shift=6.0, rotation=30.0))
    for i in range(100):
        ep = sampler.episode(i)
        assert bool((ep.query_label == 1).any()) and float(ep.support_masks.sum()) > 0
    assert sampler.resample_count > 0


def test_an_item_that_lacks_the_class_before_the_transform_is_not_redrawn():
    """Only a foreground the transform removed is redrawn: an item without it from the start
    (a query slice that does not show the support's region) is transformed once and kept."""
    sampler = _superpixel_sampler(seed=0)
    images = torch.rand(2, 1, 32, 32)
    selected = torch.zeros(2, 1, 32, 32)
    selected[0, 0, 8:24, 8:24] = 1  # the support shows class 1, the query does not
    generator = torch.Generator().manual_seed(0)
    warped, warped_sel = sampler._transform(images, selected, generator)
    assert sampler.resample_count == 0
    assert not torch.equal(warped[1], images[1])  # transformed, not left as it was
    assert float(warped_sel[1].abs().sum()) == 0 and bool((warped_sel[0] == 1).any())


# ---------------------------------------------------------------- determinism
def test_same_seed_same_stream_and_episode_is_pure():
    a, b = _superpixel_sampler(seed=7), _superpixel_sampler(seed=7)
    stream_a = [a.sample() for _ in range(5)]
    stream_b = [b.sample() for _ in range(5)]
    assert all(_equal(x, y) for x, y in zip(stream_a, stream_b, strict=True))
    assert _equal(a.episode(3), stream_a[3])  # random access gives the same episode
    assert not _equal(stream_a[0], stream_a[1])
    c = _superpixel_sampler(seed=8)
    assert not _equal(c.episode(0), stream_a[0])
    d = _superpixel_sampler(seed=7, rank=1)
    assert not _equal(d.episode(0), stream_a[0])


def test_resume_continues_exactly():
    a = _superpixel_sampler(seed=None)
    for _ in range(3):
        a.sample()
    state = a.state_dict()
    expected = [a.sample() for _ in range(3)]
    b = _superpixel_sampler(seed=None)  # another OS seed: the state brings the old one
    b.load_state_dict(state)
    assert b.next_index == 3
    assert all(_equal(x, b.sample()) for x in expected)


def test_resume_rejects_a_state_from_other_settings():
    state = _superpixel_sampler().state_dict()
    with pytest.raises(ValueError, match="ways"):
        _superpixel_sampler(ways=2).load_state_dict(state)


def test_plain_iteration_advances_the_stream():
    s = _superpixel_sampler(seed=1)
    it = iter(s)
    first = [next(it) for _ in range(3)]
    assert s.next_index == 3
    assert _equal(first[2], _superpixel_sampler(seed=1).episode(2))


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_stream_is_the_same_with_workers(workers):
    reference = _superpixel_sampler(seed=5)
    expected = [reference.episode(i) for i in range(6)]
    sampler = _superpixel_sampler(seed=5)
    loader = DataLoader(sampler, batch_size=None, num_workers=workers)
    got = [ep for _, ep in zip(range(6), loader, strict=False)]
    assert all(_equal(x, y) for x, y in zip(expected, got, strict=True))


def test_dataloader_batches_are_the_same_with_workers():
    sampler = _superpixel_sampler(seed=5, shots=2)
    sampler.load_state_dict({"next_index": 4, "seed": 5})
    batches = sampler.batches(3)
    loader = DataLoader(batches, batch_size=None, num_workers=2)
    got = [b for _, b in zip(range(3), loader, strict=False)]
    for j, batch in enumerate(got):
        assert isinstance(batch, EpisodeBatch) and len(batch) == 3
        expected = collate_episodes([sampler.episode(4 + 3 * j + k) for k in range(3)])
        assert torch.equal(batch.query_images, expected.query_images)
        assert torch.equal(batch.support_masks, expected.support_masks)


# ---------------------------------------------------------------- setting 2
def test_setting2_never_yields_an_excluded_slice():
    organs = [_organs(6, 32, {1: [0, 1, 2], 2: [2, 3], 3: [4]}) for _ in range(2)]
    images = _scans(2, 6, 32)
    superpixels = [_grid_superpixels(6, 32, 8) for _ in range(2)]
    sampler = EpisodeSampler(images, superpixels, image_size=32, min_foreground=10, seed=0,
                             exclude_classes=[2, 3], exclude_from=organs)
    assert sampler.excluded_slices == 2 * 3
    seen = {sampler.describe(i).query_slice for i in range(300)}
    assert seen == {0, 1, 5}
    supervised = EpisodeSampler(images, organs, mode="supervised", image_size=32,
                                min_foreground=10, seed=0, exclude_classes=[2])
    assert supervised.classes == (1, 3)  # class 2 is excluded, its slices 2 and 3 dropped
    used = set()
    for i in range(100):
        info = supervised.describe(i)
        used.update((*info.support_slices, info.query_slice))
        assert int(supervised.episode(i).query_label.max()) == 1
    assert used == {0, 1, 4}


def test_setting1_is_the_default():
    organs = [_organs(4, 32, {1: [0, 1], 2: [2, 3]}) for _ in range(2)]
    sampler = EpisodeSampler(_scans(2, 4, 32), organs, mode="supervised", image_size=32,
                             min_foreground=10, seed=0)
    assert sampler.excluded_slices == 0 and sampler.classes == (1, 2)


# ---------------------------------------------------------------- batches
def test_collate_and_to():
    sampler = _superpixel_sampler(ways=2, shots=3)
    batch = collate_episodes([sampler.episode(i) for i in range(4)])
    assert batch.support_images.shape == (4, 3, 1, 32, 32)
    assert batch.support_masks.shape == (4, 3, 2, 32, 32)
    assert batch.query_images.shape == (4, 1, 32, 32)
    assert batch.query_labels.shape == (4, 32, 32)
    moved = batch.to("cpu")
    assert torch.equal(moved.query_labels, batch.query_labels)
    other = _superpixel_sampler(ways=1).sample()
    with pytest.raises(ValueError, match="same shots, ways"):
        collate_episodes([sampler.episode(0), other])
    with pytest.raises(ValueError, match="at least one"):
        collate_episodes([])


# ---------------------------------------------------------------- errors
def test_error_names_the_scan_with_mismatched_shapes():
    labels = [_grid_superpixels(4, 32, 8), _grid_superpixels(3, 32, 8)]
    with pytest.raises(ValueError, match="scan 1: image shape"):
        EpisodeSampler(_scans(2, 4, 32), labels, image_size=32)


def test_error_names_the_scan_without_foreground():
    labels = [_grid_superpixels(4, 32, 8), np.zeros((4, 32, 32), dtype=np.int32)]
    with pytest.raises(ValueError, match="labels of scan 1 have no foreground"):
        EpisodeSampler(_scans(2, 4, 32), labels, image_size=32)


def test_error_when_no_slice_is_usable():
    labels = [_grid_superpixels(4, 32, 4)]  # 16-pixel superpixels
    with pytest.raises(ValueError, match="no usable slice"):
        EpisodeSampler(_scans(1, 4, 32), labels, image_size=32, min_foreground=100)
    with pytest.raises(ValueError, match="no usable slice"):
        EpisodeSampler(_scans(1, 4, 32), [_grid_superpixels(4, 32, 32)], image_size=32, ways=2)


@pytest.mark.parametrize(("images", "labels", "match", "exc"), [
    ([np.full((2, 8, 8), np.nan)], [np.ones((2, 8, 8), int)], "image of scan 0 contains NaN",
     ValueError),
    ([np.ones((2, 8, 8))], [np.full((2, 8, 8), 1.5)], "labels of scan 0 has non-integer",
     ValueError),
    ([np.ones((2, 8, 8))], [-np.ones((2, 8, 8), int)], "negative", ValueError),
    ([np.ones((2, 8, 8))], [np.ones((2, 8, 8), int), np.ones((2, 8, 8), int)], "one label",
     ValueError),
    (np.ones((2, 8, 8)), [np.ones((2, 8, 8), int)], "wrap a single volume", TypeError),
    ([np.ones((1, 2, 8, 8))], [np.ones((1, 2, 8, 8), int)], r"\(D, H, W\)", ValueError),
])
def test_bad_inputs_are_explained(images, labels, match, exc):
    with pytest.raises(exc, match=match):
        EpisodeSampler(images, labels, image_size=8, min_foreground=1)


def test_bad_settings_are_explained():
    images, labels = _scans(1, 2, 8), [np.ones((2, 8, 8), int)]
    with pytest.raises(ValueError, match="exclude_from"):
        EpisodeSampler(images, labels, image_size=8, exclude_classes=[1])
    with pytest.raises(ValueError, match="mode"):
        EpisodeSampler(images, labels, mode="fully")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ways"):
        EpisodeSampler(images, labels, ways=0)
    with pytest.raises(ValueError, match="no usable class combination"):
        EpisodeSampler(images, labels, mode="supervised", image_size=8, min_foreground=1,
                       ways=2)


def test_float_label_volumes_with_integer_values_are_accepted():
    labels = [_grid_superpixels(2, 16, 8).astype(np.float32)]
    sampler = EpisodeSampler(torch.from_numpy(np.stack(_scans(1, 2, 16)))[0:1].unbind(0),
                             labels, image_size=16, min_foreground=4, seed=0)
    assert sampler.sample().query_label.max() == 1


@pytest.mark.cuda
def test_cuda_episodes_match_cpu_choices():
    cpu = _superpixel_sampler(seed=3)
    gpu = _superpixel_sampler(seed=3, device="cuda")
    a, b = cpu.episode(2), gpu.episode(2)
    assert b.query_image.is_cuda
    torch.testing.assert_close(b.query_image.cpu(), a.query_image, atol=1e-4, rtol=1e-4)


def test_episode_records_are_still_importable_from_episodes():
    """The records moved to fewshotseg.episode_records (issue 18); the old names are the same
    objects."""
    from fewshotseg import episode_records, episodes

    for name in episode_records.__all__:
        assert getattr(episodes, name) is getattr(episode_records, name)
        assert name in episodes.__all__


# ---------------------------------------------------------------- bias field
def test_bias_field_changes_intensities_only():
    """The same seed with and without the bias field: same classes and masks, other images."""
    plain = _superpixel_sampler(seed=4)
    biased = _superpixel_sampler(seed=4, augment=AugmentConfig(bias_field=0.3))
    for i in range(5):
        a, b = plain.episode(i), biased.episode(i)
        assert torch.equal(a.query_label, b.query_label)
        assert torch.equal(a.support_masks, b.support_masks)
        assert not torch.allclose(a.query_image, b.query_image)
