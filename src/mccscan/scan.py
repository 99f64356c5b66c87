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
from mccscan.io import DEFAULT_MAX_PIXELS, SCAN_PIXEL_SPACING_MM, MammogramError, load_for_scan
from mccscan.models import MCCNet
from mccscan.tiling import TileGrid, breast_mask
from mccscan.weights import LoadedModel

DEFAULT_THRESHOLD = 0.5
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

    def relabel(self, threshold: float) -> "ScanResult":
        """Same scores with another threshold (no rescan)."""
        tiles = [Tile(**{**asdict(t), "label": _label(t.probability, threshold)}) for t in self.tiles]
        return ScanResult(**{**self.__dict__, "tiles": tiles, "threshold": threshold,
                             "counts": _counts(tiles)})

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
        return cls(**{**data, "tiles": tiles, "scan_shape": tuple(data["scan_shape"])})

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
    f2, argmax = maps.reshape(n, c, w * w).max(dim=2)
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


def scan_image(image: np.ndarray, loaded: LoadedModel, *, name: str = "image",
               threshold: float = DEFAULT_THRESHOLD, min_breast_fraction: float = DEFAULT_MIN_BREAST_FRACTION,
               engine: str = "convolutional", source_pixel_spacing_mm: float = SCAN_PIXEL_SPACING_MM,
               spacing_assumed: bool = False, on_row: Callable[[list[Tile]], None] | None = None) -> ScanResult:
    """Scan an image already at the scan resolution (70 µm) and return the full result.

    `on_row` receives each tile row (a list of `Tile`, background included) as soon as
    it is scored, top to bottom: what a progress bar or a live view draws.
    """
    start = time.perf_counter()
    model = loaded.model
    tile = model.config.patch_size_px
    grid = TileGrid(image.shape, tile)
    coverage = grid.coverage(breast_mask(image))
    scanned = coverage >= min_breast_fraction
    tiles = []
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
        tiles += row_tiles
        if on_row is not None:
            on_row(row_tiles)
    model_info = {"name": loaded.name, "sha256": loaded.sha256,
                  "trained_on": loaded.card.get("trained_on", "unknown")}
    result = ScanResult(name, SCAN_PIXEL_SPACING_MM, source_pixel_spacing_mm, spacing_assumed, tuple(image.shape),
                        tile, threshold, min_breast_fraction, _counts(tiles), tiles, model_info, engine,
                        time.perf_counter() - start)
    if not scanned.any():
        result.warnings.append(f"{name}: no breast found (the image is blank, uniform or all background); "
                               "nothing was scanned")
    return result


def scan_file(path, loaded: LoadedModel, *, pixel_spacing_mm: float | None = None,
              max_pixels: int | None = None, name: str | None = None,
              on_image: Callable[[np.ndarray], None] | None = None, **kwargs) -> tuple[ScanResult, np.ndarray]:
    """Read a mammogram file, bring it to 70 µm, scan it. Returns (result, scanned image).

    `name` is what the result calls the image (default: the file name); `on_image`
    receives the 70 µm image before scoring starts, so a viewer can show it at once.
    """
    scan_img = load_for_scan(path, pixel_spacing_mm=pixel_spacing_mm,
                             max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    name = name or Path(path).name
    rows, cols = scan_img.image.shape
    tile = loaded.model.config.patch_size_px
    if min(rows, cols) < tile:
        raise MammogramError(path, f"image is {cols}×{rows} px at {SCAN_PIXEL_SPACING_MM} mm, smaller than one "
                                   f"{tile}-px tile (1 cm²): too small to be a mammogram (is the pixel spacing right?)")
    if on_image is not None:
        on_image(scan_img.image)
    result = scan_image(scan_img.image, loaded, name=name,
                        source_pixel_spacing_mm=scan_img.pixel_spacing_mm,
                        spacing_assumed=scan_img.spacing_assumed, **kwargs)
    result.warnings += [f"{name}: {warning}" for warning in scan_img.source.warnings]
    if scan_img.spacing_assumed:
        result.warnings.append(f"{name}: no pixel spacing in the file; assumed 0.07 mm "
                               "(give --pixel-spacing if this is wrong)")
    return result, scan_img.image
