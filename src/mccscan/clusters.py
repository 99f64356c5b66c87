"""The clinical cluster rule over microcalcification points: at least 3 MCs within 1 cm².

MCs are linked when closer than `link_mm` (single linkage); a group is a cluster when
some 1 cm × 1 cm square holds at least `min_mcs` of its members. So 2 MCs are never a
cluster, 3 within a square centimetre are one, and 3 spread over 3 cm are none. Plain
functions over arrays of points in pixels (70 µm unless said otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MIN_MCS = 3  # the clinical definition: ≥ 3 MCs …
WINDOW_MM = 10.0  # … within 1 cm²
LINK_MM = 5.0  # MCs this close belong to one group
MATCH_MARGIN_MM = 5.0  # a detected cluster is true when its centre is within its outline dilated by this


@dataclass
class MC:
    x: float  # centre, px
    y: float
    score: float  # P(MC), 0–1


@dataclass
class Cluster:
    id: int
    x: float  # centre (mean of its MCs), px
    y: float
    outline: list[tuple[float, float]]  # polygon (x, y) px: the MCs' convex hull grown by a margin
    score: float  # 0–1: "score ≥ t" means some 1 cm² of it holds ≥ 3 MCs at P ≥ t
    n_mcs: int
    mcs: list[MC] = field(default_factory=list)
    tiles: list[tuple[int, int]] = field(default_factory=list)  # (row, col) of the tiles it touches

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Cluster":
        return cls(**{**d, "outline": [tuple(p) for p in d["outline"]], "mcs": [MC(**m) for m in d["mcs"]],
                      "tiles": [tuple(t) for t in d.get("tiles", [])]})


def group_points(xy: np.ndarray, link_px: float) -> list[np.ndarray]:
    """Indices of each single-linkage group of points closer than `link_px` (largest first)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return []
    pairs = cKDTree(xy).query_pairs(link_px, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(xy),) * 2)
    _, label = connected_components(graph, directed=False)
    groups = [np.flatnonzero(label == g) for g in np.unique(label)]
    return sorted(groups, key=len, reverse=True)


def best_window_score(xy: np.ndarray, scores: np.ndarray, window_px: float, min_mcs: int = MIN_MCS) -> float:
    """The best `min_mcs`-th highest score among the points of any axis-aligned window_px
    square (squares anchored on the points' own coordinates, where the best one lies);
    −inf when no square holds `min_mcs` points. "≥ t" means: some square centimetre holds
    `min_mcs` MCs at P ≥ t — the clinical rule at threshold t."""
    xy, scores = np.asarray(xy, np.float64).reshape(-1, 2), np.asarray(scores, np.float64)
    order = np.argsort(xy[:, 0], kind="stable")
    xs, ys, ss = xy[order, 0], xy[order, 1], scores[order]
    best = -np.inf
    for a in range(len(xs)):  # left edge on point a
        b = np.searchsorted(xs, xs[a] + window_px, side="right")
        if b - a < min_mcs:
            continue
        by_y = np.argsort(ys[a:b], kind="stable")
        col_y, col_s = ys[a:b][by_y], ss[a:b][by_y]
        tops = np.searchsorted(col_y, col_y + window_px, side="right")  # top edge on each point
        for lo, hi in zip(range(len(col_y)), tops):
            if hi - lo >= min_mcs:
                best = max(best, float(np.partition(col_s[lo:hi], hi - lo - min_mcs)[hi - lo - min_mcs]))
    return best


def find_clusters(mcs: list[MC], *, pixel_spacing_mm: float = 0.07, min_mcs: int = MIN_MCS,
                  link_mm: float = LINK_MM, window_mm: float = WINDOW_MM, margin_px: float = 10.0) -> list[Cluster]:
    """Clusters among detected MCs by the clinical rule; highest score first. A cluster is
    a linked group; its score is the best `min_mcs`-th MC score within one square
    centimetre of it (`best_window_score`), its centre and outline those of the group."""
    if pixel_spacing_mm <= 0 or min_mcs < 1:
        raise ValueError("pixel_spacing_mm must be positive and min_mcs at least 1")
    xy = np.array([(m.x, m.y) for m in mcs], np.float64).reshape(-1, 2)
    scores = np.array([m.score for m in mcs], np.float64)
    clusters = []
    for members in group_points(xy, link_mm / pixel_spacing_mm):
        if len(members) < min_mcs:
            continue
        score = best_window_score(xy[members], scores[members], window_mm / pixel_spacing_mm, min_mcs)
        if score == -np.inf:
            continue
        pts = xy[members]
        clusters.append(Cluster(0, round(float(pts[:, 0].mean()), 1), round(float(pts[:, 1].mean()), 1),
                                hull_outline(pts, margin_px), round(score, 4), len(members),
                                [mcs[i] for i in members]))
    clusters.sort(key=lambda c: -c.score)
    for k, c in enumerate(clusters):
        c.id = k + 1
    return clusters


def hull_outline(xy: np.ndarray, margin_px: float, n_round: int = 8) -> list[tuple[float, float]]:
    """The convex hull of points grown by `margin_px` (each hull vertex rounded with a few
    points on a circle), as a polygon: the outline a viewer draws around a cluster."""
    from scipy.spatial import ConvexHull, QhullError

    angles = np.linspace(0, 2 * np.pi, n_round, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1) * margin_px
    grown = (np.asarray(xy, np.float64)[:, None, :] + ring[None]).reshape(-1, 2)
    try:
        hull = grown[ConvexHull(grown).vertices]
    except QhullError:  # fewer than 3 distinct points
        hull = grown
    return [(round(float(x), 1), round(float(y), 1)) for x, y in hull]


def inside_polygon(x: float, y: float, polygon: list[tuple[float, float]], margin_px: float = 0.0) -> bool:
    """Whether (x, y) lies inside the polygon or within `margin_px` of its edge."""
    pts = np.asarray(polygon, np.float64)
    nxt = np.roll(pts, -1, axis=0)
    crosses = ((pts[:, 1] > y) != (nxt[:, 1] > y)) & (
        x < (nxt[:, 0] - pts[:, 0]) * (y - pts[:, 1]) / (nxt[:, 1] - pts[:, 1] + 1e-12) + pts[:, 0])
    if crosses.sum() % 2:
        return True
    if margin_px <= 0:
        return False
    seg = nxt - pts
    t = np.clip(((x - pts[:, 0]) * seg[:, 0] + (y - pts[:, 1]) * seg[:, 1]) / np.maximum((seg ** 2).sum(1), 1e-12),
                0, 1)
    nearest = pts + t[:, None] * seg
    return bool(np.hypot(nearest[:, 0] - x, nearest[:, 1] - y).min() <= margin_px)


def window_scores(mcs: list[MC], shape: tuple[int, int], *, window_px: int = 144, stride_px: int = 16,
                  min_mcs: int = MIN_MCS) -> np.ndarray:
    """For every `window_px` window at a `stride_px` step (cell (i, j): top-left corner at
    (stride·j, stride·i)), the score a cluster there would have: the `min_mcs`-th best
    MC score inside it, 0 with fewer MCs. A heatmap in the geometry of the paper's dense map."""
    rows, cols = shape
    out_shape = (max(0, (rows - window_px) // stride_px + 1), max(0, (cols - window_px) // stride_px + 1))
    per_cell: dict[tuple[int, int], list[float]] = {}
    for m in mcs:  # the windows [s·i, s·i + window) holding this MC
        i0, i1 = max(0, int((m.y - window_px) // stride_px) + 1), min(out_shape[0] - 1, int(m.y // stride_px))
        j0, j1 = max(0, int((m.x - window_px) // stride_px) + 1), min(out_shape[1] - 1, int(m.x // stride_px))
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                per_cell.setdefault((i, j), []).append(m.score)
    out = np.zeros(out_shape, np.float32)
    for (i, j), scores in per_cell.items():
        if len(scores) >= min_mcs:
            out[i, j] = sorted(scores, reverse=True)[min_mcs - 1]
    return out
