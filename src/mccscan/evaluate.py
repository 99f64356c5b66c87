"""Evaluation of a model on data: patch-level metrics with bootstrap intervals and
calibration, and the image-level FROC on the whole mammograms behind a built dataset's
split (dense map → candidate clusters → matched to annotated clusters). The arithmetic
is in `mccscan.metrics`, the figures in `mccscan.plots`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from mccscan.dataset_dir import PatchDataset
from mccscan.errors import MccscanError
from mccscan.metrics import (ImageClusters, TruthImage, cluster_counts, cluster_froc, cluster_hit_map, froc,
                             isolated_site_rate, mc_clusters, patch_evaluation)
from mccscan.models import MCCNet
from mccscan.patches import AnnotatedImage
from mccscan.plots import plot_calibration, plot_froc
from mccscan.predict import dense_probability_map, predict_patches
from mccscan.weights import LoadedModel


def truth_image(model: MCCNet, image_id: str, ann: AnnotatedImage, *, stride_px: int = 16) -> TruthImage:
    """Dense map of an `AnnotatedImage` and its clusters (outlined ones, else formed from MCs)."""
    clusters = ann.clusters or mc_clusters(ann.mc_xy, ann.image.shape)
    logit_map = dense_probability_map(model, ann.image, stride_px=stride_px, mask=ann.breast, logits=True)
    return TruthImage(image_id, logit_map, stride_px, clusters,
                      [cluster_hit_map(c, logit_map.shape, stride_px) for c in clusters])


def evaluate_on_dataset(model: nn.Module, data_dir: str | Path, out_dir: str | Path, *, split: str = "test",
                        n_bootstrap: int = 1000, seed: int = 0, pixel_spacing_mm: float | None = None,
                        model_info: dict | None = None) -> dict:
    """Patch-level metrics (with intervals, calibration plot) on a built dataset's split and,
    for an MCCNet whose source mammograms are readable, the image-level FROC (plot too).

    Writes OUT/evaluation.json (the summary, led by `model_info`: the model's name and SHA-256),
    calibration.png and froc.png; returns the summary plus the probabilities and labels."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = PatchDataset(data_dir)
    patches, labels = dataset.load_split(split)
    prob = predict_patches(model, patches)
    summary = {**(model_info or {}), "data": str(data_dir), "split": split,
               "patch_level": patch_evaluation(labels, prob, groups=dataset.window_groups(split),
                                               n_bootstrap=n_bootstrap, seed=seed)}
    plot_calibration(labels, prob, out_dir / "calibration.png")
    if not isinstance(model, MCCNet):
        summary["froc"] = {"skipped": "the dense map needs the paper's kind of network"}
    else:
        try:
            truths = [truth_image(model, image_id, ann)
                      for image_id, ann in dataset.split_images(split, pixel_spacing_mm=pixel_spacing_mm)]
            summary["froc"] = froc(truths)
            plot_froc(summary["froc"], out_dir / "froc.png")
        except MccscanError as exc:  # the mammograms are not there or not readable
            summary["froc"] = {"skipped": str(exc)}
    (out_dir / "evaluation.json").write_text(json.dumps(summary, indent=1) + "\n")
    return {**summary, "probabilities": prob, "labels": labels}


# ---- image level on whole phantoms: every detector through the scan a user runs ------------

EVAL_PHANTOM_SEEDS = range(220_000, 220_050)  # 50 unseen phantoms: no training ever draws these seeds


def phantom_clusters(ph, detections: list[tuple[float, float, float]]) -> ImageClusters:
    """A phantom's detections (x, y, score) against its true cluster outlines, with its
    isolated sites (a single MC, or a pair as one site at its midpoint) for the stress metric."""
    from mccscan.clusters import MATCH_MARGIN_MM, group_points

    isolated = np.array([(m.x, m.y) for m in ph.mcs if m.cluster_id is None]).reshape(-1, 2)
    sites = np.array([isolated[g].mean(0) for g in group_points(isolated, 61.0)]).reshape(-1, 2)
    return ImageClusters(f"phantom-{ph.seed}", detections, [c.outline for c in ph.clusters],
                         MATCH_MARGIN_MM / ph.pixel_spacing_mm, sites)


def evaluate_on_phantoms(loaded: LoadedModel, seeds=EVAL_PHANTOM_SEEDS, *, size: str = "large",
                         n_bootstrap: int = 1000, progress: bool = False) -> dict:
    """The cluster FROC (95% bootstrap CIs over images) of a detector on whole phantoms
    scanned as `mccscan scan` does, every isolated MC and lookalike included; the stress
    metric (isolated 1–2-MC sites that produce a cluster) at the weights' operating point."""
    from tqdm import tqdm

    from mccscan.datasets.phantom import make_phantom
    from mccscan.scan import default_threshold, scan_image

    images, seconds = [], []
    for seed in tqdm(list(seeds), desc="phantoms", unit="img", disable=not progress):
        ph = make_phantom(int(seed), size=size)
        result = scan_image(ph.image, loaded)
        seconds.append(result.elapsed_s)
        images.append(phantom_clusters(ph, [(c.x, c.y, c.score) for c in result.clusters]))
    threshold = default_threshold(loaded)
    summary = cluster_froc(images, n_bootstrap=n_bootstrap)
    summary["operating_point"] = {"threshold": threshold, **dict(zip(("found", "false", "clusters"),
                                                                     cluster_counts(images, threshold)))}
    summary["operating_point"]["fp_per_image"] = summary["operating_point"]["false"] / max(len(images), 1)
    summary["isolated_sites"] = isolated_site_rate(images, threshold, radius_px=72.0)
    summary["seeds"] = [int(seeds[0]), int(seeds[-1])]
    summary["scan_s_median"] = float(np.median(seconds))
    return summary
