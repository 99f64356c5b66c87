"""Evaluation of a model on data: patch-level metrics with bootstrap intervals and
calibration, and the image-level FROC on the whole mammograms behind a built dataset's
split (dense map → candidate clusters → matched to annotated clusters). The arithmetic
is in `mccscan.metrics`, the figures in `mccscan.plots`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mccscan.dataset_dir import PatchDataset
from mccscan.errors import InputError, MccscanError
from mccscan.metrics import (ImageClusters, TruthImage, cluster_counts, cluster_froc, cluster_hit_map,
                             found_by_contrast, froc, isolated_site_rate, mc_clusters, patch_evaluation)
from mccscan.atomic import atomic_write_text
from mccscan.io import PIXEL_SPACING_RANGE_MM, SCAN_PIXEL_SPACING_MM
from mccscan.models import MCCNet, MCNet
from mccscan.patches import AnnotatedImage
from mccscan.plots import plot_calibration, plot_froc
from mccscan.predict import dense_probability_map, predict_patches
from mccscan.scan import default_threshold, detector_options, scan_image
from mccscan.tiling import PATCH_SIZE_PX
from mccscan.weights import LoadedModel

SITE_RADIUS_PX = PATCH_SIZE_PX / 2  # a false cluster centred this close to an isolated site or lookalike is its doing


def truth_image(model: MCCNet, image_id: str, ann: AnnotatedImage, *, stride_px: int = 16) -> TruthImage:
    """Dense map of an `AnnotatedImage` and its clusters (outlined ones, else formed from MCs)."""
    clusters = ann.clusters or mc_clusters(ann.mc_xy, ann.image.shape)
    logit_map = dense_probability_map(model, ann.image, stride_px=stride_px, mask=ann.breast, logits=True)
    return TruthImage(image_id, logit_map, stride_px, clusters,
                      [cluster_hit_map(c, logit_map.shape, stride_px) for c in clusters])


def evaluate_on_dataset(loaded: LoadedModel, data_dir: str | Path, out_dir: str | Path, *, split: str = "test",
                        n_bootstrap: int = 1000, seed: int = 0, pixel_spacing_mm: float | None = None) -> dict:
    """A model on a built dataset's split: patch-level metrics (with intervals, calibration
    plot) for a patch classifier; and, on the whole mammograms behind the split (every
    isolated MC and lookalike included), the cluster FROC of the scan a user runs (centre
    in the true outline dilated by 5 mm, bootstrap CIs over images) with the stress metric
    and, for the paper's net, the FROC of its dense map (the reproduction's figure).

    Writes OUT/evaluation.json, calibration.png and froc.png; returns the summary plus the
    patch probabilities and labels."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, model = PatchDataset(data_dir), loaded.model
    summary = {"model": loaded.name, "sha256": loaded.sha256, "data": str(data_dir), "split": split}
    prob = labels = None
    if isinstance(model, MCNet):
        summary["patch_level"] = {"skipped": "the cluster detector scores MCs, not 1 cm² patches"}
    else:
        patches, labels = dataset.load_split(split)
        prob = predict_patches(model, patches)
        summary["patch_level"] = patch_evaluation(labels, prob, groups=dataset.window_groups(split),
                                                  n_bootstrap=n_bootstrap, seed=seed)
        plot_calibration(labels, prob, out_dir / "calibration.png")
    dense = isinstance(model, MCCNet) and model.config.f2_pool == "max"
    if not isinstance(model, (MCCNet, MCNet)):
        summary["froc"] = summary["cluster_froc"] = {"skipped": "whole-mammogram scans need the paper's kind of "
                                                                "network or the cluster detector"}
    else:
        try:
            truths, images = [], []
            for image_id, ann in dataset.split_images(split, pixel_spacing_mm=pixel_spacing_mm):
                if dense:
                    truths.append(truth_image(model, image_id, ann))
                images.append(annotated_clusters(ann, scan_image(ann.image, loaded).clusters, image_id))
            summary["cluster_froc"] = cluster_froc(images, n_bootstrap=n_bootstrap, seed=seed)
            summary["cluster_froc"]["isolated_sites"] = isolated_site_rate(images, default_threshold(loaded),
                                                                           SITE_RADIUS_PX)
            summary["froc"] = froc(truths) if dense else {"skipped": "the dense map needs the paper's global-max net"}
            if dense:
                plot_froc(summary["froc"], out_dir / "froc.png")
        except MccscanError as exc:  # the mammograms are not there or not readable
            summary["froc"] = summary["cluster_froc"] = {"skipped": str(exc)}
    atomic_write_text(out_dir / "evaluation.json", json.dumps(summary, indent=1) + "\n")
    return {**summary, "probabilities": prob, "labels": labels}


def annotated_clusters(ann: AnnotatedImage, detected: list, image_id: str) -> ImageClusters:
    """Detected clusters against an annotated mammogram's clusters (each region's box as its
    outline; regions formed from MC points where none is outlined), with its isolated MC sites."""
    from mccscan.clusters import MATCH_MARGIN_MM

    regions = ann.clusters or mc_clusters(ann.mc_xy, ann.image.shape)
    outlines = [[(x0, y0), (x0 + m.shape[1], y0), (x0 + m.shape[1], y0 + m.shape[0]), (x0, y0 + m.shape[0])]
                for (x0, y0), m in regions]
    loose = [p for p in ann.mc_xy.reshape(-1, 2) if not any(
        x0 <= p[0] < x0 + m.shape[1] and y0 <= p[1] < y0 + m.shape[0] for (x0, y0), m in regions)]
    return ImageClusters(image_id, [(c.x, c.y, c.score) for c in detected], outlines,
                         MATCH_MARGIN_MM / SCAN_PIXEL_SPACING_MM, isolated_sites(loose))


def isolated_sites(xy) -> np.ndarray:
    """MCs outside every cluster as stress-metric sites: a single MC, or a pair (closer than
    61 px, as the phantom places them) as one site at its midpoint."""
    from mccscan.clusters import group_points

    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    return np.array([xy[g].mean(0) for g in group_points(xy, 61.0)]).reshape(-1, 2)


# ---- image level on whole phantoms: every detector through the scan a user runs ------------

EVAL_PHANTOM_SEEDS = range(220_000, 220_050)  # 50 unseen phantoms: no training ever draws these seeds


def phantom_clusters(ph, detections: list[tuple[float, float, float]]) -> ImageClusters:
    """A phantom's detections (x, y, score) against its true cluster outlines, with its
    isolated sites for the stress metric."""
    from mccscan.clusters import MATCH_MARGIN_MM

    return ImageClusters(f"phantom-{ph.seed}", detections, [c.outline for c in ph.clusters],
                         MATCH_MARGIN_MM / ph.pixel_spacing_mm,
                         isolated_sites([(m.x, m.y) for m in ph.mcs if m.cluster_id is None]),
                         np.array([(b.x, b.y) for b in ph.lookalikes]).reshape(-1, 2),
                         tuple(b.kind for b in ph.lookalikes), cluster_contrast(ph.mcs, ph.clusters))


def cluster_contrast(mcs, clusters) -> np.ndarray:
    """The median contrast of each synthetic cluster's MCs."""
    return np.array([np.median([m.contrast for m in mcs if m.cluster_id == c.id]) for c in clusters])


def cluster_signal_snr(with_clusters: np.ndarray, without: np.ndarray, breast: np.ndarray, mcs, clusters) -> np.ndarray:
    """How far each inserted cluster stands above the tissue's noise: the signal of its 3rd
    strongest MC alone, in noise units, through the default detector's first filter (the
    normalised high-pass, a 3×3 mean over a σ `WIDE_SIGMA_PX` background, of the image with
    the clusters minus that of the tissue alone; its largest value within 1 px of the MC's
    centre, where a close bright neighbour's tail can add a little; 0 for a cluster of fewer
    than 3). Unlike the contrast drawn, this counts what the MC's size, the blur and the
    tissue's local noise leave of it. The same yardstick for every detector measured."""
    from scipy import ndimage

    from mccscan.clusters import MIN_MCS
    from mccscan.mcdetect import normalised_highpass

    signal = normalised_highpass(with_clusters, breast) - normalised_highpass(without, breast)
    near_centre = ndimage.maximum_filter(signal, size=3, mode="nearest")
    out = []
    for c in clusters:
        xy = np.array([(m.x, m.y) for m in mcs if m.cluster_id == c.id]).reshape(-1, 2).round().astype(int)
        cols, rows = np.clip(xy[:, 0], 0, signal.shape[1] - 1), np.clip(xy[:, 1], 0, signal.shape[0] - 1)
        peaks = np.sort(near_centre[rows, cols])[::-1]
        out.append(float(peaks[MIN_MCS - 1]) if len(peaks) >= MIN_MCS else 0.0)
    return np.array(out)


def delivered_phantom(seed: int, *, size: str = "large", pixel_spacing_mm: float = SCAN_PIXEL_SPACING_MM):
    """The phantom of `seed` and its 70 µm image as the scan receives it at `pixel_spacing_mm`
    (`delivered_image`)."""
    from mccscan.datasets.phantom import make_phantom

    ph = make_phantom(seed, size=size)
    return ph, delivered_image(ph, pixel_spacing_mm)


def delivered_image(ph, pixel_spacing_mm: float) -> np.ndarray:
    """A phantom's 70 µm image as the scan receives it: at another `pixel_spacing_mm`,
    delivered on that pixel grid (integrated onto it, or interpolated when finer) and
    brought back to 70 µm as a file of that spacing would be; the same for a given seed."""
    from mccscan.datasets.acquisition import Acquisition, acquire

    return ph.image if pixel_spacing_mm == SCAN_PIXEL_SPACING_MM else acquire(
        ph.image, ph.breast_mask, Acquisition(pixel_spacing_mm=pixel_spacing_mm), np.random.default_rng(ph.seed))


def scan_phantoms(loaded: LoadedModel, seeds, *, size: str = "large",
                  pixel_spacings_mm: tuple[float, ...] = (SCAN_PIXEL_SPACING_MM,),
                  progress: bool = False) -> tuple[list[ImageClusters], list[float]]:
    """One phantom per seed, delivered at each of `pixel_spacings_mm` (`delivered_image`; drawn
    once for all of them) and scanned as `mccscan scan` does: its clusters against the truth,
    and the scan's seconds, seed by seed and spacing by spacing."""
    from tqdm import tqdm

    from mccscan.datasets.phantom import make_phantom

    images, seconds = [], []
    for seed in tqdm([int(s) for s in seeds], desc="phantoms", unit="phantom", disable=not progress):
        ph = make_phantom(seed, size=size)
        for spacing in pixel_spacings_mm:
            result = scan_image(delivered_image(ph, spacing), loaded)
            seconds.append(result.elapsed_s)
            images.append(phantom_clusters(ph, [(c.x, c.y, c.score) for c in result.clusters]))
    return images, seconds


def evaluate_on_phantoms(loaded: LoadedModel, n_phantoms: int = len(EVAL_PHANTOM_SEEDS), *, n_bootstrap: int = 1000,
                         pixel_spacing_mm: float = SCAN_PIXEL_SPACING_MM, out_dir: str | Path | None = None,
                         progress: bool = False) -> dict:
    """The cluster FROC (95% bootstrap CIs over images) of a detector on the first
    `n_phantoms` unseen phantoms scanned as `mccscan scan` does (delivered at
    `pixel_spacing_mm`), every isolated MC and lookalike included; the stress metrics
    (isolated 1–2-MC sites and benign lookalikes that produce a cluster) and the found /
    false counts at the weights' operating point. With `out_dir`, also OUT/evaluation.json."""
    if not 1 <= n_phantoms <= len(EVAL_PHANTOM_SEEDS):
        raise InputError(f"evaluate on 1–{len(EVAL_PHANTOM_SEEDS)} phantoms (those reserved for evaluation), "
                         f"not {n_phantoms}")
    low, high = PIXEL_SPACING_RANGE_MM
    if not low <= pixel_spacing_mm <= high:
        raise InputError(f"pixel spacing {pixel_spacing_mm} mm is outside {low}–{high} mm")
    seeds = EVAL_PHANTOM_SEEDS[:n_phantoms]
    images, seconds = scan_phantoms(loaded, seeds, pixel_spacings_mm=(pixel_spacing_mm,), progress=progress)
    threshold = default_threshold(loaded)
    summary = cluster_froc(images, n_bootstrap=n_bootstrap)
    summary["operating_point"] = {"threshold": threshold, **dict(zip(("found", "false", "clusters"),
                                                                     cluster_counts(images, threshold)))}
    summary["operating_point"]["fp_per_image"] = summary["operating_point"]["false"] / len(images)
    summary["operating_point"]["by_contrast"] = found_by_contrast(images, threshold)
    summary["isolated_sites"] = isolated_site_rate(images, threshold, SITE_RADIUS_PX)
    summary["lookalike_sites"] = isolated_site_rate(images, threshold, SITE_RADIUS_PX, kind="lookalike")
    summary["seeds"] = [seeds[0], seeds[-1]]
    summary["pixel_spacing_mm"] = pixel_spacing_mm
    summary["scan_s_median"] = float(np.median(seconds))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out_dir) / "evaluation.json", json.dumps(
            {"model": loaded.name, "sha256": loaded.sha256, "detector_options": detector_options(loaded),
             "cluster_froc": summary}, indent=1) + "\n")
    return summary
