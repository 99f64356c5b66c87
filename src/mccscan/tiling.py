"""Scan geometry: the 1 cm² tile, the raster grid of tiles and the breast mask.

What the scan needs to lay tiles over a mammogram and decide which are background;
nothing here knows about labels or training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PATCH_SIZE_PX = 144  # 1 cm² at 70 µm


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


FILM_STRIP_MM = 5.0  # film borders narrower than twice this are cut off the breast
EDGE_DETAIL_MM = 1.0  # fine detail of the skin line kept after the opening


def breast_mask(image: np.ndarray, downsample: int = 4, pixel_spacing_mm: float = 0.07) -> np.ndarray:
    """Breast region: above a fraction of Otsu's threshold (on intensities scaled by their
    99.5th percentile), largest component, holes filled.

    Labels, markers and scanner noise outside the largest component are dropped. Bright
    film-border strips and rulers that touch the breast are cut off by an opening with a
    disk of `FILM_STRIP_MM` (strips up to twice that wide vanish, along the image edge
    too; the breast, wider everywhere, keeps its shape, and its skin line is restored to
    `EDGE_DETAIL_MM`); a region too small to survive the opening is kept as it is. A
    uniform image (all black, all white) has no breast. Work is done on a
    `downsample`-times smaller image and the mask brought back to full size.
    """
    if pixel_spacing_mm <= 0:
        raise ValueError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm}")
    small = image[::downsample, ::downsample]
    if small.size == 0 or float(small.max()) - float(small.min()) < 1 / 255:
        return np.zeros(image.shape, bool)  # uniform: blank, or nothing that stands out as a breast
    # a robust scale: a few saturated pixels (a burned-in label, a marker) must not squeeze
    # the breast into the bottom bins of Otsu's histogram
    scale = float(np.percentile(small, 99.5)) or float(small.max())
    small = np.minimum(small / np.float32(scale), 1)
    threshold = 0.35 * otsu_threshold(small)
    fg = small > max(threshold, 1e-3)
    small_px_mm = pixel_spacing_mm * downsample
    strip_px = FILM_STRIP_MM / small_px_mm
    inside = ndimage.distance_transform_edt(np.pad(fg, 1))[1:-1, 1:-1]  # beyond the image is background
    core = inside > strip_px  # centres of disks that fit inside
    if core.any():
        opened = ndimage.distance_transform_edt(~core) <= strip_px  # the union of those disks
        fg &= ndimage.distance_transform_edt(~opened) <= EDGE_DETAIL_MM / small_px_mm
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
        padded = self.pad(mask.astype(np.uint8, copy=False))  # one byte a pixel, not four
        counts = padded.reshape(self.n_rows, t, self.n_cols, t).sum(axis=(1, 3), dtype=np.int64)
        return (counts / (t * t)).astype(np.float32)

    def tiles(self, image: np.ndarray) -> np.ndarray:
        """All tiles as an array (n_rows, n_cols, t, t)."""
        t = self.tile_size_px
        return self.pad(image).reshape(self.n_rows, t, self.n_cols, t).swapaxes(1, 2)
