"""What the viewer draws from a scan: the server's info, the image as scanned, the
overlay as `mccscan scan` renders it, and the dense heatmap. Each image is made once per
scan (and per rendering options), through the store's bounded pool, then served from disk."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response
from PIL import Image

from mccscan.render import (DEFAULT_STYLE, HEATMAP_STRIDE_PX, NORMAL_COLOR, OVERLAY_STYLE, STYLES, heatmap, parse_color,
                            png_bytes, render_overlay)
from mccscan.scan import ScanResult, default_threshold
from mccscan.tiling import PATCH_SIZE_PX
from mccscan.web.deps import DoneDep, ModelDep, RecordDep, SettingsDep, StoreDep
from mccscan.web.schemas import ERROR_RESPONSES, ServerInfo
from mccscan.web.store import ScanStore

router = APIRouter(tags=["viewer"])


@router.get("/api/info", response_model=ServerInfo)
def info(settings: SettingsDep, loaded: ModelDep) -> ServerInfo:
    """The model in use, its reporting threshold, the server's limits and how the overlay is drawn."""
    threshold = default_threshold(loaded) if settings.threshold is None else settings.threshold
    return ServerInfo(model={"name": loaded.name, "sha256": loaded.sha256,
                             "trained_on": loaded.card.get("trained_on", "unknown")},
                      threshold=threshold, tile_size_px=PATCH_SIZE_PX,
                      heatmap_stride_px=HEATMAP_STRIDE_PX, max_upload_bytes=settings.max_upload_bytes,
                      max_pixels=settings.max_pixels, overlay=OVERLAY_STYLE, pacs=settings.pacs_url)


def _image_u8(store: ScanStore, scan_id: str) -> np.ndarray:
    image = store.load_image(scan_id)
    if image is None:
        raise HTTPException(409, f"scan {scan_id} has no image yet")
    return image


def _derived(store: ScanStore, scan_id: str, name: str, make) -> Path:
    try:
        return store.derived(scan_id, name, make)
    except FileNotFoundError:  # the scan was deleted while its file was being made
        raise HTTPException(404, f"no scan {scan_id}") from None


@router.get("/api/scans/{scan_id}/image.jpg", responses=ERROR_RESPONSES, response_class=Response)
def scan_image_jpeg(record: RecordDep, store: StoreDep) -> Response:
    """The mammogram as scanned, 70 µm, for viewing: 8-bit JPEG at quality 95 (encodes in
    about 15 ms where a PNG takes 200 ms, so the viewer shows it while the scan runs).
    Overlays and heatmaps are computed from the lossless copy."""
    def make() -> bytes:
        buf = io.BytesIO()
        Image.fromarray(_image_u8(store, record.id)).save(buf, "JPEG", quality=95)
        return buf.getvalue()

    return FileResponse(_derived(store, record.id, "image.jpg", make), media_type="image/jpeg")


@router.get("/api/scans/{scan_id}/overlay.png", responses=ERROR_RESPONSES, response_class=Response)
def overlay_png(record: DoneDep, store: StoreDep, threshold: float | None = Query(None, ge=0, le=1),
                style: str = Query(DEFAULT_STYLE, pattern=f"^({'|'.join(STYLES)})$"), normal_color: str = NORMAL_COLOR,
                mcc_color: str | None = None) -> Response:
    """The overlay as `mccscan scan` draws it, at full resolution: by default MCC tiles framed
    in red; `style=paper` lightens normal tiles (and tints MCC tiles with `mcc_color`)."""
    try:
        for colour in (normal_color, mcc_color):
            parse_color(colour)
    except ValueError as exc:
        raise HTTPException(422, f"bad colour: {exc}") from exc
    options = {"style": style, "threshold": threshold, "normal_color": normal_color, "mcc_color": mcc_color}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]

    def make() -> bytes:
        result = ScanResult.from_dict(store.load_result(record.id))
        if threshold is not None:
            result = result.relabel(threshold)
        rgb = render_overlay(_image_u8(store, record.id).astype(np.float32) / 255, result, style=style,
                             normal_color=normal_color, mcc_color=mcc_color)
        return png_bytes(rgb, compress_level=1)

    return FileResponse(_derived(store, record.id, f"overlay-{key}.png", make), media_type="image/png",
                        filename=f"{Path(record.filename).stem}.overlay.png")


@router.get("/api/scans/{scan_id}/heatmap.png", responses=ERROR_RESPONSES, response_class=Response)
def heatmap_png(record: DoneDep, store: StoreDep, loaded: ModelDep) -> Response:
    """Dense map at a 16-px stride (RGBA, transparent where low or outside the breast): the
    paper's net's P(MCC), or the cluster detector's score for a cluster in each window.

    Pixel (i, j) is the 144-px window whose top-left corner is (16·j, 16·i) in the scanned
    image, so the map lies over the image from (72 − 8, 72 − 8) px at 16× scale. Computed
    on first request from the stored 8-bit image."""

    def make() -> bytes:
        return png_bytes(heatmap(loaded, _image_u8(store, record.id).astype(np.float32) / 255))

    return FileResponse(_derived(store, record.id, "heatmap.png", make), media_type="image/png")
