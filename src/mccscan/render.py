"""Render a scan as the paper's application does, and save every output of a scan.

Normal tiles are lightened toward a light grey, MCC tiles are shown as they are (or
tinted), background is left untouched. The original image is never modified.

The tint is defined once here and the web viewer draws it the same way (it reads
`OVERLAY_STYLE` from `/api/info`): a normal tile is the colour laid over the tile at
`NORMAL_STRENGTH` opacity; an MCC tint multiplies the tile by the colour (a CSS
`mix-blend-mode: multiply` layer in the browser), so it darkens and keeps the texture.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

from mccscan.models import MCCNet
from mccscan.predict import dense_probability_map
from mccscan.scan import ScanResult
from mccscan.tiling import breast_mask

PREVIEW_MAX_PX = 1024
NORMAL_COLOR = "#e6e6e6"  # normal tiles are lightened toward it
NORMAL_STRENGTH = 0.7  # opacity of NORMAL_COLOR over a normal tile
MCC_TINT_BLEND = "multiply"  # how an MCC tint colour combines with the tile
OVERLAY_STYLE = {"normal_color": NORMAL_COLOR, "normal_strength": NORMAL_STRENGTH, "mcc_blend": MCC_TINT_BLEND}
HEATMAP_STRIDE_PX = 16  # the dense map's step: one heatmap pixel per 16 image pixels


def parse_color(color: str | tuple[int, int, int] | None) -> np.ndarray | None:
    """'#rrggbb', a CSS colour name or an (r, g, b) tuple → float array in [0, 1]."""
    if color is None:
        return None
    rgb = ImageColor.getrgb(color) if isinstance(color, str) else color
    return np.asarray(rgb[:3], np.float32) / 255.0


def render_overlay(image: np.ndarray, result: ScanResult, *, normal_color=NORMAL_COLOR,
                   normal_strength: float = NORMAL_STRENGTH, mcc_color=None, mcc_border_px: int = 0) -> np.ndarray:
    """RGB uint8 overlay at the scan resolution.

    Normal tiles: blended `normal_strength` of the way to `normal_color` (lighter).
    MCC tiles: as they are, or multiplied by `mcc_color` (a tint that darkens), with an
    optional border of that colour.
    """
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    normal, mcc = parse_color(normal_color), parse_color(mcc_color)
    t = result.tile_size_px
    for tile in result.tiles:
        region = rgb[tile.y:tile.y + t, tile.x:tile.x + t]
        if tile.label == "normal":
            region += normal_strength * (normal - region)
        elif tile.label == "mcc" and mcc is not None:
            region *= mcc
            if mcc_border_px:
                b = mcc_border_px
                for edge in (region[:b], region[-b:], region[:, :b], region[:, -b:]):
                    edge[...] = mcc
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def heatmap_rgba(probability: np.ndarray) -> np.ndarray:
    """Probability map → RGBA uint8: transparent below 0.2, then yellow to red, more opaque as it rises."""
    p = np.nan_to_num(probability, nan=0.0)
    t = np.clip((p - 0.2) / 0.8, 0, 1)
    rgba = np.empty(p.shape + (4,), np.uint8)
    rgba[..., 0] = 255 - 35 * t
    rgba[..., 1] = 230 * (1 - t)
    rgba[..., 2] = 30
    rgba[..., 3] = np.where(p > 0.2, 60 + 170 * t, 0)
    return rgba


def heatmap(model: MCCNet, image: np.ndarray) -> np.ndarray:
    """RGBA heatmap of the dense P(MCC) map of a 70 µm image (breast only), one pixel per
    `HEATMAP_STRIDE_PX`: pixel (i, j) is the window whose top-left corner is (16·j, 16·i)."""
    dense = dense_probability_map(model, image, stride_px=HEATMAP_STRIDE_PX, mask=breast_mask(image))
    return heatmap_rgba(dense)


def png_bytes(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """An array (grey, RGB or RGBA uint8) encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def preview(rgb: np.ndarray, max_px: int = PREVIEW_MAX_PX) -> Image.Image:
    img = Image.fromarray(rgb)
    scale = max_px / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    return img


def save_scan(result: ScanResult, image: np.ndarray, out_dir: str | Path, **render_options) -> dict[str, Path]:
    """Write <stem>.overlay.png (full resolution), <stem>.preview.png, <stem>.json, <stem>.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(result.image).stem
    paths = {"overlay": out_dir / f"{stem}.overlay.png", "preview": out_dir / f"{stem}.preview.png",
             "json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv"}
    rgb = render_overlay(image, result, **render_options)
    Image.fromarray(rgb).save(paths["overlay"], compress_level=1)
    preview(rgb).save(paths["preview"])
    paths["json"].write_text(result.to_json() + "\n")
    paths["csv"].write_text(result.to_csv())
    return paths
