"""The two-stage cluster detector: find every MC-like speck, score each with a small CNN,
then group the MCs by the clinical rule (≥ 3 within 1 cm², `mccscan.clusters`).

1. Candidates: the image is high-passed (a 3×3 mean minus a wide blur of σ `WIDE_SIGMA_PX`),
   divided by its local noise (the robust spread of the high-pass in each 4.5 mm block of
   breast), and every local maximum above `CANDIDATE_SNR` is a candidate speck; at most
   `max_candidates`, brightest first. Weights store the σ and SNR they were trained with,
   and their scans use those (`scan.detector_options`); weights from before that stored
   nothing and were all trained on `FIRST_DETECTOR_SETTINGS`.
2. Each candidate's 27×27 patch of that normalised image goes through `MCNet` → P(MC)
   (with a context tower, also the 27·K px square around it, pooled K×K).
3. Three or more MCs at P ≥ `mc_floor` on one coarse calcification (a compact bright
   object at least `coarse_mm` across, which the high-pass splits into specks) count as
   one; the MCs are grouped; a group with ≥ 3 MCs in some 1 cm² square is a
   cluster, scored by the 3rd-best MC of its best square centimetre, so a cluster at
   operating point t has ≥ 3 MCs at P ≥ t within 1 cm².

Isolated single and paired MCs, however bright, never make a cluster: the rule, not the
network, says what a cluster is. Everything runs on the 70 µm image; memory is a few
copies of it (float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from mccscan.clusters import MC, MIN_MCS, Cluster, find_clusters
from mccscan.models import MCNet

CANDIDATE_SNR = 3.0  # a speck this many noise units above its surroundings is worth a look
WIDE_SIGMA_PX = 3.0  # the background the high-pass removes: close, so faint specks in texture stand out
MC_FLOOR = 0.8  # candidates at P(MC) ≥ this are the MCs clusters are built from (0.5 let texture specks in)
COARSE_MM = 1.0  # a calcification this wide (at half its contrast) is coarse, benign: its specks are one MC
COARSE_CORE = 0.75  # … those of its specks joined to the best one above this share of its contrast
COARSE_RING_MM = (1.5, 2.1)  # the background of an MC's object: the median of this ring around it
FIRST_DETECTOR_SETTINGS = {"mc_floor": 0.5, "candidate_snr": 3.5, "wide_sigma_px": 6.0}  # of cards that name none


@dataclass
class Candidates:
    xy: np.ndarray  # (n, 2) float, (x, y) px
    snr: np.ndarray  # (n,) high-pass response in noise units
    patches: np.ndarray  # (n, 1 or 3, patch, patch) float32: the normalised high-pass around each (+ its context)


def _gaussian_blur(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, H, W), edges replicated. Used at quarter resolution
    only: a one-channel conv is slow in PyTorch's CPU backend, so full-size steps use pooling."""
    radius = max(1, int(round(3 * sigma_px)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel /= kernel.sum()
    x = F.pad(image, (radius, radius, 0, 0), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


NOISE_BLOCK_PX = 64  # the noise is measured per 4.5 mm block: it varies with density and any LUT


def normalised_highpass(image: np.ndarray, breast: np.ndarray, strip_rows: int = 1024, *,
                        wide_sigma_px: float = WIDE_SIGMA_PX) -> np.ndarray:
    """A 3×3 mean minus a wide (σ = `wide_sigma_px`) blur, divided by its local robust spread
    (1.4826 × the median |high-pass| of each 64 px block of breast, bilinear between
    blocks; never below a quarter of the whole breast's, so a smooth patch does not turn
    its faint noise into specks). Local, so a speck's SNR does not depend on how bright or
    dense the tissue around it is, nor on the contrast curve (gamma, film LUT) the image
    went through.
    The wide blur is taken at reduced resolution (the largest power-of-2 step that leaves
    σ ≥ 1.5 px there: a smooth background needs no more) and pooling does the rest;
    computed in strips of `strip_rows`, so the temporaries stay small."""
    if wide_sigma_px < 1.5:
        raise ValueError(f"wide_sigma_px must be at least 1.5, got {wide_sigma_px}")
    step = 2 ** int(np.log2(wide_sigma_px / 1.5))
    rows, cols = image.shape
    hp = np.empty(image.shape, np.float32)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
        wide_small = _gaussian_blur(F.avg_pool2d(x, step, ceil_mode=True), wide_sigma_px / step)
        for r0 in range(0, rows, strip_rows):
            r1 = min(rows, r0 + strip_rows)
            a, b = max(0, r0 - 1), min(rows, r1 + 1)  # one row of context for the 3×3 mean
            block = F.pad(x[..., a:b, :], (1, 1, 1 if r0 == 0 else 0, 1 if r1 == rows else 0), mode="replicate")
            fine = F.avg_pool2d(block, 3, 1)
            s0, s1 = max(0, r0 // step - 2), min(wide_small.shape[-2], -(-r1 // step) + 2)  # 2 rows of context
            wide = F.interpolate(wide_small[..., s0:s1, :], scale_factor=step, mode="bilinear", align_corners=False)
            hp[r0:r1] = (fine - wide[..., r0 - step * s0:r1 - step * s0, :cols])[0, 0].numpy()
    spread = local_spread(hp, breast)
    if spread is None:  # no breast, or a flat one (blank, saturated): no speck stands out
        hp[...] = 0
        return hp
    with torch.inference_mode():
        coarse = torch.from_numpy(spread)[None, None]
        for r0 in range(0, rows, strip_rows):
            r1 = min(rows, r0 + strip_rows)
            hp[r0:r1] /= _upsampled_rows(coarse, NOISE_BLOCK_PX, r0, r1, cols)
    return hp


def local_spread(hp: np.ndarray, breast: np.ndarray, block_px: int = NOISE_BLOCK_PX) -> np.ndarray | None:
    """1.4826 × median |hp| per block_px block of breast (every 4th pixel sampled), as a
    (blocks_y, blocks_x) float32 grid; blocks with little breast take the whole breast's
    value. None when the breast is empty or flat."""
    sub, inside = np.abs(hp[::4, ::4]), breast[::4, ::4]
    if not inside.any():
        return None
    overall = 1.4826 * float(np.median(sub[inside]))
    if overall < 1e-6:
        return None
    k = block_px // 4
    by, bx = -(-sub.shape[0] // k), -(-sub.shape[1] // k)
    values = np.full((by * k, bx * k), np.nan, np.float32)
    values[:sub.shape[0], :sub.shape[1]] = np.where(inside, sub, np.nan)
    blocks = values.reshape(by, k, bx, k).transpose(0, 2, 1, 3).reshape(by, bx, k * k)
    enough = np.isfinite(blocks).sum(-1) >= k * k // 4
    spread = np.full((by, bx), overall, np.float32)
    if enough.any():
        spread[enough] = 1.4826 * np.nanmedian(blocks[enough], axis=-1)
    return np.maximum(spread, np.float32(overall / 4))  # a smooth patch is no reason to call noise a speck


def _upsampled_rows(coarse: torch.Tensor, block_px: int, r0: int, r1: int, cols: int) -> np.ndarray:
    """Rows r0:r1 of the block grid bilinearly upsampled (block centres at block_px/2 + k·block_px)."""
    ys = (torch.arange(r0, r1, dtype=torch.float32) + 0.5) / block_px - 0.5
    xs = (torch.arange(cols, dtype=torch.float32) + 0.5) / block_px - 0.5
    by, bx = coarse.shape[-2:]
    gy = (ys / max(by - 1, 1)) * 2 - 1 if by > 1 else torch.zeros_like(ys)
    gx = (xs / max(bx - 1, 1)) * 2 - 1 if bx > 1 else torch.zeros_like(xs)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None]
    return F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0].numpy()


def _local_maxima(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, radius: int = 2) -> np.ndarray:
    """Which of the given pixels are the maximum of their (2r+1)² neighbourhood (ties kept)."""
    padded = np.pad(values, radius, constant_values=-np.inf)
    centre = values[ys, xs]
    keep = np.ones(len(ys), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy or dx:
                keep &= padded[ys + radius + dy, xs + radius + dx] <= centre
    return keep


def find_candidates(image: np.ndarray, breast: np.ndarray, *, patch_px: int = 27, snr: float = CANDIDATE_SNR,
                    wide_sigma_px: float = WIDE_SIGMA_PX, context_pool: int = 0,
                    max_candidates: int = 8000) -> Candidates:
    """Local maxima (5×5) of the normalised high-pass above `snr` inside the breast,
    brightest first, each with the input `MCNet` scores (`context_pool` as its config's).
    Only the breast's bounding box (plus a margin) is filtered."""
    channels = 3 if context_pool else 1
    rows, cols = np.flatnonzero(breast.any(1)), np.flatnonzero(breast.any(0))
    if not len(rows):
        return Candidates(np.zeros((0, 2)), np.zeros(0, np.float32),
                          np.zeros((0, channels, patch_px, patch_px), np.float32))
    margin = 4 * int(np.ceil(wide_sigma_px)) + patch_px * max(1, context_pool)  # the patch and its context lie inside
    r0, r1 = max(0, rows[0] - margin), min(image.shape[0], rows[-1] + 1 + margin)
    c0, c1 = max(0, cols[0] - margin), min(image.shape[1], cols[-1] + 1 + margin)
    crop = breast[r0:r1, c0:c1]
    hp = normalised_highpass(image[r0:r1, c0:c1], crop, wide_sigma_px=wide_sigma_px)
    ys, xs = np.nonzero((hp > snr) & crop)
    peak = _local_maxima(hp, ys, xs)
    ys, xs = ys[peak], xs[peak]
    order = np.argsort(-hp[ys, xs], kind="stable")[:max_candidates]
    ys, xs = ys[order], xs[order]
    patches = [_patches_around(hp, ys, xs, patch_px, 1)]
    if context_pool:
        patches += [_patches_around(m, ys, xs, patch_px, context_pool) for m in _pooled(hp, context_pool)]
    patches = np.stack(patches, 1)  # (n, channels, patch, patch)
    return Candidates(np.stack([xs + c0, ys + r0], 1).astype(np.float64), hp[ys, xs].astype(np.float32), patches)


def _pooled(hp: np.ndarray, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the max of each size_px × size_px neighbourhood (same shape as hp): the
    context tower's view, where a faint speck still shows in the max and texture in the mean."""
    with torch.inference_mode():
        x = torch.from_numpy(hp)[None, None]
        mean = F.avg_pool2d(x, size_px, 1, size_px // 2, count_include_pad=False)
        top = F.max_pool2d(x, size_px, 1, size_px // 2)
    return mean[0, 0].numpy(), top[0, 0].numpy()


def _patches_around(values: np.ndarray, ys: np.ndarray, xs: np.ndarray, patch_px: int, step_px: int) -> np.ndarray:
    """(n, patch_px, patch_px) float32: values every step_px px on a grid centred on each (y, x),
    zero outside the image (indexed in place: no padded copy of a whole mammogram)."""
    offsets = step_px * (np.arange(patch_px) - patch_px // 2)
    rows, cols = ys[:, None] + offsets, xs[:, None] + offsets  # (n, patch_px) each
    out = values[np.clip(rows, 0, values.shape[0] - 1)[:, :, None], np.clip(cols, 0, values.shape[1] - 1)[:, None, :]]
    inside = ((rows >= 0) & (rows < values.shape[0]))[:, :, None] & ((cols >= 0) & (cols < values.shape[1]))[:, None, :]
    out[~inside] = 0
    return out.astype(np.float32, copy=False)


def score_candidates(model: MCNet, patches: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """P(MC) of each candidate patch (batches of 256 keep the conv maps in cache: 2× faster
    than 1024 on 2 cores)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(patches), batch_size):
            out.append(torch.sigmoid(model(torch.from_numpy(patches[i:i + batch_size]))).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _joined(window: np.ndarray, peak_yx: tuple[int, int], background: float, level: float) -> np.ndarray:
    """The connected region around `peak_yx` brighter than `level` of its contrast over `background`."""
    peak = float(window[peak_yx])
    labels, _ = ndimage.label(window > background + level * (peak - background))
    return labels == labels[peak_yx]


def one_per_coarse_object(image: np.ndarray, xy: np.ndarray, scores: np.ndarray, *, pixel_spacing_mm: float = 0.07,
                          coarse_mm: float = COARSE_MM) -> np.ndarray:
    """Which points (x, y) to keep so that a coarse calcification is one MC, not a cluster.

    A coarse calcification (over 1 mm: dystrophic, an oil cyst's) is benign, but the
    high-pass splits its bright, mottled inside into specks the network scores as MCs.
    Best score first, a point's object is the region brighter than half its contrast over
    the median of the ring `COARSE_RING_MM` around it. When that is ≥ `coarse_mm` in
    equivalent diameter and does not reach the ring (a vessel, a ligament or a larger
    popcorn calcification decides nothing), the points joined to it above `COARSE_CORE` of
    its contrast, if ≥ `MIN_MCS` of them, count as one: their best. Blurred neighbours of
    a real cluster rarely join that high, and a large MC stays one MC. Points within the
    ring's radius of the image edge are left as they are."""
    xy = np.round(np.asarray(xy, np.float64).reshape(-1, 2)).astype(int)
    scores = np.asarray(scores, np.float64)
    r_in, r_out = (int(round(r / pixel_spacing_mm)) for r in COARSE_RING_MM)
    yy, xx = np.mgrid[-r_out:r_out + 1, -r_out:r_out + 1]
    ring = (np.hypot(yy, xx) >= r_in) & (np.hypot(yy, xx) <= r_out)
    min_area_px = np.pi * (coarse_mm / pixel_spacing_mm / 2) ** 2
    keep = np.ones(len(xy), bool)
    for k in np.argsort(-scores, kind="stable"):
        x, y = xy[k]
        if not keep[k] or not (r_out <= y < image.shape[0] - r_out and r_out <= x < image.shape[1] - r_out):
            continue
        window = image[y - r_out:y + r_out + 1, x - r_out:x + r_out + 1]
        background = float(np.median(window[ring]))
        py, px = np.unravel_index(np.argmax(window[r_out - 1:r_out + 2, r_out - 1:r_out + 2]), (3, 3))
        peak_yx = (r_out - 1 + int(py), r_out - 1 + int(px))
        region = _joined(window, peak_yx, background, 0.5)
        if region.sum() < min_area_px or (region & ring).any():
            continue
        dx, dy = (xy - (x, y)).T
        same = keep & (np.abs(dx) <= r_out) & (np.abs(dy) <= r_out)
        same[same] = _joined(window, peak_yx, background, COARSE_CORE)[dy[same] + r_out, dx[same] + r_out]
        if same.sum() >= MIN_MCS:
            members = np.flatnonzero(same)
            keep[members] = False
            keep[members[np.argmax(scores[members])]] = True
    return keep


@dataclass
class Detection:
    mcs: list[MC]  # every MC at P ≥ the floor
    clusters: list[Cluster]
    candidates: int


def detect(model: MCNet, image: np.ndarray, breast: np.ndarray, *, mc_floor: float = MC_FLOOR,
           candidate_snr: float = CANDIDATE_SNR, wide_sigma_px: float = WIDE_SIGMA_PX,
           coarse_mm: float = COARSE_MM, pixel_spacing_mm: float = 0.07) -> Detection:
    """MCs and clusters of a 70 µm image (`coarse_mm` 0: every speck of a coarse calcification counts)."""
    cands = find_candidates(image, breast, patch_px=model.config.patch_px, snr=candidate_snr,
                            wide_sigma_px=wide_sigma_px, context_pool=model.config.context_pool)
    p = score_candidates(model, cands.patches)
    keep = p >= mc_floor
    if coarse_mm:
        keep[keep] = one_per_coarse_object(image, cands.xy[keep], p[keep], pixel_spacing_mm=pixel_spacing_mm,
                                           coarse_mm=coarse_mm)
    mcs = [MC(float(x), float(y), round(float(s), 4)) for (x, y), s in zip(cands.xy[keep], p[keep])]
    return Detection(mcs, find_clusters(mcs, pixel_spacing_mm=pixel_spacing_mm), len(p))
