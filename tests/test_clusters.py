"""The clinical cluster rule on hand-made MC layouts (70 µm pixels: 1 cm = 142.9 px)."""

import json

import numpy as np

from mccscan.clusters import MC, Cluster, find_clusters, hull_outline, inside_polygon, window_scores

MM = 1 / 0.07  # px per mm


def mcs_at(points_mm, score=0.9):
    return [MC(x * MM + 500, y * MM + 500, score) for x, y in points_mm]


def test_two_mcs_are_never_a_cluster():
    assert find_clusters(mcs_at([(0, 0), (1, 0)])) == []


def test_three_mcs_within_a_square_centimetre_are_one_cluster():
    clusters = find_clusters(mcs_at([(0, 0), (3, 1), (1, 4)]))
    assert len(clusters) == 1 and clusters[0].n_mcs == 3
    c = clusters[0]
    assert all(inside_polygon(m.x, m.y, c.outline) for m in c.mcs)
    assert abs(c.x - (500 + 4 / 3 * MM)) < 1 and abs(c.y - (500 + 5 / 3 * MM)) < 1


def test_three_mcs_spread_over_three_centimetres_are_none():
    assert find_clusters(mcs_at([(0, 0), (15, 0), (30, 0)])) == []


def test_linked_mcs_still_need_three_in_one_square_centimetre():
    # with the 5 mm link any 3 linked MCs fit in 1 cm²; a looser link shows the window check at work
    assert len(find_clusters(mcs_at([(0, 0), (4.5, 0), (9, 0)]))) == 1
    assert find_clusters(mcs_at([(0, 0), (7, 0), (14, 0)]), link_mm=8) == []
    assert len(find_clusters(mcs_at([(0, 0), (7, 0), (14, 0), (3, 1)]), link_mm=8)) == 1


def test_the_score_is_the_third_best_mc_so_a_threshold_means_three_mcs_above_it():
    scores = [0.99, 0.8, 0.6, 0.3]
    clusters = find_clusters([MC(500 + 20 * k, 500, s) for k, s in enumerate(scores)])
    assert clusters[0].score == 0.6 and clusters[0].n_mcs == 4


def test_clusters_are_numbered_by_score_and_round_trip_through_json():
    clusters = find_clusters(mcs_at([(0, 0), (2, 0), (0, 2)], 0.7) + mcs_at([(40, 40), (42, 40), (40, 42)], 0.95))
    assert [c.id for c in clusters] == [1, 2] and clusters[0].score == 0.95
    data = json.loads(json.dumps(clusters[0].to_dict()))
    assert set(data) == {"id", "x", "y", "outline", "score", "n_mcs", "mcs", "tiles"}
    assert set(data["mcs"][0]) == {"x", "y", "score"}
    assert Cluster.from_dict(data) == clusters[0]


def test_inside_polygon_with_a_margin_and_the_hull_outline():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert inside_polygon(5, 5, square) and not inside_polygon(15, 5, square)
    assert inside_polygon(15, 5, square, margin_px=5.5) and not inside_polygon(15, 5, square, margin_px=4.5)
    outline = hull_outline(np.array([(0, 0), (100, 0), (0, 100)]), margin_px=10)
    assert inside_polygon(-9, -1, outline) and not inside_polygon(-12, -12, outline)


def test_window_scores_give_each_square_centimetre_the_score_a_cluster_there_would_have():
    mcs = [MC(300, 300, 0.9), MC(310, 300, 0.8), MC(300, 310, 0.7), MC(900, 900, 0.99)]
    grid = window_scores(mcs, (1200, 1200))
    assert grid.shape == ((1200 - 144) // 16 + 1,) * 2
    assert grid.max() == np.float32(0.7) and grid[300 // 16, 300 // 16] == np.float32(0.7)
    assert grid[900 // 16, 900 // 16] == 0  # one MC alone is no cluster


def test_a_long_chain_scores_by_its_best_square_centimetre_not_its_three_best_mcs():
    # three confident MCs 3.6 cm apart, linked by faint ones: no 1 cm² holds 3 confident MCs
    chain = [MC(100 + 60 * k, 100, s) for k, s in enumerate([0.99, 0.2, 0.2, 0.99, 0.2, 0.2, 0.99])]
    (cluster,) = find_clusters(chain)
    assert cluster.score == 0.2 and cluster.n_mcs == 7


def test_window_scores_count_an_mc_at_a_fractional_position_in_every_window_that_holds_it():
    grid = window_scores([MC(300, 143.5, 0.9), MC(300, 140, 0.9), MC(310, 140, 0.9)], (400, 400))
    assert grid[0].max() == np.float32(0.9)  # window rows 0–143 hold y = 143.5
