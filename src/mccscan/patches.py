"""Patches: breast mask, the tiling grid, labels, geometric augmentation, phantom patch sets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mccscan.models import PATCH_SIZE_PX


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[np.argmax(between) + 1])  # class 0 is everything up to this edge


def breast_mask(image: np.ndarray, downsample: int = 4) -> np.ndarray:
    """Breast region: above a fraction of Otsu's threshold, largest component, holes filled.

    Labels, markers and scanner noise outside the largest component are dropped. Work is
    done on a `downsample`-times smaller image and the mask brought back to full size.
    """
    small = image[::downsample, ::downsample]
    threshold = 0.35 * otsu_threshold(small)
    fg = small > max(threshold, 1e-3)
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(image.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    small_mask = ndimage.binary_fill_holes(labels == np.argmax(sizes))
    full = np.repeat(np.repeat(small_mask, downsample, 0), downsample, 1)
    return full[: image.shape[0], : image.shape[1]]


@dataclass(frozen=True)
class TileGrid:
    """Non-overlapping tiles in raster order, covering the image (edge tiles zero-padded)."""

    image_shape: tuple[int, int]
    tile_size_px: int = PATCH_SIZE_PX

    @property
    def n_rows(self) -> int:
        return -(-self.image_shape[0] // self.tile_size_px)

    @property
    def n_cols(self) -> int:
        return -(-self.image_shape[1] // self.tile_size_px)

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.n_rows * self.tile_size_px, self.n_cols * self.tile_size_px

    def pad(self, image: np.ndarray) -> np.ndarray:
        rows, cols = self.padded_shape
        if image.shape == (rows, cols):
            return image
        out = np.zeros((rows, cols), dtype=image.dtype)
        out[: image.shape[0], : image.shape[1]] = image
        return out

    def coverage(self, mask: np.ndarray) -> np.ndarray:
        """Fraction of each tile covered by `mask`, shape (n_rows, n_cols)."""
        t = self.tile_size_px
        padded = self.pad(mask.astype(np.float32))
        return padded.reshape(self.n_rows, t, self.n_cols, t).mean(axis=(1, 3))

    def tiles(self, image: np.ndarray) -> np.ndarray:
        """All tiles as an array (n_rows, n_cols, t, t)."""
        t = self.tile_size_px
        return self.pad(image).reshape(self.n_rows, t, self.n_cols, t).swapaxes(1, 2)


# The paper's geometric augmentation, on the last two axes of a patch array.
AUGMENTATIONS = {
    "identity": lambda p: p,
    "mirror": lambda p: p[..., ::-1],
    "rot180": lambda p: p[..., ::-1, ::-1],
    "mirror_rot180": lambda p: p[..., ::-1, :],  # mirror then 180° = vertical flip
    "rot90": lambda p: np.rot90(p, 1, axes=(-2, -1)),
}


def augment_x5(patches: np.ndarray) -> np.ndarray:
    """Each patch, mirrored, rotated 180°, both, and rotated 90° → shape (N, 5, H, W)."""
    return np.stack([f(patches) for f in AUGMENTATIONS.values()], axis=1)


@dataclass
class PatchSet:
    patches: np.ndarray  # uint8 (N, 144, 144), 8-bit like the paper's PNG patches
    labels: np.ndarray  # uint8 (N,), 1 = MCC
    image_index: np.ndarray  # int (N,), which source image each patch came from
    kinds: np.ndarray  # str (N,): "cluster", "tissue" or "isolated_mc" (stress sets only)


def _mcs_inside(mcs_xy: np.ndarray, x0: int, y0: int, size: int, margin: int) -> int:
    if len(mcs_xy) == 0:
        return 0
    inside = ((mcs_xy[:, 0] >= x0 + margin) & (mcs_xy[:, 0] < x0 + size - margin)
              & (mcs_xy[:, 1] >= y0 + margin) & (mcs_xy[:, 1] < y0 + size - margin))
    return int(inside.sum())


def phantom_patches(phantom, rng: np.random.Generator, positives_per_cluster: int = 12,
                    negatives: int = 40, isolated_mc_negatives: bool = False,
                    min_breast_fraction: float = 0.3, patch_size_px: int = PATCH_SIZE_PX):
    """Labelled patches from one phantom image.

    Positive: ≥3 of one cluster's MCs inside the patch (jittered positions, so clusters
    are seen off-centre). Negative: random breast tissue that touches no cluster and
    holds no MC at all; patches with one or two isolated MCs are neither (the label rule
    leaves them out). With `isolated_mc_negatives`, the negatives are instead patches
    centred near isolated MCs, labelled 0 with kind "isolated_mc": a stress set.
    Returns (patches uint8, labels, kinds: "cluster", "tissue" or "isolated_mc").
    """
    img8 = phantom.to_uint8()
    rows, cols = img8.shape
    size, margin = patch_size_px, 4
    out, labels, kinds = [], [], []
    cluster_xy = {c.id: np.array([(m.x, m.y) for m in phantom.mcs if m.cluster_id == c.id]) for c in phantom.clusters}

    def take(x0, y0, label, kind):
        out.append(img8[y0:y0 + size, x0:x0 + size])
        labels.append(label)
        kinds.append(kind)

    for c in phantom.clusters:
        got = 0
        for _ in range(positives_per_cluster * 20):
            if got == positives_per_cluster:
                break
            x0 = int(round(c.x - rng.uniform(0.15, 0.85) * size))
            y0 = int(round(c.y - rng.uniform(0.15, 0.85) * size))
            if not (0 <= x0 <= cols - size and 0 <= y0 <= rows - size):
                continue
            if _mcs_inside(cluster_xy[c.id], x0, y0, size, margin) >= 3:
                take(x0, y0, 1, "cluster")
                got += 1

    def touches_cluster(x0, y0):
        for c in phantom.clusters:  # distance from cluster centre to the patch rectangle
            dx = max(x0 - c.x, 0, c.x - (x0 + size))
            dy = max(y0 - c.y, 0, c.y - (y0 + size))
            if np.hypot(dx, dy) < c.radius_px + 16:
                return True
        return False

    isolated = [m for m in phantom.mcs if m.cluster_id is None]
    isolated_xy = np.array([(m.x, m.y) for m in isolated]).reshape(-1, 2)
    got = 0
    for _ in range(negatives * 50):
        if got == negatives or (isolated_mc_negatives and not isolated):
            break
        if isolated_mc_negatives:
            m = isolated[rng.integers(len(isolated))]
            x0 = int(round(m.x - rng.uniform(0.1, 0.9) * size))
            y0 = int(round(m.y - rng.uniform(0.1, 0.9) * size))
        else:
            x0, y0 = int(rng.integers(0, cols - size + 1)), int(rng.integers(0, rows - size + 1))
        if not (0 <= x0 <= cols - size and 0 <= y0 <= rows - size) or touches_cluster(x0, y0):
            continue
        if phantom.breast_mask[y0:y0 + size, x0:x0 + size].mean() < min_breast_fraction:
            continue
        has_mc = _mcs_inside(isolated_xy, x0, y0, size, 0) > 0
        if has_mc != isolated_mc_negatives:
            continue
        take(x0, y0, 0, "isolated_mc" if has_mc else "tissue")
        got += 1
    patches = np.stack(out) if out else np.zeros((0, size, size), np.uint8)
    return patches, np.array(labels, np.uint8), np.array(kinds)


def build_phantom_patch_set(seeds, *, size="small", n_clusters=(2, 5), rng_seed: int = 0,
                            progress: bool = False, **kwargs) -> PatchSet:
    """Patches from one phantom per seed (each phantom has 2–4 clusters by default)."""
    from tqdm import tqdm

    from mccscan.datasets.phantom import make_phantom

    rng = np.random.default_rng(rng_seed)
    parts = []
    for i, seed in enumerate(tqdm(list(seeds), desc="phantoms", unit="img", disable=not progress)):
        ph = make_phantom(int(seed), size=size, n_clusters=int(rng.integers(*n_clusters)))
        p, lab, kind = phantom_patches(ph, rng, **kwargs)
        parts.append((p, lab, np.full(len(lab), i), kind))
    return PatchSet(*(np.concatenate(x) for x in zip(*parts)))


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that keep every minority-class sample and as many of the majority, sorted."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n = min(len(pos), len(neg))
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return np.sort(keep)
