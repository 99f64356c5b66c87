"""Machine peak, so speeds can be printed as a fraction of what the hardware can do."""

from __future__ import annotations

import functools
import time

import torch


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
