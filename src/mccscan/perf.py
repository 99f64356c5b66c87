"""Speed: the machine's peak, so speeds can be printed as a fraction of what the hardware
can do, and the inference timings of the paper's Table 3."""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch import nn

from mccscan.models import MCCNet
from mccscan.predict import predict_patches
from mccscan.scan import DEFAULT_MIN_BREAST_FRACTION, score_tiles
from mccscan.tiling import PATCH_SIZE_PX, TileGrid, breast_mask


@functools.lru_cache(maxsize=None)
def peak_flops(repeats: int = 5) -> float:
    """Measured float32 peak (FLOP/s) with the current torch thread count.

    A wide 3×3 convolution is the best-tuned kernel of the CPU backend (oneDNN JIT) and
    runs at the FMA units' limit, where MKL's sgemm may not (on AMD CPUs it falls back to
    narrower vectors); the model's own convolutions use the same backend.
    """
    conv = torch.nn.Conv2d(96, 96, 3, bias=False)
    x = torch.randn(4, 96, 64, 64)
    with torch.inference_mode():
        conv(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - start)
    return 2 * 4 * 96 * 96 * 9 * 62 * 62 / best


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def inference_times(model: nn.Module, patches_u8: np.ndarray, mammogram: np.ndarray, *, repeats: int = 3,
                    min_breast_fraction: float = DEFAULT_MIN_BREAST_FRACTION) -> dict:
    """Seconds per patch (batches of 64) and per mammogram: the breast mask, then every
    breast tile of the grid scored as the app does (one convolutional pass per tile row
    for MCCNet, batches of tiles otherwise). Best of `repeats`."""
    sample = np.asarray(patches_u8[:256])
    per_patch = _best_of(lambda: predict_patches(model, sample), repeats) / len(sample)
    grid = TileGrid(mammogram.shape, PATCH_SIZE_PX)

    def scan_once() -> np.ndarray:
        scanned = grid.coverage(breast_mask(mammogram)) >= min_breast_fraction
        if isinstance(model, MCCNet):
            score_tiles(model, mammogram, scanned, tile_size_px=PATCH_SIZE_PX)
        else:
            predict_patches(model, np.round(grid.tiles(mammogram)[scanned] * 255).astype(np.uint8))
        return scanned

    per_image = _best_of(scan_once, repeats)
    return {"s_per_patch": per_patch, "s_per_mammogram": per_image, "mammogram_tiles": int(scan_once().sum()),
            "mammogram_px": list(mammogram.shape)}
