import numpy as np
import pytest

from mccscan.evaluate import binary_metrics, compare_with_clusters
from mccscan.scan import scan_image


def test_binary_metrics():
    m = binary_metrics(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.6, 0.2, 0.1, 0.7]))
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(0.6) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5) and m["precision"] == pytest.approx(2 / 3)


def test_compare_with_clusters(small_phantom, random_model):
    every_tile_mcc = scan_image(small_phantom.image, random_model, threshold=0.0)
    comparison = compare_with_clusters(every_tile_mcc, small_phantom.clusters)
    assert comparison.clusters_found == comparison.clusters_total == 2
    assert comparison.mcc_tiles_elsewhere > 0
    none = compare_with_clusters(every_tile_mcc.relabel(1.01), small_phantom.clusters)
    assert none.clusters_found == 0 and none.mcc_tiles == 0
