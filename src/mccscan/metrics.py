"""Metrics over arrays: patch-level binary metrics with bootstrap 95% intervals and
calibration (ECE), and the image-level FROC on clusters (candidates from a dense map,
matched to annotated clusters). No model here: callers pass scores."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from mccscan.tiling import PATCH_SIZE_PX


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, precision, F1 and the confusion counts."""
    labels = np.asarray(labels).astype(bool)
    pred = np.asarray(probabilities) >= threshold
    tp, tn = int((pred & labels).sum()), int((~pred & ~labels).sum())
    fp, fn = int((pred & ~labels).sum()), int((~pred & labels).sum())
    sens = tp / (tp + fn) if tp + fn else float("nan")
    prec = tp / (tp + fp) if tp + fp else float("nan")
    return {
        "n": len(labels), "accuracy": (tp + tn) / max(len(labels), 1),
        "sensitivity": sens, "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "precision": prec, "f1": 2 * prec * sens / (prec + sens) if tp else 0.0,
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }

PATCH_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def roc_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    return float(roc_auc_score(labels, probabilities)) if 0 < labels.sum() < len(labels) else float("nan")


def patch_evaluation(labels: np.ndarray, probabilities: np.ndarray, *, groups: np.ndarray | None = None,
                     threshold: float = 0.5, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Patch metrics with percentile-bootstrap 95% intervals.

    `groups` (e.g. the source patch of each augmented copy, or the image) are resampled
    whole, since patches of one group are not independent; default: each patch alone.
    """
    labels, probabilities = np.asarray(labels).astype(np.uint8), np.asarray(probabilities, np.float64)
    groups = np.arange(len(labels)) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    members = np.split(np.argsort(groups, kind="stable"), np.cumsum(np.bincount(groups))[:-1])
    point = {**binary_metrics(labels, probabilities, threshold), "roc_auc": roc_auc(labels, probabilities)}
    rng = np.random.default_rng(seed)
    draws = np.full((n_bootstrap, len(PATCH_METRICS)), np.nan)
    for b in range(n_bootstrap):
        index = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        m = binary_metrics(labels[index], probabilities[index], threshold)
        draws[b] = [m[k] for k in PATCH_METRICS[:-1]] + [roc_auc(labels[index], probabilities[index])]
    with warnings.catch_warnings():  # a metric undefined in every resample (e.g. no MCC call) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = np.nanpercentile(draws, [2.5, 97.5], axis=0) if n_bootstrap else np.full((2, len(PATCH_METRICS)), np.nan)
    return {
        "n": len(labels), "groups": len(members), "threshold": threshold, "n_bootstrap": n_bootstrap,
        "metrics": {k: {"value": float(point[k]), "ci95": [float(ci[0, i]), float(ci[1, i])]}
                    for i, k in enumerate(PATCH_METRICS)},
        "confusion": {k: point[k] for k in ("tp", "fn", "fp", "tn")},
        "calibration": calibration(labels, probabilities),
    }


def calibration(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability per probability bin and the expected calibration error (ECE)."""
    labels, probabilities = np.asarray(labels, np.float64), np.asarray(probabilities, np.float64)
    bins = np.minimum((probabilities * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, probabilities, n_bins) / count
        frac_pos = np.bincount(bins, labels, n_bins) / count
    ece = float(np.nansum(count * np.abs(frac_pos - mean_p)) / max(len(labels), 1))
    return {"bin_count": count.tolist(), "mean_probability": mean_p.tolist(),
            "fraction_positive": frac_pos.tolist(), "ece": ece}


# ---- image level: FROC ---------------------------------------------------------------

@dataclass
class TruthImage:
    """One test mammogram at 70 µm: its dense logit map and the annotated clusters."""

    image_id: str
    logit_map: np.ndarray  # predict.dense_probability_map(..., logits=True): NaN outside the breast
    stride_px: int
    clusters: list[tuple[tuple[int, int], np.ndarray]]  # ((x0, y0), bool mask crop), as in AnnotatedImage
    hit_maps: list[np.ndarray] = field(default_factory=list)  # per cluster: map cells whose window hits it


@dataclass
class Candidate:
    """A candidate cluster: a connected region of the dense map at or above a threshold."""

    x: float  # centre (px) of the window at the region's peak
    y: float
    score: float  # the peak logit
    cells: int  # region size in map cells


def candidate_clusters(logit_map: np.ndarray, threshold: float, stride_px: int,
                       tile_px: int = PATCH_SIZE_PX) -> tuple[list[Candidate], list[tuple[int, int]]]:
    """Connected (8-neighbour) regions where P(MCC) ≥ threshold, each located at its peak cell."""
    from scipy import ndimage

    values = np.nan_to_num(logit_map, nan=-np.inf)
    above = values >= _logit(threshold)
    labelled, n = ndimage.label(above, structure=np.ones((3, 3)))
    if not n:
        return [], []
    index = np.arange(1, n + 1)
    peaks = ndimage.maximum_position(values, labelled, index)
    sizes = ndimage.sum_labels(above, labelled, index)
    cands = [Candidate(j * stride_px + tile_px / 2, i * stride_px + tile_px / 2, float(values[i, j]), int(size))
             for (i, j), size in zip(peaks, sizes)]
    return cands, [(int(i), int(j)) for i, j in peaks]


def cluster_hit_map(cluster: tuple[tuple[int, int], np.ndarray], map_shape: tuple[int, int], stride_px: int,
                    tile_px: int = PATCH_SIZE_PX, min_overlap: float = 0.5) -> np.ndarray:
    """Map cells whose window covers the cluster by at least `min_overlap` of the smaller of
    window and cluster — the same overlap rule that labels a training patch MCC."""
    (x0, y0), mask = cluster
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    need = min_overlap * min(tile_px * tile_px, int(mask.sum()))
    hits = np.zeros(map_shape, bool)
    i_lo, i_hi = max(0, (y0 - tile_px) // stride_px), min(map_shape[0], (y0 + h) // stride_px + 1)
    j_lo, j_hi = max(0, (x0 - tile_px) // stride_px), min(map_shape[1], (x0 + w) // stride_px + 1)
    for i in range(i_lo, i_hi):
        r0, r1 = np.clip([i * stride_px - y0, i * stride_px + tile_px - y0], 0, h)
        for j in range(j_lo, j_hi):
            c0, c1 = np.clip([j * stride_px - x0, j * stride_px + tile_px - x0], 0, w)
            covered = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            hits[i, j] = covered > 0 and covered >= need
    return hits


def mc_clusters(mc_xy: np.ndarray, shape: tuple[int, int], *, link_px: float = 72.0, min_mcs: int = 3,
                margin_px: int = 10) -> list[tuple[tuple[int, int], np.ndarray]]:
    """Clusters formed from MC points (for images annotated MC by MC, without cluster
    outlines) by the detector's own clinical rule (`clusters.find_clusters`: linked within
    `link_px`, 5 mm at 70 µm, and ≥ `min_mcs` in some 1 cm²), as the box around each."""
    from mccscan.clusters import MC, find_clusters

    out = []
    for cluster in find_clusters([MC(float(x), float(y), 1.0) for x, y in np.asarray(mc_xy).reshape(-1, 2)],
                                 min_mcs=min_mcs, link_mm=link_px * 0.07):
        pts = np.array([(m.x, m.y) for m in cluster.mcs])
        x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - margin_px, 0)
        x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + margin_px + 1, (shape[1], shape[0]))
        out.append(((int(x0), int(y0)), np.ones((y1 - y0, x1 - x0), bool)))
    return out


def froc(images: Iterable[TruthImage], thresholds: np.ndarray | None = None) -> dict:
    """Cluster sensitivity against false-positive candidates per image over thresholds.

    A true cluster is found when a candidate's peak window hits it; a candidate hitting
    no cluster is a false positive (further candidates on a found cluster are neither).
    """
    images = list(images)
    if thresholds is None:
        # thresholds compare in logit space, so confident models are still ranked near P = 1
        thresholds = np.concatenate([np.linspace(0.02, 0.98, 49), 1 - np.logspace(-2, -8, 13)])
    n_clusters = sum(len(t.clusters) for t in images)
    sens, fppi = [], []
    for threshold in thresholds:
        found, fps = 0, 0
        for t in images:
            _, peaks = candidate_clusters(t.logit_map, threshold, t.stride_px)
            hit = np.zeros((len(peaks), len(t.hit_maps)), bool)
            for k, (i, j) in enumerate(peaks):
                hit[k] = [h[i, j] for h in t.hit_maps]
            found += int(hit.any(0).sum())
            fps += int((~hit.any(1)).sum())
        sens.append(found / n_clusters if n_clusters else float("nan"))
        fppi.append(fps / max(len(images), 1))
    sens, fppi = np.array(sens), np.array(fppi)
    return {"images": len(images), "clusters": n_clusters, "thresholds": [float(t) for t in thresholds],
            "sensitivity": sens.tolist(), "fp_per_image": fppi.tolist(),
            "sensitivity_at_fp": {str(f): sensitivity_at(sens, fppi, f) for f in (0.25, 0.5, 1.0, 2.0)}}


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p)) if 0 < p < 1 else (np.inf if p >= 1 else -np.inf)


def sensitivity_at(sensitivity: np.ndarray, fp_per_image: np.ndarray, fp: float) -> float:
    """Best sensitivity reached with at most `fp` false positives per image (0 if none)."""
    ok = np.asarray(fp_per_image) <= fp
    return float(np.max(np.asarray(sensitivity)[ok])) if ok.any() else 0.0


# ---- image level: FROC on clusters, by the centre-in-outline rule --------------------------

FROC_FP_RATES = (0.25, 0.5, 1.0, 2.0)
ABOVE_ANY_SCORE = float(np.nextafter(1.0, 2.0))  # a threshold no probability reaches: JSON-safe, unlike inf


@dataclass
class ImageClusters:
    """One mammogram's detected clusters against its true ones.

    A detection is true when its centre lies inside a true cluster's outline dilated by
    `margin_px` (clusters.MATCH_MARGIN_MM, 5 mm); one true cluster found by several
    detections counts once, and those extra detections are not false positives."""

    image_id: str
    detections: np.ndarray  # (n, 3): x, y, score
    truth: list[list[tuple[float, float]]]  # outline polygon of each true cluster, px
    margin_px: float
    isolated_sites: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # 1–2-MC sites, for the stress metric
    lookalike_sites: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # benign calcifications, likewise
    lookalike_kinds: tuple[str, ...] = ()  # each lookalike's kind (vascular, coarse, …), when known
    truth_contrast: np.ndarray | None = None  # median MC contrast of each true cluster, when known (synthetic)
    truth_signal_snr: np.ndarray | None = None  # each true cluster's 3rd-strongest MC alone, in the image's
    # noise units, when known (clusters inserted into real tissue: `evaluate.cluster_signal_snr`)
    hits: np.ndarray = field(init=False)  # (n, n_truth) bool

    def __post_init__(self):
        from mccscan.clusters import inside_polygon

        self.detections = np.asarray(self.detections, np.float64).reshape(-1, 3)
        if self.lookalike_kinds and len(self.lookalike_kinds) != len(self.lookalike_sites):
            raise ValueError(f"{self.image_id}: {len(self.lookalike_kinds)} lookalike kinds for "
                             f"{len(self.lookalike_sites)} lookalike sites")
        self.hits = np.array([[inside_polygon(x, y, outline, self.margin_px) for outline in self.truth]
                              for x, y, _ in self.detections], bool).reshape(len(self.detections), len(self.truth))


def _found_and_false(im: ImageClusters) -> tuple[np.ndarray, np.ndarray]:
    """Per true cluster, the best score of a detection that finds it (−inf if none); and the
    scores of detections that find none (false positives)."""
    scores = im.detections[:, 2]
    best = np.array([scores[im.hits[:, k]].max() if im.hits[:, k].any() else -np.inf for k in range(len(im.truth))])
    return best, scores[~im.hits.any(1)]


def cluster_counts(images: list[ImageClusters], threshold: float) -> tuple[int, int, int]:
    """(true clusters found, false-positive detections, true clusters) at a score threshold."""
    parts = [_found_and_false(im) for im in images]
    found = sum(int((best >= threshold).sum()) for best, _ in parts)
    false = sum(int((fp >= threshold).sum()) for _, fp in parts)
    return found, false, sum(len(im.truth) for im in images)


FAINT_CONTRAST = 0.05  # a synthetic cluster whose median MC contrast is below this sits near the noise floor


def found_by_contrast(images: list[ImageClusters], threshold: float, faint_below: float = FAINT_CONTRAST) -> dict:
    """True clusters found at a score threshold, split into clearly visible ones and those
    near the noise floor by their median MC contrast (`truth_contrast`, synthetic truth)."""
    visible, faint = _found_split(images, threshold, "truth_contrast", faint_below)
    return {"faint_below": faint_below, "visible": visible, "faint": faint}


NOISE_FLOOR_SNR = 3.0  # an MC whose signal alone is under this many noise units is lost in them (Rose: 3–5)


def found_above_noise(images: list[ImageClusters], threshold: float, min_snr: float = NOISE_FLOOR_SNR) -> dict:
    """True clusters found at a score threshold, split by whether ≥ 3 of their MCs stand
    `min_snr` noise units above the tissue on their own (`truth_signal_snr`): below, their
    MCs are no brighter, through the scan's filter, than the tissue's own noise."""
    above, below = _found_split(images, threshold, "truth_signal_snr", min_snr)
    return {"min_snr": min_snr, "above": above, "below": below}


def _found_split(images: list[ImageClusters], threshold: float, truth_field: str, cut: float) -> tuple[dict, dict]:
    """Found / total true clusters at a threshold among those whose `truth_field` value is
    ≥ cut, and among the others."""
    values = [getattr(im, truth_field) for im in images]
    if any(v is None or len(v) != len(im.truth) for v, im in zip(values, images)):
        raise ValueError(f"every image needs the {truth_field.removeprefix('truth_')} of each of its true clusters")
    found = np.concatenate([_found_and_false(im)[0] >= threshold for im in images] + [np.zeros(0, bool)])
    low = np.concatenate([~(np.asarray(v) >= cut) for v in values] + [np.zeros(0, bool)])  # NaN: not above
    return ({"found": int(found[~low].sum()), "clusters": int((~low).sum())},
            {"found": int(found[low].sum()), "clusters": int(low.sum())})


def _froc_curve(parts: list[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    best = np.sort(np.concatenate([b for b, _ in parts] + [np.zeros(0)]))
    false = np.sort(np.concatenate([f for _, f in parts] + [np.zeros(0)]))
    found = len(best) - np.searchsorted(best, thresholds, side="left")  # best ≥ t
    fps = len(false) - np.searchsorted(false, thresholds, side="left")
    sens = found / len(best) if len(best) else np.full(len(thresholds), np.nan)
    return sens, fps / max(len(parts), 1)


def cluster_froc(images: list[ImageClusters], *, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Sensitivity against false-positive clusters per image over every score threshold,
    with the sensitivity at FROC_FP_RATES and percentile-bootstrap 95% intervals (images
    resampled whole)."""
    parts = [_found_and_false(im) for im in images]
    thresholds = np.append(np.unique(np.concatenate([im.detections[:, 2] for im in images] + [np.zeros(0)])),
                           ABOVE_ANY_SCORE)
    sens, fppi = _froc_curve(parts, thresholds)
    rng = np.random.default_rng(seed)
    draws = np.array([[sensitivity_at(*_froc_curve([parts[i] for i in rng.integers(0, len(parts), len(parts))],
                                                   thresholds), f) for f in FROC_FP_RATES]
                      for _ in range(n_bootstrap)]) if n_bootstrap and parts else None
    at = {}
    for k, f in enumerate(FROC_FP_RATES):
        ci = [_json_number(v) for v in np.nanpercentile(draws[:, k], [2.5, 97.5])] if draws is not None and \
            np.isfinite(draws[:, k]).any() else [None, None]
        at[str(f)] = {"value": _json_number(sensitivity_at(sens, fppi, f)), "ci95": ci}
    return {"images": len(images), "clusters": sum(len(im.truth) for im in images),
            "thresholds": [float(t) for t in thresholds], "sensitivity": [_json_number(v) for v in sens],
            "fp_per_image": fppi.tolist(), "sensitivity_at_fp": at, "n_bootstrap": n_bootstrap}


def _json_number(value: float) -> float | None:
    """A float JSON can hold: None for NaN (nothing to measure, e.g. no true cluster)."""
    return float(value) if np.isfinite(value) else None


def operating_point(froc_result: dict, max_fp_per_image: float) -> float:
    """The lowest score threshold (highest sensitivity) with at most `max_fp_per_image`
    (ABOVE_ANY_SCORE, which reports nothing, when no threshold keeps to the budget)."""
    ok = [t for t, f in zip(froc_result["thresholds"], froc_result["fp_per_image"]) if f <= max_fp_per_image]
    return float(min(ok)) if ok else ABOVE_ANY_SCORE


def isolated_site_rate(images: list[ImageClusters], threshold: float, radius_px: float,
                       kind: str = "isolated") -> dict:
    """The stress metric: the share of isolated 1–2-MC sites (kind "isolated") or benign
    lookalike calcifications ("lookalike") with a detected cluster (one that matches no
    true cluster) centred within `radius_px` of them. Lookalikes of images that know their
    kinds are also counted per kind ("by_kind"), so a regression shows which kind it comes
    from."""
    if kind not in ("isolated", "lookalike"):
        raise ValueError(f"kind must be 'isolated' or 'lookalike', not {kind!r}")
    flagged_by_kind: dict[str, list[bool]] = {}
    flagged_all = []
    for im in images:
        keep = (im.detections[:, 2] >= threshold) & ~im.hits.any(1)
        false_xy = im.detections[keep, :2]
        sites = im.isolated_sites if kind == "isolated" else im.lookalike_sites
        kinds = im.lookalike_kinds if kind == "lookalike" else ()
        for i, (x, y) in enumerate(sites):
            flagged = bool((np.hypot(false_xy[:, 0] - x, false_xy[:, 1] - y) <= radius_px).any())
            flagged_all.append(flagged)
            if kinds:
                flagged_by_kind.setdefault(kinds[i], []).append(flagged)
    result = {"sites": len(flagged_all), "with_a_cluster": sum(flagged_all),
              "fraction": sum(flagged_all) / len(flagged_all) if flagged_all else None}
    if flagged_by_kind:
        result["by_kind"] = {k: {"sites": len(v), "with_a_cluster": sum(v)} for k, v in sorted(flagged_by_kind.items())}
    return result


def by_contrast_text(split: dict) -> str:
    """"22/22 at median MC contrast ≥ 0.05, 3/10 fainter": `found_by_contrast`, for a report."""
    visible, faint = split["visible"], split["faint"]
    return (f"{visible['found']}/{visible['clusters']} at median MC contrast ≥ {split['faint_below']}, "
            f"{faint['found']}/{faint['clusters']} fainter")


def above_noise_text(split: dict) -> str:
    """"25/25 with 3 MCs ≥ 3 noise units, 0/7 under": `found_above_noise`, for a report."""
    above, below = split["above"], split["below"]
    return (f"{above['found']}/{above['clusters']} with 3 MCs ≥ {split['min_snr']:g} noise units, "
            f"{below['found']}/{below['clusters']} under")


def by_kind_text(site_rate: dict) -> str:
    """"vascular 12/25, coarse 4/61": a stress metric's counts per kind, for a report ("" if none)."""
    return ", ".join(f"{k} {v['with_a_cluster']}/{v['sites']}" for k, v in site_rate.get("by_kind", {}).items())


@dataclass
class ClusterComparison:
    """A scan's reported clusters against the true ones, by the centre-in-outline rule."""

    found: list[bool]  # per true cluster
    true_reported: int  # reported clusters on a true cluster
    false_reported: int  # reported clusters on none

    def summary(self) -> str:
        missed = len(self.found) - sum(self.found)
        return f"true clusters found: {sum(self.found)}/{len(self.found)} (missed {missed}); " \
               f"false clusters: {self.false_reported}"


def compare_clusters(reported: list, truth: list[list[tuple[float, float]]], margin_px: float) -> ClusterComparison:
    """Which true clusters (outline polygons) the reported ones (with x, y) find, and how
    many reported ones find none."""
    from mccscan.clusters import inside_polygon

    hits = np.array([[inside_polygon(c.x, c.y, outline, margin_px) for outline in truth] for c in reported],
                    bool).reshape(len(reported), len(truth))
    return ClusterComparison(hits.any(0).tolist(), int(hits.any(1).sum()), int((~hits.any(1)).sum()))
