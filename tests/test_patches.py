import numpy as np
import pytest

from mccscan.patches import (AUGMENTATIONS, TileGrid, augment_x5, balanced_indices, breast_mask,
                             otsu_threshold, phantom_patches)


def test_breast_mask_matches_the_truth_and_drops_markers(small_phantom):
    image = small_phantom.image.copy()
    image[20:60, -80:-20] = 0.9  # a bright label marker in the background
    mask = breast_mask(image)
    truth = small_phantom.breast_mask
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.97
    assert not mask[20:60, -80:-20].any()


def test_otsu_separates_two_modes():
    values = np.concatenate([np.full(1000, 0.1), np.full(1000, 0.7)])
    assert 0.1 < otsu_threshold(values) < 0.7


def test_tile_grid_covers_the_image_with_padding():
    grid = TileGrid((300, 500), 144)
    assert (grid.n_rows, grid.n_cols, grid.padded_shape) == (3, 4, (432, 576))
    image = np.arange(300 * 500, dtype=np.float32).reshape(300, 500)
    tiles = grid.tiles(image)
    assert tiles.shape == (3, 4, 144, 144)
    np.testing.assert_array_equal(tiles[1, 2], image[144:288, 288:432])
    assert tiles[2, 3, -1, -1] == 0  # padding
    coverage = grid.coverage(np.ones((300, 500), bool))
    assert coverage[0, 0] == 1 and coverage[2, 3] == pytest.approx((12 * 68) / 144 ** 2)


def test_augment_x5_is_the_papers_five_geometric_versions():
    p = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    out = augment_x5(p)
    assert out.shape == (2, 5, 4, 4) and len(AUGMENTATIONS) == 5
    np.testing.assert_array_equal(out[:, 0], p)
    np.testing.assert_array_equal(out[1, 1], np.fliplr(p[1]))
    np.testing.assert_array_equal(out[1, 2], np.rot90(p[1], 2))
    np.testing.assert_array_equal(out[1, 3], np.flipud(p[1]))  # mirror then 180° = vertical flip
    np.testing.assert_array_equal(out[1, 4], np.rot90(p[1], 1))
    assert len({out[1, k].tobytes() for k in range(5)}) == 5


def test_phantom_patch_labels_follow_the_rule(small_phantom, rng):
    patches, labels, kinds = phantom_patches(small_phantom, rng, positives_per_cluster=6, negatives=20)
    assert patches.dtype == np.uint8 and patches.shape[1:] == (144, 144)
    assert labels.sum() == 12 and (labels == 0).sum() == 20 and set(kinds) == {"cluster", "tissue"}
    stress = phantom_patches(small_phantom, rng, positives_per_cluster=0, negatives=5, isolated_mc_negatives=True)
    assert list(stress[1]) == [0] * 5 and set(stress[2]) == {"isolated_mc"}
    # recover each patch's position by matching it in the image, then check the rule
    img8 = small_phantom.to_uint8()
    cluster_mcs = np.array([(m.x, m.y) for m in small_phantom.mcs if m.cluster_id is not None])
    all_mcs = np.array([(m.x, m.y) for m in small_phantom.mcs])
    for patch, label in zip(patches[::3], labels[::3]):
        ys, xs = np.nonzero((img8[:-143, :-143] == patch[0, 0]))
        pos = next((x, y) for y, x in zip(ys, xs) if np.array_equal(img8[y:y + 144, x:x + 144], patch))

        def inside(mcs):
            return ((mcs[:, 0] >= pos[0]) & (mcs[:, 0] < pos[0] + 144)
                    & (mcs[:, 1] >= pos[1]) & (mcs[:, 1] < pos[1] + 144)).sum()
        assert inside(cluster_mcs) >= 3 if label else inside(all_mcs) == 0


def test_balanced_indices(rng):
    labels = np.array([1] * 10 + [0] * 50)
    keep = balanced_indices(labels, rng)
    assert (labels[keep] == 1).sum() == (labels[keep] == 0).sum() == 10
    assert np.all(np.diff(keep) > 0)
