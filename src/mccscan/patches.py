"""Training labels: a mammogram and its annotations at 70 µm (`AnnotatedImage`), the rule
that labels a 144×144 window MCC, normal or left out (`LabelRule`), candidate windows,
the paper's ×5 geometric augmentation and the class balance. The dataset builder and
every training set use these, so there is one label rule and one balancer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mccscan.datasets.base import MammogramRecord
from mccscan.datasets import phantom
from mccscan.io import SCAN_PIXEL_SPACING_MM, MammogramError, load_for_scan, read_mammogram, resample_to_spacing
from mccscan.tiling import PATCH_SIZE_PX, breast_mask


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


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that keep every minority-class sample and as many of the majority, sorted
    (so the original order is kept). The one class balancer of the project."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n = min(len(pos), len(neg))
    if n == 0:
        return np.zeros(0, np.int64)
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return np.sort(keep)


# --- labelled windows on annotated mammograms ------------------------------------------------

@dataclass(frozen=True)
class LabelRule:
    """When a 144×144 window is MCC-positive, negative, or left out.

    Positive: at least `min_mcs` annotated MC centres inside, or a cluster region covering
    at least `min_cluster_overlap` of the smaller of the window and that region (so a small
    cluster wholly inside counts, and so does a window inside a large one). Negative: no
    annotated MC inside, no cluster region touched, and breast on at least
    `min_breast_fraction` of the window. Anything else is ambiguous and left out; with
    `isolated_negative`, windows holding only isolated MCs (1–2, no cluster) are negatives
    too: the hard negatives a cluster detector must learn to reject.
    """

    min_mcs: int = 3
    min_cluster_overlap: float = 0.5
    min_breast_fraction: float = 0.5
    isolated_negative: bool = False  # windows with 1 … min_mcs − 1 MCs and no cluster: negatives, not left out


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
    elif not touched and (n_mcs == 0 or rule.isolated_negative):
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


def labelled_windows(ann: AnnotatedImage, rule: LabelRule, rng: np.random.Generator,
                     jitter_per_cluster: int = 8) -> list[Window]:
    """Every candidate window of an image, labelled by the rule (ambiguous ones included)."""
    return [label_window(ann, x, y, rule) for x, y in candidate_windows(ann, rng, jitter_per_cluster)]


def cut_patches(image: np.ndarray, windows: list[Window], size: int = PATCH_SIZE_PX) -> np.ndarray:
    """The windows' pixels as 8-bit patches (N, size, size), like the paper's PNG patches."""
    image8 = np.round(image * 255).astype(np.uint8)
    return np.stack([image8[w.y:w.y + size, w.x:w.x + size] for w in windows]) if windows else \
        np.zeros((0, size, size), np.uint8)


def labelled_patches(ann: AnnotatedImage, rng: np.random.Generator, rule: LabelRule = LabelRule(),
                     jitter_per_cluster: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced patches (uint8) and labels of one annotated image, unaugmented."""
    windows = [w for w in labelled_windows(ann, rule, rng, jitter_per_cluster) if w.label in (0, 1)]
    labels = np.array([w.label for w in windows], np.uint8)
    keep = balanced_indices(labels, rng)
    return cut_patches(ann.image, [windows[i] for i in keep]), labels[keep]


def phantom_patches(seeds, *, seed: int = 0, size: str | tuple[int, int] = "small",
                    n_clusters: tuple[int, int] = (2, 5)) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labelled patches from one phantom per seed (2–4 clusters each by default),
    by the same rule as every built dataset: for checks and tests without a dataset folder."""
    rng = np.random.default_rng(seed)
    parts = []
    for phantom_seed in seeds:
        ph = phantom.make_phantom(int(phantom_seed), size=size, n_clusters=int(rng.integers(*n_clusters)))
        parts.append(labelled_patches(annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters), rng))
    patches, labels = zip(*parts)
    return np.concatenate(patches), np.concatenate(labels)


def annotated_truth(image: np.ndarray, breast: np.ndarray, mcs, clusters) -> AnnotatedImage:
    """An image with exact synthetic truth as its annotations: phantom MCs (with x, y) and
    clusters (with an outline), e.g. `annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters)`."""
    return AnnotatedImage(image, breast, np.array([(m.x, m.y) for m in mcs], np.float64).reshape(-1, 2),
                          [c for c in (polygon_crop(c.outline, image.shape) for c in clusters) if c])


def read_record(record: MammogramRecord, insert_clusters: int, insert_seed: tuple):
    """(image at 70 µm, source shape, (breast, MCs, clusters) put into it or None)."""
    scan = load_for_scan(record.image_path, pixel_spacing_mm=record.pixel_spacing_mm)
    if not insert_clusters or record.annotated:
        return scan.image, scan.source.image.shape, None
    breast = breast_mask(scan.image)
    rng = np.random.default_rng(insert_seed)
    image, mcs, clusters = phantom.insert_clusters(scan.image, breast, rng, insert_clusters)
    return image, scan.source.image.shape, (breast, mcs, clusters)


def annotate(record: MammogramRecord, insert_clusters: int = 0, insert_seed: tuple = ()) -> AnnotatedImage:
    """Read a record's image at 70 µm and bring its annotations to the same pixels.

    With `insert_clusters` > 0 and an unannotated (normal) record, that many phantom MC
    clusters are put into the tissue (seeded by `insert_seed`, so a second read gives the
    same image) and become its annotations.
    """
    image, (src_rows, src_cols), inserted = read_record(record, insert_clusters, insert_seed)
    if inserted is not None:
        return annotated_truth(image, *inserted)
    sy, sx = image.shape[0] / src_rows, image.shape[1] / src_cols
    mc_xy = np.array([(m.x * sx, m.y * sy) for m in record.mcs], np.float64).reshape(-1, 2)
    clusters = []
    for region in record.clusters:
        if region.outline is not None:
            crop = polygon_crop([(x * sx, y * sy) for x, y in region.outline], image.shape)
        else:
            mask = read_mammogram(region.mask_path).image
            if mask.shape != (src_rows, src_cols):
                raise MammogramError(region.mask_path, f"ROI mask is {mask.shape[1]}×{mask.shape[0]}, "
                                                       f"the image {src_cols}×{src_rows}")
            spacing = (SCAN_PIXEL_SPACING_MM * sy, SCAN_PIXEL_SPACING_MM * sx)  # the source spacing
            crop = cluster_crop(resample_to_spacing(mask, spacing) > 0.5)
        if crop is not None:
            clusters.append(crop)
    return AnnotatedImage(image, breast_mask(image), mc_xy, clusters)
