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


def test_film_grain_dust_and_scratches_stay_on_the_breast():
    image = np.full((600, 500), 0.5, np.float32)
    breast = np.zeros(image.shape, bool)
    breast[50:550, 30:470] = True
    film = Acquisition(film=True, noise=0.01, dust=40, scratches=3)
    out = acquire(image, breast, film, np.random.default_rng(0))
    assert 0.005 < out[100:500, 100:400].std() < 0.05  # grain on a flat field
    assert (out[breast] > 0.6).sum() >= 20  # dust specks and scratches, far above the grain
    assert np.array_equal(out[~breast], image[~breast])
    everywhere = np.ones(image.shape, bool)
    scratched = acquire(image, everywhere, Acquisition(film=True, scratches=10), np.random.default_rng(1))
    edges = (scratched[0], scratched[-1], scratched[:, 0], scratched[:, -1])
    on_edges = sum(int((edge > 0.52).sum()) for edge in edges)
    assert on_edges < 60  # a scratch crosses the image edge; it is not piled up along it


def test_gamma_and_film_curve_keep_the_range_and_the_order():
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (64, 1))
    breast = np.ones(ramp.shape, bool)
    for acquisition in (Acquisition(gamma=0.6), Acquisition(gamma=1.6), Acquisition(s_curve=6)):
        out = acquire(ramp, breast, acquisition, np.random.default_rng(0))
        assert out[0, 0] == pytest.approx(0, abs=1e-6) and out[0, -1] == pytest.approx(1, abs=1e-6)
        assert np.all(np.diff(out[0]) >= 0) and not np.allclose(out, ramp)


def test_acquire_rejects_a_bad_pixel_size():
    with pytest.raises(ValueError, match="positive"):
        acquire(np.zeros((10, 10), np.float32), np.ones((10, 10), bool), Acquisition(pixel_spacing_mm=0),
                np.random.default_rng(0))


def test_drawn_acquisitions_cover_film_digital_and_every_pixel_size():
    drawn = [draw_acquisition(np.random.default_rng(k)) for k in range(200)]
    assert {a.film for a in drawn} == {True, False}
    assert {a.pixel_spacing_mm for a in drawn} == set(ACQUISITION_SPACINGS_MM)
    assert all(a.dust == 0 and a.scratches == 0 for a in drawn if not a.film)


def test_acquire_checks_the_mask_shape():
    with pytest.raises(ValueError, match="differ"):
        acquire(np.zeros((10, 10), np.float32), np.ones((10, 11), bool), Acquisition(), np.random.default_rng(0))
