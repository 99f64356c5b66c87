import numpy as np
import pytest

from mccscan.evaluate import truth_image
from mccscan.metrics import (TruthImage, binary_metrics, calibration, candidate_clusters, cluster_hit_map,
                             compare_clusters, froc, mc_clusters, patch_evaluation, sensitivity_at)


def test_binary_metrics():
    m = binary_metrics(np.array([1, 1, 1, 0, 0]), np.array([0.9, 0.6, 0.2, 0.1, 0.7]))
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(0.6) and m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(0.5) and m["precision"] == pytest.approx(2 / 3)


def test_compare_clusters_by_the_centre_in_dilated_outline_rule():
    from mccscan.clusters import MC, find_clusters

    square = [(100, 100), (200, 100), (200, 200), (100, 200)]
    near = find_clusters([MC(250, 150, 0.9), MC(260, 160, 0.9), MC(255, 140, 0.8)])  # centre 55 px outside
    far = find_clusters([MC(600, 600, 0.9), MC(610, 600, 0.9), MC(605, 620, 0.8)])
    assert compare_clusters(near, [square], margin_px=72).found == [True]  # within 5 mm of the outline
    comparison = compare_clusters(near + far, [square, [(900, 900), (950, 900), (950, 950)]], margin_px=40)
    assert comparison.found == [False, False] and comparison.false_reported == 2
    assert "found: 0/2" in comparison.summary()


def test_patch_evaluation_intervals_contain_the_truth_and_widen_with_grouping():
    rng = np.random.default_rng(0)
    perfect = patch_evaluation(np.r_[np.ones(50), np.zeros(50)], np.r_[np.full(50, 0.9), np.full(50, 0.1)],
                               n_bootstrap=200)
    assert all(m["value"] == 1.0 and m["ci95"] == [1.0, 1.0] for m in perfect["metrics"].values())
    labels = rng.integers(0, 2, 400)
    chance = patch_evaluation(labels, rng.random(400), n_bootstrap=300)
    lo, hi = chance["metrics"]["roc_auc"]["ci95"]
    assert lo < 0.5 < hi and chance["confusion"]["tp"] + chance["confusion"]["fn"] == labels.sum()
    # five augmented copies of each patch are not five independent samples
    base_labels, base_prob = rng.integers(0, 2, 80), rng.random(80)
    copies = np.repeat(np.arange(80), 5)
    naive = patch_evaluation(base_labels[copies], base_prob[copies], n_bootstrap=300)
    grouped = patch_evaluation(base_labels[copies], base_prob[copies], groups=copies, n_bootstrap=300)
    width = lambda r: np.diff(r["metrics"]["accuracy"]["ci95"])[0]  # noqa: E731
    assert grouped["groups"] == 80 and width(grouped) > 1.7 * width(naive)


def test_calibration_error():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    assert calibration(rng.random(20000) < p, p)["ece"] < 0.02
    assert calibration(np.zeros(10), np.full(10, 0.9))["ece"] == pytest.approx(0.9)


def test_candidates_are_connected_regions_located_at_their_peaks():
    prob = np.zeros((20, 30), np.float32)
    prob[2:5, 3:6] = 0.7
    prob[3, 4] = 0.95
    prob[10:12, 20:25] = 0.6
    prob[10, 20] = 0.65
    prob[15, 0] = np.nan
    logit = np.log(prob + 1e-9) - np.log1p(-prob)
    cands, peaks = candidate_clusters(logit, 0.5, stride_px=16)
    assert sorted(peaks) == [(3, 4), (10, 20)]
    top = cands[peaks.index((3, 4))]
    assert (top.x, top.y, top.score, top.cells) == (4 * 16 + 72, 3 * 16 + 72, pytest.approx(np.log(19)), 9)
    assert candidate_clusters(logit, 0.99, 16) == ([], [])


def test_cluster_hit_map_uses_the_patch_labelling_overlap_rule():
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True  # 1600 px cluster at (200 + 10, 300 + 10)
    cluster = ((200, 300), mask)
    hits = cluster_hit_map(cluster, (40, 40), stride_px=16)
    full = np.zeros((40 * 16 + 144, 40 * 16 + 144), bool)
    full[300:360, 200:260] = mask
    expected = np.array([[full[i * 16:i * 16 + 144, j * 16:j * 16 + 144].sum() >= 800 for j in range(40)]
                         for i in range(40)])
    assert hits.any() and np.array_equal(hits, expected)


def test_froc_counts_found_clusters_and_false_positives():
    prob = np.zeros((40, 40), np.float32)
    prob[20:23, 14:17] = 0.9  # on the cluster
    prob[2:4, 30:33] = 0.6  # elsewhere: a false positive above 0.5
    mask = np.ones((40, 40), bool)
    cluster = ((15 * 16 + 50, 21 * 16 + 50), mask)
    logit = np.log(prob + 1e-9) - np.log1p(-prob)
    truth = TruthImage("a", logit, 16, [cluster], [cluster_hit_map(cluster, prob.shape, 16)])
    empty = TruthImage("b", np.full((40, 40), -20.0, np.float32), 16, [], [])
    result = froc([truth, empty], thresholds=np.array([0.5, 0.7, 0.95]))
    assert result["clusters"] == 1 and result["images"] == 2
    assert result["sensitivity"] == [1.0, 1.0, 0.0]
    assert result["fp_per_image"] == [0.5, 0.0, 0.0]
    assert result["sensitivity_at_fp"]["0.25"] == 1.0 and sensitivity_at([1.0], [3.0], 1.0) == 0.0


def test_clusters_formed_from_mc_points():
    pts = np.array([[100, 100], [130, 110], [160, 100], [900, 900], [905, 905]], float)
    clusters = mc_clusters(pts, (1200, 1200))
    assert len(clusters) == 1
    (x0, y0), mask = clusters[0]
    assert (x0, y0) == (90, 90) and mask.shape == (31, 81)


def test_truth_image_maps_each_phantom_cluster_to_the_windows_around_it(small_phantom, random_model):
    from mccscan.patches import AnnotatedImage, polygon_crop

    ph = small_phantom
    ann = AnnotatedImage(ph.image, ph.breast_mask, np.array([(m.x, m.y) for m in ph.mcs]),
                         [polygon_crop(c.outline, ph.image.shape) for c in ph.clusters])
    truth = truth_image(random_model.model, "phantom", ann)
    assert truth.logit_map.shape == ((1300 - 144) // 16 + 1, (1100 - 144) // 16 + 1)
    for cluster, hits in zip(ph.clusters, truth.hit_maps):
        i, j = np.nonzero(hits)
        assert len(i) > 0
        xs, ys = np.array(cluster.outline).T  # every hit window overlaps the cluster's outline
        assert (j * 16 <= xs.max()).all() and (xs.min() <= j * 16 + 144).all()
        assert (i * 16 <= ys.max()).all() and (ys.min() <= i * 16 + 144).all()
    result = froc([truth])
    assert result["clusters"] == 2 and len(result["sensitivity"]) == len(result["thresholds"])


def test_evaluate_command_on_a_built_dataset(tmp_path, built_dataset, capsys):
    import json

    from mccscan.cli import main

    assert main(["evaluate", "--data", str(built_dataset), "--out", str(tmp_path), "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "dense map on 2 mammograms, 4 clusters" in out
    assert "cluster FROC on 2 whole mammograms, 4 clusters" in out and "isolated 1–2-MC sites" in out
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["froc"]["clusters"] == 4 and saved["patch_level"]["n_bootstrap"] == 50
    assert saved["cluster_froc"]["clusters"] == 4 and saved["model"] == "demo"
    assert (tmp_path / "froc.png").is_file() and (tmp_path / "calibration.png").is_file()


def test_evaluate_the_cluster_detector_on_unseen_phantoms(tmp_path, capsys):
    import json

    from mccscan.cli import main

    assert main(["evaluate", "--phantoms", "2", "--bootstrap", "20", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "2 unseen phantoms" in printed and "at median MC contrast ≥ 0.05" in printed
    assert "model mc:" in printed and "(95% CI " in printed  # phantoms: the default detector, with intervals
    froc = json.loads((tmp_path / "evaluation.json").read_text())["cluster_froc"]
    assert froc["images"] == 2 and froc["seeds"] == [220000, 220001]
    assert froc["isolated_sites"]["sites"] > 0 and froc["operating_point"]["threshold"] < 1
    assert froc["lookalike_sites"]["sites"] > 0 and froc["pixel_spacing_mm"] == 0.07
    by_kind = froc["lookalike_sites"]["by_kind"]  # every lookalike counted once, under its kind
    assert sum(v["sites"] for v in by_kind.values()) == froc["lookalike_sites"]["sites"]
    assert set(by_kind) <= {"coarse", "rim", "vascular", "skin"} and "benign lookalikes that produce" in printed


def test_phantoms_delivered_at_another_pixel_size_are_scanned_as_such_files(tmp_path, capsys):
    import json

    from mccscan.cli import main

    assert main(["evaluate", "--detector", "mc", "--phantoms", "1", "--bootstrap", "0", "--pixel-spacing", "0.14",
                 "--out", str(tmp_path)]) == 0
    assert "delivered at 0.14 mm" in capsys.readouterr().out
    froc = json.loads((tmp_path / "evaluation.json").read_text())["cluster_froc"]
    assert froc["pixel_spacing_mm"] == 0.14 and froc["images"] == 1
    for spacing in ("5", "0"):
        bad = ["evaluate", "--detector", "mc", "--phantoms", "1", "--pixel-spacing", spacing, "--out", str(tmp_path)]
        assert main(bad) == 2
        assert "outside 0.02–1.0 mm" in capsys.readouterr().err


def test_cluster_froc_on_a_tiny_set_with_a_known_answer():
    from mccscan.metrics import ImageClusters, cluster_froc, isolated_site_rate, operating_point

    square = [(0, 0), (100, 0), (100, 100), (0, 100)]
    a = ImageClusters("a", [(50, 50, 0.9), (60, 60, 0.8), (500, 500, 0.7)], [square], 10, np.array([(505, 500)]))
    b = ImageClusters("b", [(130, 50, 0.6), (900, 900, 0.5)], [square], 10)  # 130: 30 px outside, > margin
    result = cluster_froc([a, b], n_bootstrap=100)
    at = result["sensitivity_at_fp"]
    assert at["0.25"]["value"] == 0.5  # at 0.9: a's cluster found, no FP; b's never found
    assert at["0.5"]["value"] == 0.5 and at["1.0"]["value"] == 0.5  # the 0.8 repeat is neither found nor FP
    assert operating_point(result, 0.5) == 0.7 and operating_point(result, 1.0) == 0.6
    assert at["0.25"]["ci95"][0] <= 0.5 <= at["0.25"]["ci95"][1]
    stress = isolated_site_rate([a, b], 0.65, radius_px=72)
    assert stress == {"sites": 1, "with_a_cluster": 1, "fraction": 1.0}
    assert isolated_site_rate([a, b], 0.75, radius_px=72)["with_a_cluster"] == 0
    c = ImageClusters("c", [(500, 500, 0.7)], [square], 10, lookalike_sites=np.array([(520, 500), (2000, 0)]))
    assert isolated_site_rate([c], 0.65, radius_px=72, kind="lookalike") == {"sites": 2, "with_a_cluster": 1,
                                                                             "fraction": 0.5}
    c = ImageClusters("c", [(500, 500, 0.7)], [square], 10, lookalike_sites=np.array([(520, 500), (2000, 0)]),
                      lookalike_kinds=("vascular", "coarse"))  # known kinds: the rate per kind shows which one fails
    assert isolated_site_rate([c], 0.65, radius_px=72, kind="lookalike")["by_kind"] == {
        "coarse": {"sites": 1, "with_a_cluster": 0}, "vascular": {"sites": 1, "with_a_cluster": 1}}
    with pytest.raises(ValueError, match="c: 1 lookalike kinds for 2 lookalike sites"):
        ImageClusters("c", [], [square], 10, lookalike_sites=np.array([(520, 500), (2000, 0)]),
                      lookalike_kinds=("vascular",))
    with pytest.raises(ValueError, match="kind"):
        isolated_site_rate([c], 0.65, radius_px=72, kind="vascular")


def test_cluster_froc_writes_valid_json_even_with_nothing_to_find():
    import json

    from mccscan.metrics import ABOVE_ANY_SCORE, ImageClusters, cluster_froc, isolated_site_rate, operating_point

    empty = ImageClusters("normal", [(10, 10, 0.9)], [], 10)
    result = cluster_froc([empty], n_bootstrap=20)
    json.dumps(result, allow_nan=False)  # no NaN or Infinity
    assert operating_point(result, 0.5) == ABOVE_ANY_SCORE > 1.0
    assert isolated_site_rate([empty], 0.5, 72)["fraction"] is None


def test_evaluate_skips_whole_mammogram_scans_for_a_baseline(tmp_path, built_dataset):
    from mccscan.evaluate import evaluate_on_dataset
    from mccscan.paper import build_model
    from mccscan.weights import LoadedModel

    result = evaluate_on_dataset(LoadedModel(build_model("lenet5").eval(), "lenet5", "", {}), built_dataset, tmp_path,
                                 n_bootstrap=10)
    assert "skipped" in result["cluster_froc"] and result["patch_level"]["n"] > 0


SQUARE = [(0, 0), (100, 0), (100, 100), (0, 100)]


def two_clusters_found_at(**truth):
    """An image with two true clusters, one found at 0.9 and one at 0.4, and `truth` about them."""
    from mccscan.metrics import ImageClusters

    far = [(x + 1000, y + 1000) for x, y in SQUARE]
    return ImageClusters("a", [(50, 50, 0.9), (1050, 1050, 0.4)], [SQUARE, far], 10, **truth)


def test_found_clusters_split_by_contrast():
    from mccscan.metrics import ImageClusters, found_by_contrast

    im = two_clusters_found_at(truth_contrast=np.array([0.12, 0.03]))
    assert found_by_contrast([im], 0.5) == {"faint_below": 0.05, "visible": {"found": 1, "clusters": 1},
                                            "faint": {"found": 0, "clusters": 1}}
    assert found_by_contrast([im], 0.3)["faint"]["found"] == 1
    with pytest.raises(ValueError, match="contrast"):
        found_by_contrast([ImageClusters("b", [], [SQUARE], 10)], 0.5)


def test_found_clusters_split_by_signal_above_the_noise():
    from mccscan.metrics import ImageClusters, found_above_noise

    im = two_clusters_found_at(truth_signal_snr=np.array([1.5, 7.0]))
    assert found_above_noise([im], 0.5) == {"min_snr": 3.0, "above": {"found": 0, "clusters": 1},
                                            "below": {"found": 1, "clusters": 1}}
    assert found_above_noise([im], 0.3, min_snr=1.0)["above"] == {"found": 2, "clusters": 2}
    with pytest.raises(ValueError, match="signal"):
        found_above_noise([ImageClusters("b", [], [SQUARE], 10, truth_contrast=np.array([0.1]))], 0.5)


def test_cluster_signal_snr_is_the_third_strongest_mc_alone_in_noise_units():
    from types import SimpleNamespace

    from mccscan.evaluate import cluster_signal_snr

    rng = np.random.default_rng(0)
    tissue = (0.5 + 0.01 * rng.standard_normal((400, 400))).astype(np.float32)
    tissue[299:302, 179:182] += 0.3  # the tissue's own speck under cluster 1's 3rd MC: not the MC's signal
    breast = np.ones(tissue.shape, bool)
    mcs = [SimpleNamespace(x=x, y=y, cluster_id=cid) for cid, y in ((0, 100), (1, 300))
           for x in (100.0, 140.0, 180.0, 220.0)]
    with_clusters = tissue.copy()
    for m, amplitude in zip(mcs, (0.4, 0.3, 0.2, 0.01, 0.4, 0.3, 0.002, 0.001)):  # cluster 1: only 2 bright
        with_clusters[int(m.y) - 1:int(m.y) + 2, int(m.x) - 1:int(m.x) + 2] += amplitude
    snr = cluster_signal_snr(with_clusters, tissue, breast, mcs + [SimpleNamespace(x=5.0, y=5.0, cluster_id=2)],
                             [SimpleNamespace(id=0), SimpleNamespace(id=1), SimpleNamespace(id=2)])
    # white noise of σ 0.01 leaves σ ≈ 0.0035 after the 3×3 mean: a 0.2 block stands ≈ 50 units above it
    assert 20 < snr[0] < 100
    assert abs(snr[1]) < 3  # its 3rd MC is buried in the noise, however bright the other two or the tissue there
    assert snr[2] == 0.0  # one MC: no third
