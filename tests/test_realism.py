import numpy as np
import pytest

from mccscan.datasets.phantom import power_law_noise
from mccscan.realism import ROI_PX, measure, radial_power, roi_corners, spectral_slope


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_spectral_slope_recovers_beta_of_power_law_noise(beta):
    noise = power_law_noise((ROI_PX, ROI_PX), beta, np.random.default_rng(1))
    freq, power = radial_power(noise)
    assert spectral_slope(freq, power, (0.02, 0.3)) == pytest.approx(beta, abs=0.25)


def test_radial_power_needs_a_square():
    with pytest.raises(ValueError, match="square"):
        radial_power(np.zeros((10, 12)))


def test_rois_lie_inside_the_region():
    region = np.zeros((1000, 800), bool)
    region[100:700, 50:600] = True
    corners = roi_corners(region)
    assert corners and all(region[r:r + ROI_PX, c:c + ROI_PX].all() for r, c in corners)


def test_specks_and_histogram_respond_to_what_they_measure():
    rng = np.random.default_rng(0)
    tissue = (0.5 + 0.05 * power_law_noise((1600, 1600), 3.0, rng)).astype(np.float32)
    breast = np.ones(tissue.shape, bool)
    plain = measure(tissue, breast)
    specked = tissue.copy()
    ys, xs = rng.integers(200, 1400, (2, 400))
    specked[ys, xs] += 0.2  # 400 bright specks, about 6 per cm² of the measured area
    more = measure(specked, breast)
    assert more.specks_per_cm2 > plain.specks_per_cm2 + 2
    assert more.mc_band_log10 > plain.mc_band_log10
    assert plain.median == pytest.approx(0.5, abs=0.05) and plain.beta == pytest.approx(3.0, abs=0.4)


def test_measure_names_a_breast_too_small_to_measure():
    with pytest.raises(ValueError, match="inside the breast"):
        measure(np.zeros((300, 300), np.float32), np.ones((300, 300), bool))


def test_realism_figure_with_phantom_crops_only(tmp_path):
    from mccscan.plots import plot_realism

    rng = np.random.default_rng(0)
    stats = {"real": [{"beta": 3.0, "specks_per_cm2": 4.0}, {"beta": 3.2, "specks_per_cm2": 5.0}],
             "phantom": [{"beta": 3.1, "specks_per_cm2": 6.0}]}
    out = plot_realism({"phantom": [rng.random((64, 64))]}, stats, tmp_path / "realism.png")
    assert out.stat().st_size > 5000
