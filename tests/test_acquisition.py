import numpy as np
import pytest

from mccscan.datasets.acquisition import ACQUISITION_SPACINGS_MM, Acquisition, acquire, draw_acquisition


def _speck_image():
    rng = np.random.default_rng(0)
    image = (0.4 + 0.01 * rng.standard_normal((600, 500))).astype(np.float32)
    yy, xx = np.mgrid[:600, :500]
    image += 0.3 * np.exp(-((yy - 300.0) ** 2 + (xx - 220.0) ** 2) / (2 * 2.0 ** 2))
    breast = np.zeros(image.shape, bool)
    breast[50:550, 30:470] = True
    return image, breast


@pytest.mark.parametrize("spacing_mm", ACQUISITION_SPACINGS_MM)
def test_every_pixel_size_keeps_the_geometry(spacing_mm):
    image, breast = _speck_image()
    out = acquire(image, breast, Acquisition(pixel_spacing_mm=spacing_mm), np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.float32
    y, x = np.unravel_index(np.argmax(out), out.shape)
    assert abs(y - 300) <= 1 and abs(x - 220) <= 1  # the speck stays where it was drawn
    assert np.array_equal(out[~breast], image[~breast])


def test_film_and_contrast_curve_change_the_breast_within_range():
    image, breast = _speck_image()
    film = Acquisition(film=True, noise=0.01, gamma=0.7, s_curve=6, dust=20, scratches=1)
    out = acquire(image, breast, film, np.random.default_rng(0))
    assert 0 <= out.min() and out.max() <= 1
    assert not np.allclose(out[breast], image[breast])


def test_drawn_acquisitions_cover_film_digital_and_every_pixel_size():
    drawn = [draw_acquisition(np.random.default_rng(k)) for k in range(200)]
    assert {a.film for a in drawn} == {True, False}
    assert {a.pixel_spacing_mm for a in drawn} == set(ACQUISITION_SPACINGS_MM)
    assert all(a.dust == 0 and a.scratches == 0 for a in drawn if not a.film)


def test_acquire_checks_the_mask_shape():
    with pytest.raises(ValueError, match="differ"):
        acquire(np.zeros((10, 10), np.float32), np.ones((10, 11), bool), Acquisition(), np.random.default_rng(0))
