import json

import numpy as np
import pytest

from mccscan.datasets.phantom import SIZES, make_phantom, power_law_noise
from mccscan.io import read_mammogram


def test_same_seed_same_phantom_and_different_seed_differs():
    a = make_phantom(5, size=(600, 500), n_clusters=1)
    b = make_phantom(5, size=(600, 500), n_clusters=1)
    c = make_phantom(6, size=(600, 500), n_clusters=1)
    assert np.array_equal(a.image, b.image) and a.ground_truth() == b.ground_truth()
    assert not np.array_equal(a.image, c.image)


def test_inbreast_sizes_and_value_range():
    ph = make_phantom(1, size="large", view="MLO")
    assert ph.image.shape == SIZES["large"] == (4084, 3328)
    assert ph.image.dtype == np.float32 and ph.image.min() == 0 and ph.image.max() == pytest.approx(1)
    assert np.all(ph.image[~ph.breast_mask] == 0)  # black background
    assert 0.25 < ph.breast_mask.mean() < 0.8


def test_laterality_puts_the_chest_wall_on_the_expected_side():
    left = make_phantom(3, size=(800, 600), laterality="L", view="CC")
    right = make_phantom(3, size=(800, 600), laterality="R", view="CC")
    assert left.breast_mask[:, :20].mean() > 0.3 and left.breast_mask[:, -20:].mean() == 0
    assert right.breast_mask[:, -20:].mean() > 0.3 and right.breast_mask[:, :20].mean() == 0


def test_microcalcifications_follow_the_clinical_definitions(small_phantom):
    ph = small_phantom
    assert len(ph.clusters) == 2
    for c in ph.clusters:
        members = [m for m in ph.mcs if m.cluster_id == c.id]
        assert 3 <= len(members) == c.n_mcs <= 40
        dist = [np.hypot(m.x - c.x, m.y - c.y) for m in members]
        assert max(dist) <= c.radius_px + 1 and c.radius_px * 0.07 <= 5  # within about 1 cm²
    for m in ph.mcs:
        assert 0.1 <= 2 * m.radius_px * 0.07 <= 1.0  # 0.1–1 mm
        assert ph.breast_mask[int(m.y), int(m.x)]
    assert any(m.kind == "single" for m in ph.mcs) and all(m.cluster_id is None for m in ph.mcs if m.kind != "cluster")


def test_microcalcifications_are_visible_bright_spots(small_phantom):
    ph, brighter = small_phantom, []
    for m in ph.mcs:
        x, y = int(round(m.x)), int(round(m.y))
        centre = ph.image[y - 1:y + 2, x - 1:x + 2].max()
        ring = ph.image[y - 12:y + 13, x - 12:x + 13].copy()
        ring[6:19, 6:19] = np.nan
        brighter.append(centre > np.nanmedian(ring))
    assert np.mean(brighter) > 0.9


@pytest.mark.parametrize("beta", [2.5, 3.5])
def test_power_law_noise_has_the_requested_spectral_slope(beta):
    noise = power_law_noise((512, 512), beta, np.random.default_rng(0))
    power = np.abs(np.fft.fft2(noise)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.fftfreq(512)))
    band = (f > 0.02) & (f < 0.3)
    slope = np.polyfit(np.log(f[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.15)


def test_write_png_dicom_and_ground_truth(tmp_path, small_phantom):
    paths = small_phantom.write(tmp_path)
    dicom, png = read_mammogram(paths["dcm"]), read_mammogram(paths["png"])
    assert dicom.pixel_spacing_mm == (0.07, 0.07) and png.pixel_spacing_mm is None
    assert np.abs(dicom.image - small_phantom.image).max() < 1 / 16383 + 1e-6  # 14-bit
    assert np.abs(png.image - small_phantom.image).max() <= 0.5 / 255 + 1e-6  # 8-bit
    truth = json.loads(paths["json"].read_text())
    assert truth["synthetic"] is True and len(truth["clusters"]) == 2
    assert len(truth["microcalcifications"]) == len(small_phantom.mcs)


def test_benign_lookalikes_lie_in_the_breast_and_coarse_ones_exceed_1_mm():
    from mccscan.datasets.phantom import LOOKALIKES

    kinds = set()
    for seed in range(6):
        ph = make_phantom(seed, size=(1400, 1200), n_clusters=1)
        kinds |= {b.kind for b in ph.lookalikes}
        for b in ph.lookalikes:
            assert b.kind in LOOKALIKES and ph.breast_mask[int(b.y), int(b.x)]
            if b.kind == "coarse":
                assert 2 * b.radius_px * 0.07 > 1.0  # coarse calcifications are over 1 mm
        assert len(ph.ground_truth()["lookalikes"]) == len(ph.lookalikes)
    assert kinds >= {"coarse", "skin"}


def test_inserted_clusters_and_isolated_sites_land_inside_the_breast_apart_and_reproducibly():
    from mccscan.datasets.phantom import insert_clusters, insert_isolated

    rng = np.random.default_rng(0)
    tissue = (0.4 + 0.01 * rng.standard_normal((1500, 1200))).astype(np.float32)
    breast = np.hypot(*np.mgrid[-750:750, -600:600]) < 550  # a disc 7.7 cm across
    mm = 1 / 0.07

    with_clusters, mcs, clusters = insert_clusters(tissue, breast, np.random.default_rng(1), 2)
    assert len(clusters) == 2 and {m.cluster_id for m in mcs} == {0, 1}
    assert np.hypot(clusters[0].x - clusters[1].x, clusters[0].y - clusters[1].y) > 15 * mm

    with_sites, lone = insert_isolated(tissue, breast, np.random.default_rng(2), 8)
    assert {m.kind for m in lone} <= {"single", "pair"} and all(m.cluster_id is None for m in lone)
    assert 8 <= len(lone) <= 16 and all(breast[int(m.y), int(m.x)] for m in lone)  # pairs' partners too
    centres = [(m.x, m.y) for m in lone if m.kind == "single"]
    far = [np.hypot(a[0] - b[0], a[1] - b[1]) > 12 * mm for i, a in enumerate(centres) for b in centres[i + 1:]]
    assert all(far)
    added = with_sites - tissue
    assert added.max() > 0.02 and added.min() >= 0  # MCs are added, nothing taken away
    xy = np.array([(m.x, m.y) for m in lone])
    ys, xs = np.nonzero(added > 1e-4)
    assert np.hypot(xs[:, None] - xy[:, 0], ys[:, None] - xy[:, 1]).min(1).max() < 20  # only at the sites
    again, _ = insert_isolated(tissue, breast, np.random.default_rng(2), 8)
    assert np.array_equal(again, with_sites) and not np.array_equal(with_sites, with_clusters)


def test_write_takes_formats_as_a_tuple_or_a_comma_string_and_refuses_others(tmp_path):
    ph = make_phantom(5, size=(600, 500), n_clusters=1)
    assert set(ph.write(tmp_path / "a", formats="png")) == {"png", "json"}
    assert set(ph.write(tmp_path / "b", formats=("dcm",))) == {"dcm", "json"}
    with pytest.raises(ValueError, match="unknown phantom image format.*jpg"):
        ph.write(tmp_path / "c", formats="png,jpg")
