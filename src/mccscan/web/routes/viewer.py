"""What the viewer draws from a scan: the server's info, the image as scanned, the
overlay as `mccscan scan` renders it, and the dense heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response
from PIL import Image

from mccscan.render import HEATMAP_STRIDE_PX, NORMAL_COLOR, OVERLAY_STYLE, heatmap, png_bytes, render_overlay
from mccscan.scan import ScanResult
from mccscan.web.deps import DoneDep, ModelDep, RecordDep, SettingsDep, StoreDep
from mccscan.web.schemas import ERROR_RESPONSES, ServerInfo

router = APIRouter(tags=["viewer"])


@router.get("/api/info", response_model=ServerInfo)
def info(settings: SettingsDep, loaded: ModelDep) -> ServerInfo:
    """The model in use, the server's limits and how the overlay is drawn."""
    return ServerInfo(model={"name": loaded.name, "sha256": loaded.sha256,
                             "trained_on": loaded.card.get("trained_on", "unknown")},
                      threshold=settings.threshold, tile_size_px=loaded.model.config.patch_size_px,
                      heatmap_stride_px=HEATMAP_STRIDE_PX, max_upload_bytes=settings.max_upload_bytes,
                      max_pixels=settings.max_pixels, overlay=OVERLAY_STYLE)


def _scan_image_u8(store: StoreDep, scan_id: str) -> np.ndarray:
    image = store.load_image(scan_id)
    if image is None:
        raise HTTPException(409, f"scan {scan_id} has no image yet")
    return image


@router.get("/api/scans/{scan_id}/image.jpg", responses=ERROR_RESPONSES, response_class=Response)
def scan_image_jpeg(record: RecordDep, store: StoreDep) -> Response:
    """The mammogram as scanned, 70 µm, for viewing: 8-bit JPEG at quality 95 (encodes in
    about 15 ms where a PNG takes 200 ms, so the viewer shows it while the scan runs).
    Overlays and heatmaps are computed from the lossless copy."""
    cached = store.derived_path(record.id, "image.jpg")
    if not cached.exists():
        partial = cached.with_suffix(".part")
        Image.fromarray(_scan_image_u8(store, record.id)).save(partial, "JPEG", quality=95)
        partial.replace(cached)
    return FileResponse(cached, media_type="image/jpeg")


@router.get("/api/scans/{scan_id}/overlay.png", responses=ERROR_RESPONSES, response_class=Response)
def overlay_png(record: DoneDep, store: StoreDep, threshold: float | None = Query(None, ge=0, le=1),
                normal_color: str = NORMAL_COLOR, mcc_color: str | None = None) -> Response:
    """The overlay as `mccscan scan` draws it: normal tiles lightened, MCC tiles as they are
    (or tinted with `mcc_color`), at full resolution."""
    result = ScanResult.from_dict(store.load_result(record.id))
    if threshold is not None:
        result = result.relabel(threshold)
    try:
        rgb = render_overlay(_scan_image_u8(store, record.id).astype(np.float32) / 255, result,
                             normal_color=normal_color, mcc_color=mcc_color)
    except ValueError as exc:
        raise HTTPException(422, f"bad colour: {exc}") from exc
    return Response(png_bytes(rgb, compress_level=1), media_type="image/png", headers={
        "Content-Disposition": f'attachment; filename="{Path(record.filename).stem}.overlay.png"'})


@router.get("/api/scans/{scan_id}/heatmap.png", responses=ERROR_RESPONSES, response_class=Response)
def heatmap_png(record: DoneDep, store: StoreDep, loaded: ModelDep) -> Response:
    """Dense P(MCC) map at a 16-px stride (RGBA, transparent where low or outside the breast).

    Pixel (i, j) is the 144-px window whose top-left corner is (16·j, 16·i) in the scanned
    image, so the map lies over the image from (72 − 8, 72 − 8) px at 16× scale. Computed
    on first request from the stored 8-bit image."""
    cached = store.derived_path(record.id, "heatmap.png")
    if not cached.exists():
        rgba = heatmap(loaded.model, _scan_image_u8(store, record.id).astype(np.float32) / 255)
        partial = cached.with_suffix(".part")
        partial.write_bytes(png_bytes(rgba))
        partial.replace(cached)
    return FileResponse(cached, media_type="image/png")
