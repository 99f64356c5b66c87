"""Whole-mammogram scan: background removal, tiling, tile scores, counts, JSON/CSV.

Tiles of 144×144 px are laid in raster order (top to bottom, left to right, as the
paper's application scans). A tile whose breast coverage is below `min_breast_fraction`
is background; every other tile gets a probability.

The default engine is fully convolutional: the conv layers run once over each row of
tiles (in chunks of at most `chunk_tiles` tiles, so the working set stays in cache and
memory is bounded whatever the image size), and each tile's F2 is the max of the last
conv map over its own 128×128 window. With valid convolutions this is exactly the
per-patch computation; `engine="patch"` and `engine="batched"` run the patches
through the model one at a time or in batches, for comparison.
"""

from __future__ import annotations

import csv
import io as _io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from mccscan.errors import InputError
from mccscan.io import (DEFAULT_MAX_PIXELS, SCAN_PIXEL_SPACING_MM, MammogramError, MammogramInfo, ScanImage,
                        load_for_scan, probe_mammogram, setting_fix)
from mccscan.clusters import Cluster
from mccscan.mcdetect import COARSE_MM, FIRST_DETECTOR_SETTINGS, detect
from mccscan.models import MCCNet, MCNet
from mccscan.tiling import PATCH_SIZE_PX, TileGrid, breast_mask
from mccscan.weights import LoadedModel

DEFAULT_THRESHOLD = 0.5  # the paper's sigmoid; the cluster detector's weights carry their own
TILE_CLUSTER_FLOOR = 0.1  # the paper's net: tiles at P ≥ this group into candidate clusters
DEFAULT_MIN_BREAST_FRACTION = 0.3
ENGINES = ("convolutional", "batched", "patch")


@dataclass
class Tile:
    row: int
    col: int
    x: int  # left edge, px at scan resolution
    y: int  # top edge, px at scan resolution
    probability: float | None  # None for background tiles
    label: str  # "mcc", "normal" or "background"
    breast_fraction: float
    f2: list[float] | None = None  # the 16 global-max features of the tile
    peak: tuple[int, int] | None = None  # (x, y) of the strongest contributing response


@dataclass
class ScanResult:
    image: str
    pixel_spacing_mm: float  # of the scanned image (the scan resolution)
    source_pixel_spacing_mm: float  # of the file as read (or as given / assumed)
    spacing_assumed: bool
    scan_shape: tuple[int, int]  # rows, cols after resampling to the scan resolution
    tile_size_px: int
    threshold: float
    min_breast_fraction: float
    counts: dict[str, int]
    tiles: list[Tile]
    model: dict
    engine: str
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    detector: str = "paper"  # "mc": the two-stage cluster detector; "paper": the paper's net on tiles
    clusters: list[Cluster] = field(default_factory=list)  # every candidate cluster, highest score first
    source_shape: tuple[int, int] | None = None  # rows, cols of the file as stored (None: not from a file)
    laterality: str = ""  # from the DICOM header: "L", "R" or "" when unknown
    view: str = ""  # from the DICOM header: "CC", "MLO", … or ""

    def relabel(self, threshold: float) -> "ScanResult":
        """Same scores with another threshold (no rescan)."""
        tiles = [Tile(**{**asdict(t), "label": _label(t.probability, threshold)}) for t in self.tiles]
        return ScanResult(**{**self.__dict__, "tiles": tiles, "threshold": threshold,
                             "counts": _counts(tiles)})

    @property
    def findings(self) -> list[Cluster]:
        """The clusters at or above the threshold: what the scan reports."""
        return [c for c in self.clusters if c.score >= self.threshold]

    def probability_grid(self) -> np.ndarray:
        """Tile probabilities as (n_rows, n_cols); NaN for background."""
        n_rows = max(t.row for t in self.tiles) + 1
        n_cols = max(t.col for t in self.tiles) + 1
        grid = np.full((n_rows, n_cols), np.nan, np.float32)
        for t in self.tiles:
            if t.probability is not None:
                grid[t.row, t.col] = t.probability
        return grid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScanResult":
        """Inverse of `to_dict` (e.g. a stored result.json)."""
        tiles = [Tile(**{**t, "peak": tuple(t["peak"]) if t.get("peak") else None}) for t in data["tiles"]]
        clusters = [Cluster.from_dict(c) for c in data.get("clusters", [])]
        source_shape = tuple(data["source_shape"]) if data.get("source_shape") else None
        return cls(**{**data, "tiles": tiles, "clusters": clusters, "scan_shape": tuple(data["scan_shape"]),
                      "source_shape": source_shape})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        buf = _io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "row", "col", "x", "y", "probability", "label", "breast_fraction"])
        for t in self.tiles:
            p = "" if t.probability is None else f"{t.probability:.6f}"
            writer.writerow([self.image, t.row, t.col, t.x, t.y, p, t.label, f"{t.breast_fraction:.3f}"])
        return buf.getvalue()

    def clusters_csv(self) -> str:
        """One line per candidate cluster; `reported` says whether it is at or above the threshold."""
        buf = _io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["image", "cluster", "x", "y", "score", "n_mcs", "reported", "tiles"])
        for c in self.clusters:
            writer.writerow([self.image, c.id, f"{c.x:.1f}", f"{c.y:.1f}", f"{c.score:.4f}", c.n_mcs,
                             int(c.score >= self.threshold), " ".join(f"{r}:{k}" for r, k in c.tiles)])
        return buf.getvalue()


def _label(probability: float | None, threshold: float) -> str:
    if probability is None:
        return "background"
    return "mcc" if probability >= threshold else "normal"


def _counts(tiles: list[Tile]) -> dict[str, int]:
    counts = {"mcc": 0, "normal": 0, "background": 0}
    for t in tiles:
        counts[t.label] += 1
    return counts


@dataclass
class TileScores:
    """Raw per-tile outputs of an engine, indexed like the scanned tiles."""

    probabilities: np.ndarray  # (n,)
    f2: np.ndarray  # (n, C)
    peaks: np.ndarray  # (n, 2) as (x, y) offsets inside the tile


def _strongest_peak(model: MCCNet, f2: torch.Tensor, argmax_flat: torch.Tensor, window: int) -> np.ndarray:
    """Offset (x, y) in the tile of the max of the channel contributing most to the logit."""
    contribution = f2 * model.dense.weight[0]
    channel = contribution.argmax(dim=1)
    flat = argmax_flat.gather(1, channel[:, None])[:, 0]
    # a conv-map position (i, j) sees input pixels i..i+k-1; mark the centre of that field
    half = model.config.conv_shrink_px // 2
    return np.stack([(flat % window).numpy() + half, (flat // window).numpy() + half], 1)


def _scores_from_maps(model: MCCNet, maps: torch.Tensor) -> TileScores:
    """maps: (n, C, w, w), the last conv map of each tile."""
    n, c, w, _ = maps.shape
    argmax = maps.reshape(n, c, w * w).argmax(dim=2)
    f2 = model.f2(maps)
    prob = torch.sigmoid(model.head(f2))
    return TileScores(prob.numpy(), f2.numpy(), _strongest_peak(model, f2, argmax, w))


def _concat(parts: list[TileScores], model: MCCNet) -> TileScores:
    if not parts:
        c = model.dense.in_features
        return TileScores(np.zeros(0, np.float32), np.zeros((0, c), np.float32), np.zeros((0, 2), np.int64))
    return TileScores(*(np.concatenate(x) for x in zip(*(
        (p.probabilities, p.f2, p.peaks) for p in parts))))


def _row_convolutional(model: MCCNet, strip: np.ndarray, cols: np.ndarray, tile: int,
                       chunk_tiles: int) -> TileScores:
    """One conv pass per run of consecutive scanned tiles of a row, ≤ chunk_tiles long."""
    window = tile - model.config.conv_shrink_px
    parts = []
    runs = np.split(cols, np.flatnonzero(np.diff(cols) != 1) + 1) if len(cols) else []
    for run in runs:
        for start in range(0, len(run), chunk_tiles):
            chunk = run[start:start + chunk_tiles]
            part = strip[:, chunk[0] * tile:(chunk[-1] + 1) * tile]
            fmap = model.conv_features(torch.from_numpy(np.ascontiguousarray(part))[None, None])[-1][0]
            maps = torch.stack([fmap[:, :window, j * tile:j * tile + window] for j in range(len(chunk))])
            parts.append(_scores_from_maps(model, maps))
    return _concat(parts, model)


def _row_batched(model: MCCNet, strip: np.ndarray, cols: np.ndarray, tile: int, batch_size: int) -> TileScores:
    patches = np.stack([strip[:, c * tile:(c + 1) * tile] for c in cols]) if len(cols) else np.zeros((0, tile, tile))
    parts = []
    for i in range(0, len(patches), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[i:i + batch_size], dtype=np.float32))[:, None]
        parts.append(_scores_from_maps(model, model.conv_features(x)[-1]))
    return _concat(parts, model)


def iter_row_scores(model: MCCNet, image: np.ndarray, scanned: np.ndarray, *, tile_size_px: int = 144,
                    engine: str = "convolutional", batch_size: int = 8,
                    chunk_tiles: int = 4) -> Iterator[tuple[int, TileScores]]:
    """For each tile row in raster order: (row, scores of its tiles where `scanned` is True).

    `image` is float32 at the scan resolution; `scanned` is (n_rows, n_cols) bool.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}")
    tile = tile_size_px
    padded = TileGrid(image.shape, tile).pad(image.astype(np.float32, copy=False))
    convolutional = engine == "convolutional" and model.fully_convolutional
    model.eval()
    for r in range(scanned.shape[0]):
        cols = np.flatnonzero(scanned[r])
        strip = padded[r * tile:(r + 1) * tile]
        with torch.inference_mode():
            if convolutional:
                yield r, _row_convolutional(model, strip, cols, tile, chunk_tiles)
            else:
                yield r, _row_batched(model, strip, cols, tile, 1 if engine == "patch" else batch_size)


def score_tiles(model: MCCNet, image: np.ndarray, scanned: np.ndarray, **kwargs) -> TileScores:
    """Scores of all scanned tiles in raster order (see `iter_row_scores`)."""
    return _concat([scores for _, scores in iter_row_scores(model, image, scanned, **kwargs)], model)


def detector_options(loaded: LoadedModel) -> dict:
    """The cluster detector's settings stored with its weights (MC floor, candidate stage):
    its operating point's, else its training config's; a card that names none was trained
    on the first ones. The coarse-calcification rule is no training setting: every card
    gets `COARSE_MM` unless its operating point names another (0: off). The tile nets
    have none: {}."""
    if not isinstance(loaded.model, MCNet):
        return {}
    named = {**loaded.card.get("train_config", {}), **loaded.card.get("operating_point", {})}
    return {**{k: named.get(k, first) for k, first in FIRST_DETECTOR_SETTINGS.items()},
            "coarse_mm": named.get("coarse_mm", COARSE_MM)}


def default_threshold(loaded: LoadedModel) -> float:
    """The operating point stored with the weights (chosen on validation data), or 0.5."""
    return float(loaded.card.get("operating_point", {}).get("cluster_threshold", DEFAULT_THRESHOLD))


def scan_image(image: np.ndarray, loaded: LoadedModel, *, name: str = "image", threshold: float | None = None,
               min_breast_fraction: float = DEFAULT_MIN_BREAST_FRACTION, engine: str = "convolutional",
               source_pixel_spacing_mm: float = SCAN_PIXEL_SPACING_MM, spacing_assumed: bool = False,
               on_row: Callable[[list[Tile]], None] | None = None) -> ScanResult:
    """Scan an image already at the scan resolution (70 µm) and return the full result.

    The weights decide the detector: an `MCNet` is the two-stage cluster detector (MCs,
    then clusters by the clinical rule; each tile scores as the best cluster touching it);
    an `MCCNet` is the paper's net on tiles (clusters are groups of touching tiles).
    `on_row` receives each tile row (a list of `Tile`, background included) once it is
    scored, top to bottom: what a progress bar or a live view draws.
    """
    if not 0 <= min_breast_fraction <= 1:
        raise ValueError(f"min_breast_fraction must lie in [0, 1], got {min_breast_fraction}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    start = time.perf_counter()
    threshold = default_threshold(loaded) if threshold is None else threshold
    breast = breast_mask(image)
    grid = TileGrid(image.shape, PATCH_SIZE_PX)
    coverage = grid.coverage(breast)
    scanned = coverage >= min_breast_fraction
    if isinstance(loaded.model, MCNet):
        clusters = detect(loaded.model, image, breast, **detector_options(loaded)).clusters
        tile_scores = _cluster_tile_scores(clusters, grid)
        rows = _rows_from_scores(grid, scanned | (tile_scores > 0), coverage, tile_scores, threshold, on_row)
        detector, engine = "mc", "mc"
    else:
        rows = _paper_rows(loaded.model, image, grid, scanned, coverage, threshold, engine, on_row)
        clusters, detector = _tile_clusters(rows, grid), "paper"
    tiles = [t for row in rows for t in row]
    model_info = {"name": loaded.name, "sha256": loaded.sha256,
                  "trained_on": loaded.card.get("trained_on", "unknown")}
    result = ScanResult(name, SCAN_PIXEL_SPACING_MM, source_pixel_spacing_mm, spacing_assumed, tuple(image.shape),
                        PATCH_SIZE_PX, threshold, min_breast_fraction, _counts(tiles), tiles, model_info, engine,
                        time.perf_counter() - start, detector=detector, clusters=clusters)
    if not breast.any() and (detector == "mc" or not scanned.any()):
        result.warnings.append(f"{name}: no breast found (the image is blank, uniform or all background); "
                               "nothing was scanned")
    elif not scanned.any() and detector == "paper":
        result.warnings.append(f"{name}: the breast covers no tile by {min_breast_fraction:g}; nothing was scanned")
    return result


def _paper_rows(model: MCCNet, image: np.ndarray, grid: TileGrid, scanned: np.ndarray, coverage: np.ndarray,
                threshold: float, engine: str, on_row) -> list[list[Tile]]:
    """The paper's net on every scanned tile, row by row."""
    tile, rows = grid.tile_size_px, []
    for r, scores in iter_row_scores(model, image, scanned, tile_size_px=tile, engine=engine):
        row_tiles, k = [], 0
        for c in range(grid.n_cols):
            if scanned[r, c]:
                p = float(scores.probabilities[k])
                px, py = (int(v) for v in scores.peaks[k])
                row_tiles.append(Tile(r, c, c * tile, r * tile, p, _label(p, threshold), float(coverage[r, c]),
                                      [round(float(v), 6) for v in scores.f2[k]], (c * tile + px, r * tile + py)))
                k += 1
            else:
                row_tiles.append(Tile(r, c, c * tile, r * tile, None, "background", float(coverage[r, c])))
        rows.append(row_tiles)
        if on_row is not None:
            on_row(row_tiles)
    return rows


def _cluster_tile_scores(clusters: list[Cluster], grid: TileGrid) -> np.ndarray:
    """Each tile's best score among the clusters with an MC in it (0 elsewhere); fills
    every cluster's `tiles`."""
    scores = np.zeros((grid.n_rows, grid.n_cols), np.float32)
    t = grid.tile_size_px
    for c in clusters:
        c.tiles = sorted({(int(m.y // t), int(m.x // t)) for m in c.mcs})
        for r, k in c.tiles:
            scores[r, k] = max(scores[r, k], c.score)
    return scores


def _rows_from_scores(grid: TileGrid, scanned: np.ndarray, coverage: np.ndarray, scores: np.ndarray,
                      threshold: float, on_row) -> list[list[Tile]]:
    t, rows = grid.tile_size_px, []
    for r in range(grid.n_rows):
        row_tiles = [Tile(r, c, c * t, r * t, float(scores[r, c]), _label(float(scores[r, c]), threshold),
                          float(coverage[r, c])) if scanned[r, c] else
                     Tile(r, c, c * t, r * t, None, "background", float(coverage[r, c])) for c in range(grid.n_cols)]
        rows.append(row_tiles)
        if on_row is not None:
            on_row(row_tiles)
    return rows


def _tile_clusters(rows: list[list[Tile]], grid: TileGrid, floor: float = TILE_CLUSTER_FLOOR) -> list[Cluster]:
    """The paper's net has no MCs to count: each group of touching tiles at P ≥ `floor` is a
    cluster, outlined by its tiles' box and scored by its best tile."""
    from scipy import ndimage

    p = np.array([[t.probability if t.probability is not None else -1.0 for t in row] for row in rows], np.float32)
    labels, n = ndimage.label(p >= floor, structure=np.ones((3, 3)))
    t, clusters = grid.tile_size_px, []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        members = np.argwhere(labels[box] == k) + [box[0].start, box[1].start]
        best = members[np.argmax(p[members[:, 0], members[:, 1]])]
        x0, y0 = box[1].start * t, box[0].start * t
        x1, y1 = min(box[1].stop * t, grid.image_shape[1]), min(box[0].stop * t, grid.image_shape[0])
        clusters.append(Cluster(0, float((best[1] + 0.5) * t), float((best[0] + 0.5) * t),
                                [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], round(float(p[best[0], best[1]]), 4), 0,
                                [], [tuple(int(v) for v in m) for m in members]))
    clusters.sort(key=lambda c: -c.score)
    for k, c in enumerate(clusters):
        c.id = k + 1
    return clusters


def prepare_file(path, *, pixel_spacing_mm: float | None = None, max_pixels: int | None = None) -> ScanImage:
    """Read a mammogram file and bring it to 70 µm, refusing one smaller than a tile: all that
    `scan_file` does before scoring (a batch runs it apart, on other cores or machines)."""
    scan_img = load_for_scan(path, pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    _check_scan_shape(path, scan_img.image.shape)
    return scan_img


def probe_file(path, *, pixel_spacing_mm: float | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> MammogramInfo:
    """What `prepare_file` would refuse, found from the header alone (`io.probe_mammogram`,
    then the tile-size check on the shape it will have at 70 µm): cheap, for an upload."""
    info = probe_mammogram(path, max_pixels=max_pixels, pixel_spacing_mm=pixel_spacing_mm)
    _check_scan_shape(path, info.scan_shape)
    return info


def _check_scan_shape(path, shape: tuple[int, int]) -> None:
    """Refuse an image that is smaller than one tile at 70 µm: no mammogram."""
    rows, cols = shape
    if min(rows, cols) < PATCH_SIZE_PX:
        raise MammogramError(path, f"image is {cols}×{rows} px at {SCAN_PIXEL_SPACING_MM} mm, smaller than one "
                                   f"{PATCH_SIZE_PX}-px tile (1 cm²): too small to be a mammogram (is the pixel "
                                   "spacing right?)")


def scan_prepared(scan_img: ScanImage, loaded: LoadedModel, *, name: str, hints: dict[str, str] | None = None,
                  **kwargs) -> ScanResult:
    """Scan what `prepare_file` made; the result says where the image came from, its warnings
    how to fix a setting in the words of `hints` (a front end's; the command line's by default)."""
    result = scan_image(scan_img.image, loaded, name=name, source_pixel_spacing_mm=scan_img.pixel_spacing_mm,
                        spacing_assumed=scan_img.spacing_assumed, **kwargs)
    result.warnings += [f"{name}: {warning}" for warning in scan_img.source.warnings]
    result.source_shape = scan_img.source_shape
    result.laterality, result.view = scan_img.source.laterality, scan_img.source.view
    if scan_img.spacing_assumed:
        result.warnings.append(f"{name}: no pixel spacing in the file; assumed {SCAN_PIXEL_SPACING_MM} mm "
                               f"({setting_fix('pixel_spacing', hints)} if this is wrong)")
    return result


def scan_file(path, loaded: LoadedModel, *, pixel_spacing_mm: float | None = None,
              max_pixels: int | None = None, name: str | None = None,
              on_image: Callable[[np.ndarray], None] | None = None, **kwargs) -> tuple[ScanResult, np.ndarray]:
    """Read a mammogram file, bring it to 70 µm, scan it. Returns (result, scanned image).

    `name` is what the result calls the image (default: the file name); `on_image`
    receives the 70 µm image before scoring starts, so a viewer can show it at once.
    """
    scan_img = prepare_file(path, pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels)
    if on_image is not None:
        on_image(scan_img.image)
    return scan_prepared(scan_img, loaded, name=name or Path(path).name, **kwargs), scan_img.image
