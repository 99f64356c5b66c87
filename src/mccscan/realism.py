"""How much a mammogram looks like breast tissue, as the scan sees it (70 µm, [0, 1]):
four statistics measured inside the breast, away from the skin line, to compare the
phantom with real mammograms (`benchmarks/realism.py`).

1. β, the slope of the radially averaged power spectrum P(f) ∝ 1/f^β over 0.15–1 cycles/mm
   (anatomical noise: about 3 for real breasts);
2. the fraction of the spectral power in the MC band, 1/14–1/2 cycles/px (the scale of
   0.1–1 mm specks), as log10;
3. the density of MC-like specks per cm²: the candidates the detector's first stage finds
   (as first shipped: SNR 3.5 over a σ 6 px background, `mcdetect.FIRST_DETECTOR_SETTINGS`),
   every one of which its network must accept or reject;
4. the intensity histogram inside the breast: median and the 5–95 % spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

PIXEL_SPACING_MM = 0.07  # what the scan sees; every statistic is taken there
ROI_PX = 256  # 17.9 mm squares
SLOPE_BAND_CYCLES_PER_MM = (0.15, 1.0)
MC_BAND_CYCLES_PER_PX = (1 / 14, 1 / 2)
INNER_MARGIN_MM = 10.0  # statistics are taken this far inside the skin line


@dataclass
class Realism:
    beta: float
    mc_band_log10: float
    specks_per_cm2: float
    median: float
    spread_5_95: float

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in asdict(self).items()}


def inner_breast(breast: np.ndarray) -> np.ndarray:
    """The breast of a 70 µm image eroded by `INNER_MARGIN_MM` (computed at 1/8 resolution)."""
    small = breast[::8, ::8]
    inner = ndimage.distance_transform_edt(np.pad(small, 1))[1:-1, 1:-1] > INNER_MARGIN_MM / (8 * PIXEL_SPACING_MM)
    full = np.repeat(np.repeat(inner, 8, 0), 8, 1)
    return full[:breast.shape[0], :breast.shape[1]]


def roi_corners(region: np.ndarray, roi_px: int = ROI_PX, max_rois: int = 64) -> list[tuple[int, int]]:
    """Top-left corners of non-overlapping roi_px squares lying wholly in `region`."""
    rows, cols = region.shape
    corners = []
    for r in range(0, rows - roi_px + 1, roi_px):
        for c in range(0, cols - roi_px + 1, roi_px):
            if region[r:r + roi_px:8, c:c + roi_px:8].all() and region[r + roi_px - 1, c + roi_px - 1]:
                corners.append((r, c))
    step = max(1, len(corners) // max_rois)
    return corners[::step][:max_rois]


def radial_power(roi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a square ROI (mean removed, Hann window):
    (frequency in cycles/px, power), for f in (0, 0.5]."""
    n = roi.shape[0]
    if roi.ndim != 2 or roi.shape[1] != n:
        raise ValueError(f"the ROI must be square, got {roi.shape}")
    window = np.outer(np.hanning(n), np.hanning(n))
    power = np.abs(np.fft.fft2((roi - roi.mean()) * window)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    bins = np.round(f * n).astype(int)
    total = np.bincount(bins.ravel(), power.ravel())
    count = np.bincount(bins.ravel())
    k = np.arange(1, n // 2 + 1)
    return k / n, total[k] / np.maximum(count[k], 1)


def spectral_slope(freq: np.ndarray, power: np.ndarray, band: tuple[float, float]) -> float:
    """β of P ∝ 1/f^β, a least-squares line in log–log over `band` (same unit as freq)."""
    inside = (freq >= band[0]) & (freq <= band[1]) & (power > 0)
    if inside.sum() < 3:
        raise ValueError(f"fewer than 3 frequencies in the band {band}")
    return float(-np.polyfit(np.log(freq[inside]), np.log(power[inside]), 1)[0])


def measure(image: np.ndarray, breast: np.ndarray) -> Realism:
    """The four statistics of one mammogram at the scan's 70 µm with its breast mask."""
    from mccscan.mcdetect import FIRST_DETECTOR_SETTINGS, find_candidates

    if image.shape != breast.shape:
        raise ValueError(f"image {image.shape} and breast mask {breast.shape} differ in shape")
    inner = inner_breast(breast)
    corners = roi_corners(inner)
    if not corners:
        raise ValueError(f"no {ROI_PX}×{ROI_PX} px square lies {INNER_MARGIN_MM} mm inside the breast")
    spectra = [radial_power(image[r:r + ROI_PX, c:c + ROI_PX].astype(np.float64)) for r, c in corners]
    freq = spectra[0][0]
    power = np.mean([p for _, p in spectra], axis=0)
    beta = spectral_slope(freq / PIXEL_SPACING_MM, power, SLOPE_BAND_CYCLES_PER_MM)
    band = (freq >= MC_BAND_CYCLES_PER_PX[0]) & (freq <= MC_BAND_CYCLES_PER_PX[1])
    weights = freq  # radial average → ring area ∝ f
    fraction = float((power[band] * weights[band]).sum() / (power * weights).sum())
    stage = FIRST_DETECTOR_SETTINGS  # the speck of the published figures, kept so that they stay comparable
    specks = len(find_candidates(image, inner, max_candidates=10**7, snr=stage["candidate_snr"],
                                 wide_sigma_px=stage["wide_sigma_px"]).snr)
    area_cm2 = inner.sum() * (PIXEL_SPACING_MM / 10) ** 2
    values = image[::2, ::2][inner[::2, ::2]]
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return Realism(beta, float(np.log10(fraction)), specks / area_cm2, float(p50), float(p95 - p5))
