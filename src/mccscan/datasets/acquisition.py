"""Acquisition randomisation for training: the same breast as different machines and
exports would deliver it, brought back to 70 µm as the scan does.

A drawn acquisition changes, in this order: the pixel size (the image is integrated onto
a 50–200 µm grid and resampled back to 70 µm, as a low-resolution export is read), the
detector (digital: blur and signal-dependent noise; film: grain, dust and scratches), and
the contrast curve (gamma or a film's S-shaped characteristic curve). MC positions do not
move: every step keeps the 70 µm geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mccscan.io import SCAN_PIXEL_SPACING_MM, resample_to_spacing

ACQUISITION_SPACINGS_MM = (0.05, 0.07, 0.1, 0.14, 0.2)


@dataclass(frozen=True)
class Acquisition:
    pixel_spacing_mm: float = SCAN_PIXEL_SPACING_MM
    film: bool = False
    blur_px: float = 0.0  # extra Gaussian blur at 70 µm
    noise: float = 0.0  # quantum (digital) or grain (film) amplitude on the [0, 1] scale
    gamma: float = 1.0
    s_curve: float = 0.0  # film characteristic curve steepness (0: none)
    dust: int = 0  # sharp bright specks (film dust) and …
    scratches: int = 0  # … thin bright lines


def draw_acquisition(rng: np.random.Generator, spacings_mm=ACQUISITION_SPACINGS_MM) -> Acquisition:
    """A random acquisition: half digital, half film; pixel size drawn from `spacings_mm`."""
    film = bool(rng.random() < 0.5)
    return Acquisition(
        pixel_spacing_mm=float(spacings_mm[rng.integers(len(spacings_mm))]),
        film=film,
        blur_px=float(rng.uniform(0.0, 0.6)),
        noise=float(rng.uniform(0.002, 0.012)),
        gamma=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        s_curve=float(rng.uniform(3, 8)) if film and rng.random() < 0.7 else 0.0,
        dust=int(rng.integers(0, 60)) if film else 0,
        scratches=int(rng.integers(0, 3)) if film else 0,
    )


def acquire(image: np.ndarray, breast: np.ndarray, acquisition: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """`image` (float [0, 1], 70 µm) as `acquisition` would deliver it, at 70 µm again;
    outside `breast` stays as it was."""
    if image.shape != breast.shape:
        raise ValueError(f"image {image.shape} and breast mask {breast.shape} differ in shape")
    spacing = acquisition.pixel_spacing_mm
    if not spacing > 0:
        raise ValueError(f"pixel_spacing_mm must be positive, got {spacing}")
    out = image.astype(np.float32, copy=True)
    if abs(spacing - SCAN_PIXEL_SPACING_MM) > 1e-9:
        native = resample_to_spacing(out, (SCAN_PIXEL_SPACING_MM,) * 2, spacing)
        out = resample_to_spacing(native, (spacing,) * 2, SCAN_PIXEL_SPACING_MM)
        out = _fit(out, image.shape)
    if acquisition.blur_px > 0:
        out = ndimage.gaussian_filter(out, acquisition.blur_px, truncate=3.0)
    if acquisition.noise > 0:
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        if acquisition.film:  # grain: clumps a few pixels wide, strongest in the mid-tones
            noise = ndimage.gaussian_filter(noise, 0.8) * 2.5
            out += acquisition.noise * noise * (0.5 + 2 * out * (1 - out))
        else:
            out += acquisition.noise * noise * np.sqrt(np.clip(out, 0, None))
    rows, cols = out.shape
    for _ in range(acquisition.dust):
        y, x = rng.integers(0, rows), rng.integers(0, cols)
        out[y:y + rng.integers(1, 3), x:x + rng.integers(1, 3)] += rng.uniform(0.05, 0.4)
    for _ in range(acquisition.scratches):
        x0, y0 = rng.uniform(0, cols), rng.uniform(0, rows)
        angle, length = rng.uniform(0, np.pi), rng.uniform(200, 2000)
        t = np.arange(int(length))
        xs, ys = (x0 + t * np.cos(angle)).astype(int), (y0 + t * np.sin(angle)).astype(int)
        on = (xs >= 0) & (xs < cols) & (ys >= 0) & (ys < rows)  # the part that lies on the image
        out[ys[on], xs[on]] += rng.uniform(0.03, 0.15)
    out = np.clip(out, 0, 1) ** np.float32(acquisition.gamma)
    if acquisition.s_curve > 0:  # a film's characteristic curve, rescaled to [0, 1]
        k = acquisition.s_curve
        lo, hi = 1 / (1 + np.exp(k / 2)), 1 / (1 + np.exp(-k / 2))
        out = (1 / (1 + np.exp(-k * (out - 0.5))) - lo) / (hi - lo)
    return np.where(breast, out, image).astype(np.float32)


def _fit(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or edge-pad to `shape` (a round trip through another grid can be a pixel off)."""
    out = image[:shape[0], :shape[1]]
    pad = ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1]))
    return np.pad(out, pad, mode="edge") if any(p[1] for p in pad) else out
