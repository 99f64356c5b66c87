"""Inference: the model over a batch of patches (probabilities, F2) and over a whole
image (the dense map of every tile-sized window at a fixed stride)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mccscan.models import MCCNet


def patch_batches(patches_u8: np.ndarray, batch_size: int = 64):
    """Float batches (B, 1, H, W) of uint8 patches, normalised by /255 as in the paper."""
    for i in range(0, len(patches_u8), batch_size):
        yield torch.from_numpy(np.asarray(patches_u8[i:i + batch_size])).float().div_(255)[:, None]


def predict_patches(model: nn.Module, patches_u8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities of uint8 patches (N, H, W)."""
    model.eval()
    with torch.inference_mode():
        out = [torch.sigmoid(model(x)).numpy() for x in patch_batches(patches_u8, batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def predict_f2(model: MCCNet, patches_u8: np.ndarray) -> np.ndarray:
    """F2 (the global-max features) of each patch, (N, C)."""
    model.eval()
    with torch.inference_mode():
        out = [model.features(x).f2.numpy() for x in patch_batches(patches_u8)]
    return np.concatenate(out) if out else np.zeros((0, model.dense.in_features), np.float32)


def dense_probability_map(model: MCCNet, image: np.ndarray, *, stride_px: int = 16, block_px: int = 384,
                          mask: np.ndarray | None = None, logits: bool = False) -> np.ndarray:
    """P(MCC) of the tile-sized window at every `stride_px` step, shape
    ((H - tile) // stride + 1, (W - tile) // stride + 1); cell (i, j) is the window whose
    top-left corner is (j·stride, i·stride) px. NaN where `mask` (breast) misses the window centre.

    Exact: each value equals the model on that 144×144 patch. The conv maps are computed in
    blocks of about `block_px` (bounded memory); each window's global max is the max of the
    (window/stride)² stride-sized cells it covers, so pooling costs one pass over the map.
    With `logits`, the model's logits instead: they rank windows that float32 sigmoid rounds to 1.
    """
    if not model.fully_convolutional or model.config.f2_pool != "max":
        raise ValueError("a dense map needs a fully convolutional model with the global-max F2")
    tile = model.config.patch_size_px
    window = tile - model.config.conv_shrink_px
    if window % stride_px:
        raise ValueError(f"stride_px must divide the {window}-px window")
    cells = window // stride_px
    rows, cols = image.shape
    out_shape = ((rows - tile) // stride_px + 1, (cols - tile) // stride_px + 1)
    if min(out_shape) < 1:
        return np.full((max(out_shape[0], 0), max(out_shape[1], 0)), np.nan, np.float32)
    out = np.full(out_shape, np.nan, np.float32)
    step = max(1, block_px // stride_px)  # output cells per block side
    centre = tile // 2
    model.eval()
    with torch.inference_mode():
        for i0 in range(0, out_shape[0], step):
            for j0 in range(0, out_shape[1], step):
                i1, j1 = min(i0 + step, out_shape[0]), min(j0 + step, out_shape[1])
                if mask is not None and not mask[i0 * stride_px + centre:(i1 - 1) * stride_px + centre + 1,
                                                 j0 * stride_px + centre:(j1 - 1) * stride_px + centre + 1].any():
                    continue
                block = image[i0 * stride_px:(i1 - 1) * stride_px + tile, j0 * stride_px:(j1 - 1) * stride_px + tile]
                fmap = model.conv_features(torch.from_numpy(np.ascontiguousarray(block, np.float32))[None, None])[-1]
                cell_max = F.max_pool2d(fmap, stride_px, stride_px, ceil_mode=False)
                f2 = F.max_pool2d(cell_max, cells, 1)[0]  # (C, i1-i0, j1-j0)
                logit = model.head(f2.permute(1, 2, 0).reshape(-1, f2.shape[0]))
                scores = logit if logits else torch.sigmoid(logit)
                out[i0:i1, j0:j1] = scores.reshape(i1 - i0, j1 - j0).numpy()
    if mask is not None:
        centres = mask[centre:centre + out_shape[0] * stride_px:stride_px,
                       centre:centre + out_shape[1] * stride_px:stride_px]
        out[~centres] = np.nan
    return out
