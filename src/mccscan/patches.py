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


# --- labelled windows on annotated mammograms (the dataset builder's rule) -------------------

@dataclass(frozen=True)
class LabelRule:
    """When a 144×144 window is MCC-positive, negative, or left out.

    Positive: at least `min_mcs` annotated MC centres inside, or a cluster region covering
    at least `min_cluster_overlap` of the smaller of the window and that region (so a small
    cluster wholly inside counts, and so does a window inside a large one). Negative: no
    annotated MC inside, no cluster region touched, and breast on at least
    `min_breast_fraction` of the window. Anything else is ambiguous and left out.
    """

    min_mcs: int = 3
    min_cluster_overlap: float = 0.5
    min_breast_fraction: float = 0.5


@dataclass
class AnnotatedImage:
    """A mammogram at 70 µm with its annotations in the same pixels."""

    image: np.ndarray  # float32 in [0, 1]
    breast: np.ndarray  # bool
    mc_xy: np.ndarray  # (n, 2) MC centres (x, y)
    clusters: list[tuple[tuple[int, int], np.ndarray]]  # ((x0, y0), bool mask crop) per region


def cluster_crop(mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray] | None:
    """The bounding box corner (x0, y0) and the cropped mask of a region, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (int(xs.min()), int(ys.min())), mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def polygon_crop(outline, shape: tuple[int, int]) -> tuple[tuple[int, int], np.ndarray] | None:
    """Rasterise a polygon (x, y) px into a cropped mask, clipped to the image."""
    from PIL import Image, ImageDraw

    pts = np.asarray(outline, np.float64)
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    canvas = Image.new("1", (int(x1 - x0), int(y1 - y0)))
    ImageDraw.Draw(canvas).polygon([(float(x - x0), float(y - y0)) for x, y in pts], fill=1, outline=1)
    crop = np.asarray(canvas, bool)
    full = np.zeros(shape, bool)
    ys, xs = slice(max(y0, 0), min(y1, shape[0])), slice(max(x0, 0), min(x1, shape[1]))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return None
    full[ys, xs] = crop[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return cluster_crop(full)


@dataclass
class Window:
    x: int
    y: int
    label: int  # 1 MCC, 0 normal, -1 ambiguous, -2 too little breast
    n_mcs: int
    cluster_overlap: float


def label_window(ann: AnnotatedImage, x0: int, y0: int, rule: LabelRule,
                 size: int = PATCH_SIZE_PX) -> Window:
    xy = ann.mc_xy
    n_mcs = int(((xy[:, 0] >= x0) & (xy[:, 0] < x0 + size) & (xy[:, 1] >= y0) & (xy[:, 1] < y0 + size)).sum())
    overlap, touched = 0.0, False
    for (cx, cy), crop in ann.clusters:
        h, w = crop.shape
        ix0, iy0 = max(x0, cx), max(y0, cy)
        ix1, iy1 = min(x0 + size, cx + w), min(y0 + size, cy + h)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        inter = int(crop[iy0 - cy:iy1 - cy, ix0 - cx:ix1 - cx].sum())
        touched |= inter > 0
        overlap = max(overlap, inter / min(size * size, int(crop.sum())))
    if n_mcs >= rule.min_mcs or overlap >= rule.min_cluster_overlap:
        label = 1
    elif n_mcs == 0 and not touched:
        label = 0 if ann.breast[y0:y0 + size, x0:x0 + size].mean() >= rule.min_breast_fraction else -2
    else:
        label = -1
    return Window(x0, y0, label, n_mcs, round(overlap, 4))


def candidate_windows(ann: AnnotatedImage, rng: np.random.Generator, jitter_per_cluster: int = 8,
                      max_loose_mcs: int = 4, size: int = PATCH_SIZE_PX) -> list[tuple[int, int]]:
    """Every grid position (stride = size) inside the image, plus `jitter_per_cluster`
    jittered positions around each cluster region and around up to `max_loose_mcs` MCs
    outside any region, so clusters are also seen off-centre."""
    rows, cols = ann.image.shape
    if rows < size or cols < size:
        return []
    grid = [(x, y) for y in range(0, rows - size + 1, size) for x in range(0, cols - size + 1, size)]
    centres = [(cx + crop.shape[1] / 2, cy + crop.shape[0] / 2) for (cx, cy), crop in ann.clusters]
    # MCs outside every cluster region (INbreast marks many without a cluster outline)
    loose = [tuple(p) for p in ann.mc_xy if not any(
        cx <= p[0] < cx + crop.shape[1] and cy <= p[1] < cy + crop.shape[0] for (cx, cy), crop in ann.clusters)]
    if loose:
        picks = rng.choice(len(loose), min(len(loose), max_loose_mcs), replace=False)
        centres += [loose[i] for i in np.sort(picks)]
    jittered = []
    for cx, cy in centres:
        for _ in range(jitter_per_cluster):
            x = int(np.clip(round(cx - rng.uniform(0.15, 0.85) * size), 0, cols - size))
            y = int(np.clip(round(cy - rng.uniform(0.15, 0.85) * size), 0, rows - size))
            jittered.append((x, y))
    return list(dict.fromkeys(grid + jittered))  # unique, in a fixed order
