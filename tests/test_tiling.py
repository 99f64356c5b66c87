import numpy as np
import pytest

from mccscan.tiling import TileGrid, breast_mask, otsu_threshold


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


def test_breast_mask_cuts_off_film_border_strips_touching_the_breast(small_phantom):
    image = small_phantom.image.copy()
    image[:45, :] = np.linspace(0.8, 0.4, 45)[:, None]  # a 3 mm bright film border along the top …
    image[-100:, :] = 0.6  # … and a 7 mm one along the bottom, both running into the breast at the chest wall
    mask = breast_mask(image)
    truth = small_phantom.breast_mask
    assert not mask[:45, 200:].any() and not mask[-100:, 200:].any()
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95


def test_breast_mask_validates_the_spacing():
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        breast_mask(np.zeros((10, 10), np.float32), pixel_spacing_mm=0)


def test_a_breast_too_small_for_the_opening_is_kept():
    image = np.zeros((400, 400), np.float32)
    image[180:280, 150:250] = 0.5  # 7 mm across: no 1 cm disk fits, nothing to cut off either
    mask = breast_mask(image)
    assert mask[200:260, 170:230].all() and not mask[:100].any()
