"""What the API answers, as typed models (they make the OpenAPI page at /docs)."""

from __future__ import annotations

from pydantic import BaseModel


class ScanSummary(BaseModel):
    """A scan in the history: what was uploaded and how far it got."""

    id: str
    filename: str
    status: str  # queued, running, done or failed
    created_at: float
    finished_at: float | None = None
    pixel_spacing_mm: float | None = None
    counts: dict[str, int] | None = None
    elapsed_s: float | None = None
    error: str | None = None


class ScanDetail(ScanSummary):
    result: dict | None = None  # the same JSON as `mccscan scan` writes, once done


class ServerInfo(BaseModel):
    model: dict
    threshold: float
    tile_size_px: int
    heatmap_stride_px: int
    max_upload_bytes: int
    max_pixels: int
    overlay: dict  # render.OVERLAY_STYLE: how the viewer tints tiles, as the downloaded overlay does
    pacs: str | None = None  # the DICOMweb root finished scans can be sent to; None: no PACS configured


class SentToPacs(BaseModel):
    """What a "send to PACS" stored (STOW-RS) in the study of the scanned image."""

    pacs: str
    study_instance_uid: str
    sr_sop_instance_uid: str
    map_sop_instance_uid: str
    image_sent: bool  # the image itself too, because the PACS did not have it


class ErrorMessage(BaseModel):
    detail: str


ERROR_RESPONSES = {code: {"model": ErrorMessage} for code in (400, 404, 409, 413, 415, 422, 502, 503)}
