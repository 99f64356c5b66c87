import numpy as np
import pytest

from mccscan.explain import band_response, explain, magnitude_response
from mccscan.dataset_dir import PatchDataset
from mccscan.paper import build_model
from mccscan.weights import load_model


def test_band_response_tells_band_pass_from_low_pass_kernels():
    y, x = np.mgrid[-4:5, -4:5]
    blur = np.exp(-(x ** 2 + y ** 2) / 8.0)  # low-pass: most energy near DC
    small_blob = np.exp(-(x ** 2 + y ** 2) / 2.0)
    mexican_hat = small_blob / small_blob.sum() - blur / blur.sum()  # zero-mean band-pass
    assert not band_response(blur)["band_pass"] and band_response(mexican_hat)["band_pass"]
    assert band_response(mexican_hat)["band_energy_fraction"] > 0.8 > band_response(blur)["band_energy_fraction"]
    response, freq = magnitude_response(blur)
    assert response.shape == (64, 64) and freq[32] == 0 and response[32, 32] == pytest.approx(blur.sum())


def test_explain_writes_figures_3_to_5(tmp_path, built_dataset):
    patches, labels = PatchDataset(built_dataset).load_split("test")
    result = explain(load_model().model, patches, labels, tmp_path)
    for name in ("fig3_feature_maps.png", "fig4_filter_response.png", "fig5_mean_f2.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert labels[result["patch_index"]] == 1
    fig4, fig5 = result["fig4"], result["fig5"]
    assert len(fig4["band_energy_fraction"]) == 6 and fig4["band_energy_fraction"][fig4["filter"] - 1] == max(
        fig4["band_energy_fraction"])
    assert fig5["present"] > 0 and fig5["absent"] > 0 and fig5["elements"] == 16
    assert 0 <= fig5["elements_higher_when_present"] <= 16


def test_explain_refuses_a_network_without_global_max_features(tmp_path):
    with pytest.raises(ValueError, match="paper's kind of network"):
        explain(build_model("lenet5"), np.zeros((2, 144, 144), np.uint8), np.array([0, 1]), tmp_path)
