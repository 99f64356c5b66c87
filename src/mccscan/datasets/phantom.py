"""Synthetic mammograms with exact ground truth: the embedded default data of mccscan.

Real mammograms cannot ship with the project, so this module draws INbreast-like ones
(70 µm pixels, 2560×3328 or 3328×4084, CC/MLO, left/right) from the standard models:
- breast outline on black, skin line, thickness falloff toward the edge, pectoral
  muscle on MLO;
- parenchyma from power-law noise (power spectrum ∝ 1/f^β) mixed with a smooth
  fatty/dense field, ducts converging to the nipple, vessels across the breast, Cooper's
  ligaments and fibrous strands; its texture statistics (β, MC-band energy, specks per
  cm², intensity histogram) are matched to digitised film (`benchmarks/realism.py`);
- microcalcifications 0.1–1 mm, punctate, amorphous, pleomorphic or fine linear, in
  clusters of 3–40 spread over up to 1 cm² (grouped, linear or segmental), with contrast
  down to the noise floor; plus what a detector must not call a cluster: isolated single
  and paired MCs, bright noise pixels, vessel crossings, and benign calcifications
  (coarse/popcorn over 1 mm, rim, vascular tracks, skin calcifications at the skin line);
- detector blur, signal-dependent quantum noise, 14-bit (DICOM) and 8-bit (PNG) output.
Same seed → same image and ground truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import fft, ndimage

from mccscan.errors import InputError

PIXEL_SPACING_MM = 0.07
SIZES = {"large": (4084, 3328), "small": (3328, 2560)}  # (rows, cols), INbreast's two formats
IMAGE_FORMATS = ("png", "dcm")  # what `Phantom.write` writes: 8-bit PNG, 14-bit DICOM
_COARSE = 8  # smooth fields are drawn at 1/8 resolution and upsampled


@dataclass
class Microcalcification:
    x: float  # column of the centre, px
    y: float  # row of the centre, px
    radius_px: float
    contrast: float  # peak added intensity before blur, on the [0, 1] scale
    cluster_id: int | None  # None for isolated distractors
    kind: str  # "cluster", "single" or "pair"


@dataclass
class Cluster:
    id: int
    x: float
    y: float
    radius_px: float  # largest semi-axis of the region the MCs were placed in
    outline: list[tuple[float, float]]  # polygon (x, y) around that region
    n_mcs: int


@dataclass
class Lookalike:
    x: float  # centre, px
    y: float
    radius_px: float
    kind: str  # one of LOOKALIKES: benign, never part of a cluster


@dataclass
class Phantom:
    image: np.ndarray  # float32 in [0, 1], 70 µm pixels, background exactly 0
    breast_mask: np.ndarray  # bool, True inside the breast
    mcs: list[Microcalcification]
    clusters: list[Cluster]
    view: str
    laterality: str
    seed: int
    pixel_spacing_mm: float = PIXEL_SPACING_MM
    lookalikes: list[Lookalike] = field(default_factory=list)

    def ground_truth(self) -> dict:
        """Every MC and cluster, JSON-ready; coordinates in pixels of this image."""
        rows, cols = self.image.shape
        return {
            "synthetic": True, "generator": "mccscan.datasets.phantom", "seed": self.seed,
            "view": self.view, "laterality": self.laterality, "rows": rows, "columns": cols,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "clusters": [asdict(c) for c in self.clusters],
            "microcalcifications": [asdict(m) for m in self.mcs],
            "lookalikes": [asdict(b) for b in self.lookalikes],
        }

    def to_uint8(self) -> np.ndarray:
        return np.round(self.image * 255).astype(np.uint8)

    def to_uint16(self) -> np.ndarray:
        """14-bit detector values."""
        return np.round(self.image * 16383).astype(np.uint16)

    def write(self, out_dir: str | Path, stem: str | None = None, formats=IMAGE_FORMATS) -> dict[str, Path]:
        """Write the image (8-bit PNG and/or 14-bit DICOM) and its ground truth JSON."""
        from mccscan.io import write_dicom

        formats = tuple(formats.split(",")) if isinstance(formats, str) else tuple(formats)  # "png" or ("png",)
        unknown = set(formats) - set(IMAGE_FORMATS)
        if unknown:
            raise ValueError(f"unknown phantom image format(s) {sorted(unknown)}; known: {', '.join(IMAGE_FORMATS)}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or f"phantom_{self.seed}_{self.laterality}{self.view}"
        paths = {}
        if "png" in formats:
            paths["png"] = out_dir / f"{stem}.png"
            Image.fromarray(self.to_uint8()).save(paths["png"])
        if "dcm" in formats:
            paths["dcm"] = out_dir / f"{stem}.dcm"
            write_dicom(paths["dcm"], self.to_uint16(), bits_stored=14, pixel_spacing_mm=self.pixel_spacing_mm,
                        laterality=self.laterality, view=self.view, patient_id=f"PHANTOM{self.seed}",
                        description="mccscan synthetic phantom (not patient data)")
        paths["json"] = out_dir / f"{stem}.json"
        paths["json"].write_text(json.dumps(self.ground_truth(), indent=1) + "\n")
        return paths


def power_law_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise with power spectrum ∝ 1/f^beta."""
    rows, cols = shape
    fy = fft.fftfreq(rows).astype(np.float32)[:, None]
    fx = fft.rfftfreq(cols).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    f2[0, 0] = 1.0
    amplitude = f2 ** np.float32(-beta / 4)  # |F| ∝ f^(-beta/2)
    amplitude[0, 0] = 0.0
    spectrum = rng.standard_normal((rows, cols // 2 + 1), dtype=np.float32) * amplitude
    spectrum = spectrum + 1j * (rng.standard_normal(spectrum.shape, dtype=np.float32) * amplitude)
    noise = fft.irfft2(spectrum, s=shape, workers=-1).astype(np.float32)
    noise /= noise.std() + 1e-12
    return noise


def _upsample(field_: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(field_.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float32)


def _smooth_curve(rng, start, direction, length_px, step_px, wiggle):
    """Points of a smoothly wandering curve (random walk on its heading)."""
    n = max(2, int(length_px / step_px))
    heading = np.arctan2(direction[1], direction[0]) + np.cumsum(rng.normal(0, wiggle, n))
    pts = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * step_px, 0)
    return pts + np.asarray(start, dtype=np.float64)


def _splat(canvas: np.ndarray, pts: np.ndarray, weight: float) -> None:
    """Add `weight` at each curve point (bilinear-free nearest splat, clipped to canvas)."""
    xi, yi = np.round(pts[:, 0]).astype(int), np.round(pts[:, 1]).astype(int)
    ok = (xi >= 0) & (xi < canvas.shape[1]) & (yi >= 0) & (yi < canvas.shape[0])
    np.add.at(canvas, (yi[ok], xi[ok]), weight)


def _local_window(shape: tuple[int, int], x: float, y: float, r: int):
    """The window of radius r around (x, y) clipped to the image: its slices and the
    offsets (gx row vector, gy column vector) of its pixels from (x, y); None if empty."""
    x0, x1 = max(0, int(x) - r), min(shape[1], int(x) + r + 2)
    y0, y1 = max(0, int(y) - r), min(shape[0], int(y) + r + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    gx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
    gy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
    return (slice(y0, y1), slice(x0, x1)), gx, gy


def _add_gaussian_blob(image: np.ndarray, x: float, y: float, sx: float, sy: float, theta: float, amp: float):
    """Add an anisotropic Gaussian (sigmas sx, sy px, orientation theta) in a local window."""
    window = _local_window(image.shape, x, y, int(np.ceil(3.5 * max(sx, sy))) + 1)
    if window is None:
        return
    region, gx, gy = window
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * gx + s * gy, -s * gx + c * gy
    image[region] += amp * np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))


MORPHOLOGIES = ("punctate", "amorphous", "pleomorphic", "linear")  # BI-RADS suspicious MC forms
LAYOUTS = ("grouped", "linear", "segmental")  # BI-RADS distributions within 1 cm²
LOOKALIKES = ("coarse", "rim", "vascular", "skin")  # benign calcifications no cluster is made of


def _add_mc(image, rng, x, y, diameter_px, contrast, morphology="pleomorphic", heading=0.0):
    """One MC of the given morphology: punctate is one round dot, amorphous a faint hazy one,
    pleomorphic 1–3 irregular blobs, linear an elongated streak along `heading` (radians)."""
    if morphology == "punctate":
        sigma = max(0.45, diameter_px / 2.6)
        _add_gaussian_blob(image, x, y, sigma, sigma * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi), contrast)
        return
    if morphology == "amorphous":
        sigma = max(0.8, diameter_px / 2.0)
        _add_gaussian_blob(image, x, y, sigma, sigma * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi), contrast)
        return
    if morphology == "linear":
        sigma = max(0.45, diameter_px / 4.0)
        _add_gaussian_blob(image, x, y, sigma * rng.uniform(2.0, 3.5), sigma, heading + rng.normal(0, 0.2), contrast)
        return
    for _ in range(rng.integers(1, 4)):
        sigma = max(0.45, diameter_px / 2.6 * rng.uniform(0.6, 1.0))
        aspect = rng.uniform(1.0, 2.2)
        dx, dy = rng.normal(0, diameter_px * 0.15, 2)
        _add_gaussian_blob(image, x + dx, y + dy, sigma * aspect ** 0.5, sigma / aspect ** 0.5,
                           rng.uniform(0, np.pi), contrast * rng.uniform(0.7, 1.0))


def _cluster_layout(rng, n: int, extent_px: float, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (k, 2) px of up to n MCs at least 5 px apart and the local heading of each,
    laid out as a grouped ellipse, a line, or a branching segment, within about `extent_px`
    of 0 (each axis is bounded by it; a branched one can reach √2 times). A short line holds
    fewer than n: k is what fits."""
    if layout == "grouped":
        aspect, phi = rng.uniform(0.5, 1.0), rng.uniform(0, np.pi)
        r1 = max(extent_px, np.sqrt(n * 60 / (np.pi * aspect)))
        u, v = rng.uniform(-1, 1, (2, 200 * n))
        inside = u * u + v * v <= 1
        u, v = u[inside] * r1, v[inside] * r1 * aspect
        proposals = np.stack([u * np.cos(phi) - v * np.sin(phi), u * np.sin(phi) + v * np.cos(phi)], 1)
        headings = np.full(len(proposals), phi)
    else:  # linear: one gently curved line; segmental: a trunk with 1–3 branches
        n_branch = 1 if layout == "linear" else int(rng.integers(2, 5))
        start = np.zeros(2)
        paths = []
        heading = rng.uniform(0, 2 * np.pi)
        for b in range(n_branch):
            origin = start if b == 0 else paths[0][rng.integers(len(paths[0]))]
            direction = heading + (0 if b == 0 else rng.choice([-1, 1]) * rng.uniform(0.3, 0.8))
            length = 2 * extent_px * (1 if b == 0 else rng.uniform(0.3, 0.6))
            curve = _smooth_curve(rng, origin, (np.cos(direction), np.sin(direction)), length, 1.0, 0.02)
            paths.append(curve)
        pts = np.concatenate(paths)
        pts -= pts.mean(0)
        pts *= min(1.0, extent_px / max(np.abs(pts).max(), 1e-6))
        steps = np.gradient(pts, axis=0)
        pick = rng.permutation(len(pts))
        proposals = pts[pick] + rng.normal(0, 2.0, (len(pts), 2))  # a little off the line
        headings = np.arctan2(steps[pick, 1], steps[pick, 0])
    chosen = []
    for k in range(len(proposals)):
        if len(chosen) == n:
            break
        if all(np.hypot(*(proposals[k] - proposals[j])) > 5 for j in chosen):
            chosen.append(k)
    return proposals[chosen], headings[chosen]


def _draw_cluster(image, rng, cx, cy, cid) -> tuple[list[Microcalcification], Cluster]:
    """Add a cluster of 3–40 MCs around (cx, cy) px: one morphology and one layout, spread
    over up to 1 cm², contrast from the noise floor up. The outline is the hull + 8 px."""
    from mccscan.clusters import hull_outline

    mm = 1 / PIXEL_SPACING_MM
    n = int(round(np.exp(rng.uniform(np.log(3), np.log(40)))))
    layout = LAYOUTS[rng.choice(3, p=[0.6, 0.2, 0.2])]
    morphology = MORPHOLOGIES[rng.integers(4)]
    offsets, headings = _cluster_layout(rng, n, rng.uniform(1.0, 5.0) * mm, layout)
    base_d = rng.uniform(0.15, 0.55) * mm * (0.6 if morphology == "linear" else 1.0)
    base_c = np.exp(rng.uniform(np.log(0.03), np.log(0.25))) * (0.6 if morphology == "amorphous" else 1.0)
    mcs = []
    for (dx, dy), heading in zip(offsets, headings):
        px, py = cx + dx, cy + dy
        d = float(np.clip(base_d * rng.uniform(0.6, 1.6), 0.1 * mm, 1.0 * mm))
        c = float(base_c * rng.uniform(0.6, 1.4))
        _add_mc(image, rng, px, py, d, c, morphology, heading)
        mcs.append(Microcalcification(float(px), float(py), d / 2, c, cid, "cluster"))
    xy = np.array([(m.x, m.y) for m in mcs])
    radius = float(np.hypot(*(xy - (cx, cy)).T).max())
    return mcs, Cluster(cid, float(cx), float(cy), radius, hull_outline(xy, 8.0), len(mcs))


def _draw_isolated_site(image, rng, x, y, kind: str) -> list[Microcalcification]:
    """A distractor at (x, y): one MC ("single") or two 8–60 px apart ("pair"), 0.15–0.7 mm,
    contrast 0.05–0.25: as bright as a cluster's, yet no cluster."""
    mm = 1 / PIXEL_SPACING_MM
    members = [(x, y)]
    if kind == "pair":
        a = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(8, 60)
        members.append((x + dist * np.cos(a), y + dist * np.sin(a)))
    mcs = []
    for px, py in members:
        d = float(rng.uniform(0.15, 0.7) * mm)
        c = float(np.exp(rng.uniform(np.log(0.05), np.log(0.25))))
        _add_mc(image, rng, px, py, d, c)
        mcs.append(Microcalcification(px, py, d / 2, c, None, kind))
    return mcs


def _add_ring(image, x, y, radius_px, width_px, amp, arc=(0.0, 2 * np.pi)):
    """A thin bright ring (or arc): an eggshell/rim calcification or a lucent-centred skin one."""
    window = _local_window(image.shape, x, y, int(np.ceil(radius_px + 4 * width_px)) + 1)
    if window is None:
        return
    region, gx, gy = window
    angle = np.mod(np.arctan2(gy, gx) - arc[0], 2 * np.pi)
    on_arc = angle <= (arc[1] - arc[0])
    image[region] += amp * on_arc * np.exp(-0.5 * ((np.hypot(gx, gy) - radius_px) / width_px) ** 2)


def _draw_lookalikes(image, rng, safe, skin_band, vessel_paths) -> list[Lookalike]:
    """Benign calcifications a detector must not call a cluster: coarse/popcorn (> 1 mm),
    rim (eggshell), vascular tracks (tram lines of specks along a vessel) and small
    lucent-centred skin calcifications at the skin line."""
    mm = 1 / PIXEL_SPACING_MM
    found: list[Lookalike] = []
    ys, xs = np.nonzero(safe[::8, ::8])
    for _ in range(rng.integers(0, 3) if len(xs) else 0):  # coarse / popcorn
        k = rng.integers(len(xs))
        x, y = xs[k] * 8.0, ys[k] * 8.0
        size = rng.uniform(1.2, 4.0) * mm
        for _ in range(rng.integers(1, 6)):
            dx, dy = rng.normal(0, size / 4, 2)
            sigma = rng.uniform(0.15, 0.3) * size
            _add_gaussian_blob(image, x + dx, y + dy, sigma, sigma * rng.uniform(0.6, 1), rng.uniform(0, np.pi),
                               rng.uniform(0.12, 0.35))
        found.append(Lookalike(x, y, size / 2, "coarse"))
    if len(xs) and rng.random() < 0.4:  # rim
        k = rng.integers(len(xs))
        x, y, radius = xs[k] * 8.0, ys[k] * 8.0, rng.uniform(1.0, 3.5) * mm
        start = rng.uniform(0, 2 * np.pi)
        _add_ring(image, x, y, radius, rng.uniform(1.0, 2.0), rng.uniform(0.06, 0.18),
                  (start, start + rng.uniform(np.pi, 2 * np.pi)))
        found.append(Lookalike(x, y, radius, "rim"))
    if vessel_paths and rng.random() < 0.5:  # vascular: specks on both walls of a vessel
        path = vessel_paths[rng.integers(len(vessel_paths))]
        rows, cols = safe.shape
        inside = safe[np.clip(path[:, 1].astype(int), 0, rows - 1), np.clip(path[:, 0].astype(int), 0, cols - 1)]
        starts = np.flatnonzero(inside)
        a = starts[rng.integers(len(starts))] if len(starts) else 0
        run = inside[a:a + int(rng.uniform(1.0, 4.0) * mm)]
        segment = path[a:a + (int(np.argmin(run)) if not run.all() else len(run))]  # up to where it leaves
        if len(segment) > 2:
            steps = np.gradient(segment, axis=0)
            normal = np.stack([-steps[:, 1], steps[:, 0]], 1) / (np.hypot(*steps.T)[:, None] + 1e-9)
            half_width = rng.uniform(0.4, 0.8) * mm
            amp = rng.uniform(0.05, 0.2)
            for i in range(0, len(segment), int(rng.integers(3, 9))):
                for side in (-1, 1):
                    if rng.random() < 0.7:
                        px, py = segment[i] + side * half_width * normal[i]
                        _add_gaussian_blob(image, px, py, rng.uniform(1.2, 2.5), rng.uniform(0.5, 0.9),
                                           np.arctan2(steps[i, 1], steps[i, 0]), amp * rng.uniform(0.6, 1.2))
            cx, cy = segment.mean(0)
            found.append(Lookalike(float(cx), float(cy), float(len(segment) / 2), "vascular"))
    ys, xs = np.nonzero(skin_band[::4, ::4])
    for _ in range(rng.integers(0, 5) if len(xs) else 0):  # skin: lucent-centred rings at the skin line
        k = rng.integers(len(xs))
        x, y = xs[k] * 4.0, ys[k] * 4.0
        radius = rng.uniform(0.25, 0.7) * mm
        _add_ring(image, x, y, radius, max(0.8, radius / 3), rng.uniform(0.05, 0.15))
        found.append(Lookalike(x, y, radius, "skin"))
    return found


def insert_clusters(image: np.ndarray, breast: np.ndarray, rng: np.random.Generator,
                    n_clusters: int) -> tuple[np.ndarray, list[Microcalcification], list[Cluster]]:
    """Put phantom MC clusters into a real mammogram (float [0, 1] at 70 µm) at known places.

    Clusters go where the breast extends at least 1 cm around them and 1.5 cm apart; MCs are
    drawn as in the phantom, blurred like its detector, and added to the tissue. Returns
    (new image, MCs, clusters); exact positive labels on real tissue.
    """
    spots = _spots_inside(breast, 10.0)
    canvas = np.zeros(image.shape, np.float32)
    mcs, clusters = [], []
    for cid in range(n_clusters):
        spot = _free_spot(rng, spots, [(c.x, c.y) for c in clusters], 15 / PIXEL_SPACING_MM)
        if spot is None:
            break
        cluster_mcs, cluster = _draw_cluster(canvas, rng, *spot, cid)
        mcs += cluster_mcs
        clusters.append(cluster)
    return _added(image, canvas), mcs, clusters


def insert_isolated(image: np.ndarray, breast: np.ndarray, rng: np.random.Generator, n_sites: int,
                    avoid: list[tuple[float, float]] = ()) -> tuple[np.ndarray, list[Microcalcification]]:
    """Put the phantom's isolated distractors into a real mammogram at known places: single
    MCs and pairs (3 in 4 single), as bright as cluster MCs, about 5 mm inside the breast and
    12 mm apart and from the `avoid` points (x, y), blurred like the phantom's detector. What a
    detector must not call a cluster, now among the tissue's own specks. Returns (new image, MCs)."""
    spots = _spots_inside(breast, 5.0)
    canvas = np.zeros(image.shape, np.float32)
    mcs, taken = [], list(avoid)
    for _ in range(n_sites):
        spot = _free_spot(rng, spots, taken, 12 / PIXEL_SPACING_MM)
        if spot is None:
            break
        mcs += _draw_isolated_site(canvas, rng, *spot, "single" if rng.random() < 0.75 else "pair")
        taken.append(spot)
    return _added(image, canvas), mcs


def _spots_inside(breast: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) of the 8 px cells about `margin_mm` inside the breast (eroded on the 8 px grid)."""
    inner = ndimage.binary_erosion(breast[::8, ::8], iterations=int(margin_mm / PIXEL_SPACING_MM / 8))
    ys, xs = np.nonzero(inner)
    return xs, ys


def _free_spot(rng, spots, taken: list[tuple[float, float]], apart_px: float) -> tuple[float, float] | None:
    """A random point of `spots` farther than apart_px from every taken one (100 tries), or None."""
    xs, ys = spots
    if len(xs) == 0:
        return None
    for _ in range(100):
        k = rng.integers(len(xs))
        x, y = xs[k] * 8 + rng.uniform(0, 8), ys[k] * 8 + rng.uniform(0, 8)
        if all(np.hypot(x - tx, y - ty) > apart_px for tx, ty in taken):
            return x, y
    return None


def _added(image: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """The tissue with the drawn MCs added, blurred like the phantom's detector."""
    return np.clip(image + ndimage.gaussian_filter(canvas, 0.6, truncate=3.0), 0, 1).astype(np.float32)


class _Breast:
    """Geometry of one breast (chest wall at column 0): normalised radius ρ and muscle."""

    def __init__(self, rng, shape, view):
        rows, cols = shape
        self.shape, self.view = shape, view
        if view == "CC":
            self.cy = rows * rng.uniform(0.45, 0.55)
            self.a, self.a_top = cols * rng.uniform(0.62, 0.85), None
            self.b, self.b_top = rows * rng.uniform(0.34, 0.42), None
        else:  # MLO: longer, reaching the top edge near the chest wall (axilla)
            self.cy = rows * rng.uniform(0.5, 0.6)
            self.a = cols * rng.uniform(0.55, 0.75)
            self.a_top = self.a * rng.uniform(0.55, 0.8)
            self.b = rows * rng.uniform(0.36, 0.42)
            self.b_top = self.cy * rng.uniform(1.05, 1.3)
            self.pect_x = cols * rng.uniform(0.22, 0.38)  # pectoral muscle: a curved triangle
            self.pect_y = rows * rng.uniform(0.35, 0.55)
            self.pect_gamma = rng.uniform(0.8, 1.25)
        k = np.arange(2, 7)
        self.harm_amp = rng.normal(0, 0.03, k.size) / k * 2
        self.harm_phase = rng.uniform(0, 2 * np.pi, k.size)

    def rho(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised distance from the chest-wall centre: < 1 inside the breast."""
        dy = y - self.cy
        a, b = np.float32(self.a), np.float32(self.b)
        if self.view == "MLO":
            t = np.clip(-dy / self.cy, 0, 1) ** 2
            a = a + (self.a_top - self.a) * t
            b = np.where(dy < 0, np.float32(self.b_top), b)
        u, v = x / a, dy / b
        theta = np.arctan2(v, u)
        wobble = 1 + sum(amp * np.cos(k * theta + ph)
                         for k, amp, ph in zip(range(2, 7), self.harm_amp, self.harm_phase))
        return (np.sqrt(u * u + v * v) / wobble).astype(np.float32)

    def muscle(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.view != "MLO":
            return np.zeros(np.broadcast(x, y).shape, bool)
        edge = self.pect_x * np.clip(1 - y / self.pect_y, 0, 1) ** self.pect_gamma
        return x < edge

    def nipple(self) -> tuple[float, float]:
        return float(self.a * 0.97), float(self.cy)


def make_phantom(seed: int = 0, size: str | tuple[int, int] = "large", view: str | None = None,
                 laterality: str | None = None, n_clusters: int | None = None) -> Phantom:
    """Draw one synthetic mammogram with its ground truth.

    `size` is "large" (3328×4084), "small" (2560×3328) or (rows, cols). View and
    laterality are drawn from the seed when not given; `n_clusters` defaults to 0–3.
    """
    rng = np.random.default_rng(seed)
    shape = SIZES[size] if isinstance(size, str) else tuple(int(s) for s in size)
    rows, cols = shape
    view = view or ("CC", "MLO")[rng.integers(2)]
    laterality = laterality or ("L", "R")[rng.integers(2)]
    if view not in ("CC", "MLO") or laterality not in ("L", "R"):
        raise InputError("view must be CC or MLO and laterality L or R")
    breast = _Breast(rng, shape, view)

    # --- smooth fields at coarse resolution: density, thickness, ducts ---------------
    crow, ccol = -(-rows // _COARSE), -(-cols // _COARSE)
    cy_ = (np.arange(crow, dtype=np.float32)[:, None] + 0.5) * _COARSE
    cx_ = (np.arange(ccol, dtype=np.float32)[None, :] + 0.5) * _COARSE
    rho_c = breast.rho(cx_, cy_)
    density_bias = rng.uniform(-1.2, 1.4)  # fatty (BI-RADS a) … dense (d)
    dense = power_law_noise((crow, ccol), 3.0, rng) * 1.3 + density_bias + 1.2 * (1 - 2.2 * rho_c ** 2)
    dense = 1 / (1 + np.exp(-1.8 * dense))
    dense *= np.clip((1 - rho_c) / 0.25, 0, 1)  # subcutaneous fat under the skin
    ducts = np.zeros((crow, ccol), np.float32)
    nx, ny = breast.nipple()
    for _ in range(rng.integers(25, 60)):
        angle = np.pi + rng.normal(0, 0.55)
        pts = _smooth_curve(rng, (nx / _COARSE, ny / _COARSE), (np.cos(angle), np.sin(angle)),
                            rng.uniform(0.3, 0.9) * breast.a / _COARSE, 0.5, 0.08)
        _splat(ducts, pts, rng.uniform(0.5, 1.0))
    ducts = ndimage.gaussian_filter(ducts, 0.7)
    smooth = 0.45 + 0.50 * dense + 0.05 * np.clip(ducts, 0, 1.5) * (0.5 + dense)
    smooth = _upsample(smooth, shape)
    dense_full = _upsample(dense, shape)

    # --- full-resolution geometry and texture -----------------------------------------
    x = np.arange(cols, dtype=np.float32)[None, :]
    y = np.arange(rows, dtype=np.float32)[:, None]
    rho = _upsample(rho_c, shape)  # ρ is smooth: bilinear from the coarse grid is exact enough
    mask = rho < 1
    beta = rng.uniform(2.1, 2.7)  # with the dense field: β ≈ 2.6–3.4, as measured on film
    texture = power_law_noise(shape, beta, rng)
    image = smooth + (0.022 + 0.045 * dense_full) * texture
    muscle = breast.muscle(x, y) & mask
    if muscle.any():  # pectoral muscle: bright, fibrous, with a soft edge
        weight = ndimage.uniform_filter(muscle.astype(np.float32)[::_COARSE, ::_COARSE], 5)
        weight = _upsample(weight, shape)
        image += weight * (0.56 + 0.025 * texture - image)

    # vessels: long thin bright curves; where two cross they form a bright spot
    vessels, vessel_paths = np.zeros(shape, np.float32), []
    for _ in range(rng.integers(3, 9)):
        start = (rng.uniform(0.05, 0.5) * breast.a, breast.cy + rng.uniform(-0.8, 0.8) * breast.b)
        angle = rng.uniform(-0.6, 0.6) + (np.pi if rng.random() < 0.3 else 0)
        pts = _smooth_curve(rng, start, (np.cos(angle), np.sin(angle)), rng.uniform(0.4, 1.2) * breast.a, 1.0, 0.03)
        _splat(vessels, pts, rng.uniform(0.6, 1.2))
        vessel_paths.append(pts)
    image += ndimage.gaussian_filter(vessels, rng.uniform(1.3, 2.0)) * rng.uniform(0.35, 0.6)

    # Cooper's ligaments and fine fibrous strands: thin arcs, densest near the skin and
    # in the glandular tissue, a source of the specks and crossings a detector must reject
    strands = np.zeros(shape, np.float32)
    for _ in range(rng.integers(60, 160)):
        sy_, sx_ = rng.uniform(0, rows), rng.uniform(0, cols) * 0.95
        if rho[int(sy_), int(sx_)] >= 0.97:
            continue
        angle = rng.uniform(0, 2 * np.pi)
        pts = _smooth_curve(rng, (sx_, sy_), (np.cos(angle), np.sin(angle)), rng.uniform(3, 25) / PIXEL_SPACING_MM,
                            1.0, rng.uniform(0.03, 0.1))
        _splat(strands, pts, rng.uniform(0.5, 1.0))
    strand_blur = rng.uniform(0.7, 1.2)
    image += ndimage.gaussian_filter(strands, strand_blur) * strand_blur * rng.uniform(0.06, 0.16) * (0.4 + dense_full)

    # --- microcalcifications: clusters and isolated distractors ----------------------
    mcs: list[Microcalcification] = []
    clusters: list[Cluster] = []
    n_clusters = rng.integers(0, 4) if n_clusters is None else n_clusters
    mm = 1 / PIXEL_SPACING_MM
    safe = (rho < 0.82) & ~muscle
    placed: list[tuple[float, float, float]] = []  # (x, y, keep-out radius)

    def free_spot(keep_out, where=safe):
        for _ in range(200):
            px, py = rng.uniform(0, cols), rng.uniform(0, rows)
            if where[int(py), int(px)] and all(np.hypot(px - qx, py - qy) > keep_out + r for qx, qy, r in placed):
                return px, py
        return None

    # a cluster spreads about 5 mm from its centre (a branched one up to 7): keep its centre 6 mm inside the skin
    inside_coarse = ndimage.distance_transform_edt(np.pad(rho_c < 1, 1))[1:-1, 1:-1] * _COARSE > 6 * mm
    cluster_safe = safe & _upsample(inside_coarse.astype(np.float32), shape).astype(bool)

    for cid in range(n_clusters):
        spot = free_spot(5 * mm + 15 * mm, cluster_safe)
        if spot is None:
            break
        cluster_mcs, cluster = _draw_cluster(image, rng, *spot, cid)
        mcs += cluster_mcs
        clusters.append(cluster)
        placed.append((spot[0], spot[1], cluster.radius_px))

    n_single, n_pair = rng.integers(3, 16), rng.integers(1, 6)
    for kind, count in (("single", n_single), ("pair", n_pair)):
        for _ in range(count):
            spot = free_spot(12 * mm)
            if spot is None:
                break
            mcs += _draw_isolated_site(image, rng, *spot, kind)
            placed.append((*spot, 0.0))

    skin_band = mask & (rho > 0.96)
    lookalikes = _draw_lookalikes(image, rng, safe, skin_band, vessel_paths)

    # bright noise: isolated hot pixels that blur into tiny dots
    n_hot = rng.integers(10, 40)
    hy, hx = rng.integers(0, rows, n_hot), rng.integers(0, cols, n_hot)
    image[hy, hx] += rng.uniform(0.03, 0.12, n_hot).astype(np.float32)

    # --- thickness falloff, skin line, acquisition -----------------------------------
    edge = np.clip((1 - rho) / 0.10, 0, 1)
    image *= 0.45 + 0.55 * np.sqrt(edge)
    image += 0.10 * np.exp(-(((1 - rho) * breast.a / (1.2 * mm)) ** 2))  # skin line
    image = ndimage.gaussian_filter(image, rng.uniform(0.8, 1.1), truncate=3.0)  # detector / film blur
    quantum = rng.uniform(0.004, 0.009)
    image += quantum * np.sqrt(np.clip(image, 0, None)) * rng.standard_normal(shape, dtype=np.float32)
    image = np.where(mask, np.clip(image, 0.02, None), 0).astype(np.float32)
    image /= max(float(image.max()), 1e-6)

    if laterality == "R":  # chest wall on the right edge, as the right breast is displayed
        image, mask = image[:, ::-1].copy(), mask[:, ::-1].copy()
        for m in mcs:
            m.x = cols - 1 - m.x
        for b in lookalikes:
            b.x = cols - 1 - b.x
        for c in clusters:
            c.x = cols - 1 - c.x
            c.outline = [(cols - 1 - px, py) for px, py in c.outline]
    return Phantom(image, mask, mcs, clusters, view, laterality, seed, lookalikes=lookalikes)


def write_inbreast(root: str | Path, seeds, *, size: str | tuple[int, int] = "small",
                   n_clusters: int | None = None) -> list[Path]:
    """Write one phantom per seed in INbreast's layout: AllDICOMs/, AllXML/, INbreast.csv.

    Consecutive seeds are paired into one patient (two views), so patient-level splits are
    exercised. Every MC (clustered or isolated) is a "Calcification" ROI and every cluster
    a "Cluster" outline, as INbreast's radiologists annotated them.
    """
    from mccscan.datasets.base import MC, ClusterRegion
    from mccscan.datasets.inbreast import write_csv, write_roi_xml
    from mccscan.io import write_dicom

    root = Path(root)
    (root / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (root / "AllXML").mkdir(exist_ok=True)
    rows, paths = [], []
    for i, seed in enumerate(seeds):
        patient = f"{0xfa000000 + i // 2:016x}"
        view = ("CC", "MLO")[i % 2]
        ph = make_phantom(int(seed), size=size, view=view, n_clusters=n_clusters)
        image_id = f"{90000000 + int(seed)}"
        path = root / "AllDICOMs" / f"{image_id}_{patient}_MG_{ph.laterality}_{view}_ANON.dcm"
        write_dicom(path, ph.to_uint16(), bits_stored=14, pixel_spacing_mm=ph.pixel_spacing_mm,
                    laterality=ph.laterality, view=view, patient_id=patient,
                    description="mccscan synthetic phantom (not patient data)")
        write_roi_xml(root / "AllXML" / f"{image_id}.xml", [MC(m.x, m.y, m.radius_px) for m in ph.mcs],
                      [ClusterRegion(outline=c.outline) for c in ph.clusters], ph.pixel_spacing_mm)
        rows.append({"laterality": ph.laterality, "view": view, "image_id": image_id,
                     "birads": "4" if ph.clusters else "1"})
        paths.append(path)
    write_csv(root / "INbreast.csv", rows)
    return paths
