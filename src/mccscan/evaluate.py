"""Evaluation: patch-level metrics and scan results against known clusters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mccscan.models import MCCNet


def predict_patches(model: MCCNet, patches_u8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of uint8 patches (N, H, W), normalised by /255 as in the paper."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(patches_u8), batch_size):
            x = torch.from_numpy(patches_u8[i:i + batch_size]).float().div_(255)[:, None]
            out.append(torch.sigmoid(model(x)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


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


@dataclass
class ClusterComparison:
    clusters_total: int
    clusters_found: int  # true clusters overlapped by at least one MCC tile
    mcc_tiles: int
    mcc_tiles_on_clusters: int
    mcc_tiles_elsewhere: int  # false-positive tiles
    found: list[bool]  # per true cluster

    def summary(self) -> str:
        return (f"true clusters found: {self.clusters_found}/{self.clusters_total}; "
                f"MCC tiles: {self.mcc_tiles} ({self.mcc_tiles_on_clusters} on a true cluster, "
                f"{self.mcc_tiles_elsewhere} elsewhere)")


def compare_with_clusters(result, clusters) -> ClusterComparison:
    """Which true clusters (objects with x, y, radius_px in scan pixels) the MCC
    tiles of a `ScanResult` overlap, and how many MCC tiles overlap none."""
    t = result.tile_size_px
    mcc = [tile for tile in result.tiles if tile.label == "mcc"]
    found = [False] * len(clusters)
    on_cluster = 0
    for tile in mcc:
        hit = False
        for i, c in enumerate(clusters):
            dx = max(tile.x - c.x, 0, c.x - (tile.x + t))
            dy = max(tile.y - c.y, 0, c.y - (tile.y + t))
            if dx * dx + dy * dy <= c.radius_px ** 2:
                found[i] = hit = True
        on_cluster += hit
    return ClusterComparison(len(clusters), sum(found), len(mcc), on_cluster, len(mcc) - on_cluster, found)
