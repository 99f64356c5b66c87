"""Render a scan, and save every output of a scan.

Two styles. "outline" (the default): the image as it is with every reported cluster
outlined in a strong colour, labelled with its score and MC count, its MCs ringed, and a
legend in the preview, so no one has to guess what a shade means.
"paper": the paper's application: normal tiles lightened toward a light grey, MCC tiles
shown as they are (or tinted), background untouched. The original is never modified.

The tint is defined once here and the web viewer draws it the same way (it reads
`OVERLAY_STYLE` from `/api/info`): a normal tile is the colour laid over the tile at
`NORMAL_STRENGTH` opacity; an MCC tint multiplies the tile by the colour (a CSS
`mix-blend-mode: multiply` layer in the browser), so it darkens and keeps the texture.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from mccscan.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from mccscan.clusters import window_scores
from mccscan.mcdetect import detect
from mccscan.models import MCNet
from mccscan.predict import dense_probability_map
from mccscan.scan import ScanResult, detector_options
from mccscan.tiling import breast_mask
from mccscan.weights import LoadedModel

PREVIEW_MAX_PX = 1024
NORMAL_COLOR = "#e6e6e6"  # normal tiles are lightened toward it
NORMAL_STRENGTH = 0.7  # opacity of NORMAL_COLOR over a normal tile
MCC_TINT_BLEND = "multiply"  # how an MCC tint colour combines with the tile
OVERLAY_STYLE = {"normal_color": NORMAL_COLOR, "normal_strength": NORMAL_STRENGTH, "mcc_blend": MCC_TINT_BLEND}
STYLES = ("outline", "paper")
DEFAULT_STYLE = "outline"
OUTLINE_COLOR = "#ff2a2a"  # a cluster's outline in the "outline" style
OUTLINE_PX = 8  # 2 px in the 1024-px preview
MC_COLOR = "#ffd400"  # the ring around each MC of a cluster
MC_RING_PX = 9
LABEL_PX = 56  # a cluster's label at full resolution (about 14 px in the preview)
MARKER_MIN_RADIUS_PX = 144  # the ring around a cluster: at least 1 cm, whatever the cluster's size
HEATMAP_STRIDE_PX = 16  # the dense map's step: one heatmap pixel per 16 image pixels


def parse_color(color: str | tuple[int, int, int] | None) -> np.ndarray | None:
    """'#rrggbb', a CSS colour name or an (r, g, b) tuple → float array in [0, 1]."""
    if color is None:
        return None
    rgb = ImageColor.getrgb(color) if isinstance(color, str) else color
    return np.asarray(rgb[:3], np.float32) / 255.0


def render_overlay(image: np.ndarray, result: ScanResult, *, style: str = DEFAULT_STYLE,
                   normal_color=NORMAL_COLOR, normal_strength: float = NORMAL_STRENGTH, mcc_color=None,
                   mcc_border_px: int = 0, outline_color=OUTLINE_COLOR, outline_px: int = OUTLINE_PX) -> np.ndarray:
    """RGB uint8 overlay at the scan resolution.

    "outline" (default): the image as it is; each reported cluster outlined in
    `outline_color` and labelled with its number, score and MC count, its MCs circled.
    "paper" (the paper's application): normal tiles blended `normal_strength` of the way
    to `normal_color` (lighter); MCC tiles as they are, or multiplied by `mcc_color` (a
    tint that darkens), with an optional border of that colour.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    # uint8 throughout, float only tile by tile: 3 bytes a pixel, not 12 (a 99 Mpx scan stays < 0.4 GB)
    rgb = np.repeat(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    normal, mcc = parse_color(normal_color), parse_color(mcc_color)
    if style == "outline":
        return _draw_clusters(rgb, result.findings, outline_color, outline_px)
    t = result.tile_size_px
    for tile in result.tiles:
        if tile.label == "background" or (tile.label == "mcc" and mcc is None):
            continue
        window = (slice(tile.y, tile.y + t), slice(tile.x, tile.x + t))
        region = np.repeat(image[window][..., None], 3, axis=2).astype(np.float32)
        if tile.label == "normal":
            region += normal_strength * (normal - region)
        else:
            region *= mcc
            _frame(region, mcc, mcc_border_px)
        rgb[window] = np.round(np.clip(region, 0, 1) * 255).astype(np.uint8)
    return rgb


def _draw_clusters(rgb: np.ndarray, clusters: list, outline_color, width_px: int) -> np.ndarray:
    """Each cluster's outline and label, and a ring around each of its MCs (in place)."""
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=LABEL_PX)
    colour = tuple(int(v) for v in np.round(parse_color(outline_color) * 255))
    for c in clusters:
        draw.polygon([tuple(p) for p in c.outline], outline=colour, width=max(2, width_px // 2))
        for m in c.mcs:
            r = MC_RING_PX
            draw.ellipse((m.x - r, m.y - r, m.x + r, m.y + r), outline=MC_COLOR, width=2)
        # a ring of at least 1 cm around it, so even a 2 mm cluster stands out in the preview
        r = max(MARKER_MIN_RADIUS_PX, max(np.hypot(x - c.x, y - c.y) for x, y in c.outline) + 24)
        draw.ellipse((c.x - r, c.y - r, c.x + r, c.y + r), outline=colour, width=width_px)
        text = f"#{c.id} {c.score:.2f}" + (f" · {c.n_mcs} MCs" if c.n_mcs else "")
        x, y = _label_xy(draw.textlength(text, font=font), c.x, c.y, r, rgb.shape[:2])
        draw.text((x, y), text, fill=colour, font=font, stroke_width=3, stroke_fill=(0, 0, 0))
    rgb[...] = np.asarray(canvas)
    return rgb


def _label_xy(width_px: float, x: float, y: float, ring_px: float, shape: tuple[int, int]) -> tuple[float, float]:
    """Top-left of a cluster's label: above its ring where that fits, else below, else as low
    as fits; always whole inside the image (when it can be), so no label is cut at an edge."""
    above, below = y - ring_px - LABEL_PX - 12, y + ring_px + 8
    bottom = shape[0] - LABEL_PX - 8  # the text's stroke and descenders reach below LABEL_PX
    top = above if above >= 0 else below if below <= bottom else bottom
    return max(0.0, min(x - ring_px, shape[1] - width_px - 4)), max(0.0, top)


def _frame(region: np.ndarray, colour: np.ndarray, width_px: int) -> None:
    """Paint a `width_px` border of `colour` inside a tile's region (in place)."""
    if width_px:
        for edge in (region[:width_px], region[-width_px:], region[:, :width_px], region[:, -width_px:]):
            edge[...] = colour


def legend(result: ScanResult, *, style: str = DEFAULT_STYLE,
           outline_color=OUTLINE_COLOR) -> list[tuple[str | None, str]]:
    """What the overlay's marks mean, as (swatch colour or None, text) lines, for the preview."""
    c = result.counts
    model = f"model {result.model.get('name', '?')}, trained on {result.model.get('trained_on', 'unknown data')}"
    if style == "paper":
        return [(None, f"as they are: MCC, P >= {result.threshold:.3f} ({c['mcc']} tiles); lightened: "
                       f"normal ({c['normal']})"), (None, model)]
    found = len(result.findings)
    if result.detector == "paper":
        return [(outline_color, f"MCC tiles of the paper's net, P >= {result.threshold:.3f}: {found} group(s)"),
                (None, model)]
    return [(outline_color, f"cluster: >= 3 MCs within 1 cm2, score >= {result.threshold:.3f}: {found} found"),
            (MC_COLOR, "MC (microcalcification) in a cluster"), (None, model)]


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


def heatmap(loaded: LoadedModel, image: np.ndarray) -> np.ndarray:
    """RGBA heatmap of a 70 µm image, one pixel per `HEATMAP_STRIDE_PX`: pixel (i, j) is the
    1 cm² window whose top-left corner is (16·j, 16·i). The paper's net: its dense P(MCC)
    (breast only); the cluster detector: the score a cluster in that window would have."""
    breast = breast_mask(image)
    if isinstance(loaded.model, MCNet):
        mcs = detect(loaded.model, image, breast, **detector_options(loaded)).mcs
        return heatmap_rgba(window_scores(mcs, image.shape, stride_px=HEATMAP_STRIDE_PX))
    return heatmap_rgba(dense_probability_map(loaded.model, image, stride_px=HEATMAP_STRIDE_PX, mask=breast))


def png_bytes(pixels: np.ndarray, compress_level: int = 6) -> bytes:
    """An array (grey, RGB or RGBA uint8) encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def preview(rgb: np.ndarray, max_px: int = PREVIEW_MAX_PX,
            legend_lines: list[tuple[str | None, str]] = ()) -> Image.Image:
    """The overlay shrunk to fit `max_px`, with the legend boxed in its bottom-left corner."""
    img = Image.fromarray(rgb)
    scale = max_px / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    if legend_lines:
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=14)
        line_px, pad = 20, 8
        width = min(img.width, pad * 3 + 14 + max(round(draw.textlength(text, font=font)) for _, text in legend_lines))
        top = max(0, img.height - pad * 2 - line_px * len(legend_lines))
        draw.rectangle((0, top, width, img.height), fill=(20, 20, 20))
        for k, (colour, text) in enumerate(legend_lines):
            y = top + pad + k * line_px
            if colour is not None:
                draw.rectangle((pad, y + 2, pad + 12, y + 14), outline=colour, width=3)
            draw.text((pad * 2 + 14, y), text, fill=(235, 235, 235), font=font)
    return img


def output_stems(paths: list[str | Path]) -> list[str]:
    """A distinct output name per input: the file's stem, or, where two inputs share a stem
    (CBIS-DDSM names every file 1-1.dcm), its path below their common folder with the
    suffix kept, '/' → '_' (a/case.dcm → a_case.dcm); still equal names get -2, -3, …"""
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    clashing = [i for i, stem in enumerate(stems) if [s.lower() for s in stems].count(stem.lower()) > 1]
    if clashing:
        parents = [paths[i].resolve().parent for i in clashing]
        common = Path(os.path.commonpath(parents))
        for i in clashing:
            stems[i] = paths[i].resolve().relative_to(common).as_posix().replace("/", "_")
    seen: dict[str, int] = {}
    for i, stem in enumerate(stems):
        seen[stem.lower()] = seen.get(stem.lower(), 0) + 1
        if seen[stem.lower()] > 1:
            stems[i] = f"{stem}-{seen[stem.lower()]}"
    return stems


def save_scan(result: ScanResult, image: np.ndarray, out_dir: str | Path, *, stem: str | None = None,
              style: str = DEFAULT_STYLE, **render_options) -> dict[str, Path]:
    """Write <stem>.overlay.png (full resolution), <stem>.preview.png (with its legend),
    <stem>.json, <stem>.csv (tiles) and <stem>.clusters.csv; `stem` defaults to the image's
    (see `output_stems`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or Path(result.image).stem
    paths = {"overlay": out_dir / f"{stem}.overlay.png", "preview": out_dir / f"{stem}.preview.png",
             "json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv",
             "clusters": out_dir / f"{stem}.clusters.csv"}
    rgb = render_overlay(image, result, style=style, **render_options)
    atomic_write_bytes(paths["overlay"], png_bytes(rgb, compress_level=1))
    outline = render_options.get("outline_color", OUTLINE_COLOR)
    shown = preview(rgb, legend_lines=legend(result, style=style, outline_color=outline))
    atomic_write(paths["preview"], lambda fh: shown.save(fh, "PNG"))
    atomic_write_text(paths["csv"], result.to_csv())
    atomic_write_text(paths["clusters"], result.clusters_csv())
    atomic_write_text(paths["json"], result.to_json() + "\n")
    return paths
