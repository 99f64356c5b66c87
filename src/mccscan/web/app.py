"""The web application: upload a mammogram, watch it being scanned tile by tile.

A thin FastAPI layer over `mccscan.scan.scan_file` (the CLI's scan function): uploads
are checked cheaply (`probe_mammogram`), stored, and queued on a bounded worker pool
(`mccscan.web.jobs`); progress streams as Server-Sent Events; results and history live
in SQLite plus files (`mccscan.web.store`). The page is static HTML/JS in `static/`.
The OpenAPI page at `/docs` is the API's reference.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel

from mccscan.io import DEFAULT_MAX_PIXELS, MammogramError, probe_mammogram
from mccscan.models import load_model
from mccscan.patches import breast_mask
from mccscan.render import heatmap_rgba, render_overlay
from mccscan.scan import ScanResult, dense_probability_map
from mccscan.web.jobs import QueueFull, ScanJobs
from mccscan.web.store import ScanRecord, ScanStore

STATIC_DIR = Path(__file__).parent / "static"
HEATMAP_STRIDE_PX = 16
_HTTP_STATUS = {"empty": 400, "too_large": 413, "unsupported": 415, "unreadable": 422}


@dataclass
class Settings:
    data_dir: Path = Path("mccscan-data")
    weights: str | None = None  # default: the shipped demo weights
    workers: int = 1  # scans at once; each uses every core through PyTorch
    max_queued: int = 64
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    threshold: float = 0.5


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


class ErrorMessage(BaseModel):
    detail: str


_ERRORS = {code: {"model": ErrorMessage} for code in (400, 404, 409, 413, 415, 422, 503)}


def safe_filename(name: str | None) -> str:
    """A display name for an uploaded file: its last path part, printable, at most 120 characters."""
    name = re.split(r"[\\/]", name or "")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:120] or "upload"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    loaded = load_model(settings.weights)
    store = ScanStore(settings.data_dir)
    jobs = ScanJobs(store, loaded, workers=settings.workers, max_queued=settings.max_queued,
                    max_pixels=settings.max_pixels, threshold=settings.threshold)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.resume()
        yield
        jobs.shutdown()

    app = FastAPI(title="mccscan", version="0.1.0", lifespan=lifespan,
                  description="Find microcalcification clusters in mammograms. Upload a mammogram, follow its "
                              "scan as Server-Sent Events, fetch the result as JSON, CSV or an overlay PNG.")
    app.state.settings, app.state.store, app.state.jobs = settings, store, jobs

    def record_or_404(scan_id: str) -> ScanRecord:
        record = store.get(scan_id) if re.fullmatch(r"[0-9a-f]{32}", scan_id) else None
        if record is None:
            raise HTTPException(404, f"no scan {scan_id}")
        return record

    def done_or_409(scan_id: str) -> ScanRecord:
        record = record_or_404(scan_id)
        if record.status != "done":
            raise HTTPException(409, f"scan {scan_id} is {record.status}, not done")
        return record

    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and \
                int(length) > settings.max_upload_bytes + 64 * 1024:
            return JSONResponse({"detail": f"upload is {int(length) / 2**20:.0f} MB, above the limit of "
                                           f"{settings.max_upload_bytes / 2**20:.0f} MB"}, status_code=413)
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/info", response_model=ServerInfo)
    def info() -> ServerInfo:
        """The model in use and the server's limits."""
        return ServerInfo(model={"name": loaded.name, "sha256": loaded.sha256,
                                 "trained_on": loaded.card.get("trained_on", "unknown")},
                          threshold=settings.threshold, tile_size_px=loaded.model.config.patch_size_px,
                          heatmap_stride_px=HEATMAP_STRIDE_PX, max_upload_bytes=settings.max_upload_bytes,
                          max_pixels=settings.max_pixels)

    @app.post("/api/scans", status_code=202, response_model=ScanSummary, responses=_ERRORS)
    def create_scan(file: UploadFile = File(..., description="PNG, JPEG, TIFF, PGM or DICOM (content is sniffed)"),
                    pixel_spacing_mm: float | None = Form(None, gt=0, le=1,
                                                          description="for files without a pixel spacing")):
        """Upload a mammogram; it is checked, stored and queued. Follow it at `/api/scans/{id}/events`."""
        filename = safe_filename(file.filename)
        if file.size is not None and file.size > settings.max_upload_bytes:
            raise HTTPException(413, f"{filename}: upload above the limit of "
                                     f"{settings.max_upload_bytes / 2**20:.0f} MB")
        if jobs.pending() >= settings.max_queued:
            raise HTTPException(503, f"{jobs.pending()} scans are waiting; try again shortly")
        record = store.create(filename, pixel_spacing_mm)
        upload = store.folder(record.id) / "upload"
        try:
            with open(upload, "wb") as out:
                shutil.copyfileobj(file.file, out, 1 << 20)
            probe_mammogram(upload, max_pixels=settings.max_pixels)
            jobs.submit(record.id)
        except MammogramError as exc:
            store.delete(record.id)
            raise HTTPException(_HTTP_STATUS.get(exc.reason, 422), f"{filename}: {exc.problem}") from exc
        except QueueFull as exc:
            store.delete(record.id)
            raise HTTPException(503, str(exc)) from exc
        return ScanSummary(**asdict(store.get(record.id)))

    @app.get("/api/scans", response_model=list[ScanSummary])
    def list_scans() -> list[ScanSummary]:
        """Every scan kept in the data directory, newest first."""
        return [ScanSummary(**asdict(r)) for r in store.list()]

    @app.get("/api/scans/{scan_id}", response_model=ScanDetail, responses=_ERRORS)
    def get_scan(scan_id: str) -> ScanDetail:
        """Status, and the full result once done."""
        record = record_or_404(scan_id)
        return ScanDetail(**asdict(record), result=jobs.result(scan_id) if record.status == "done" else None)

    @app.delete("/api/scans/{scan_id}", status_code=204, responses=_ERRORS)
    def delete_scan(scan_id: str) -> Response:
        """Forget a scan and its files. A running scan cannot be deleted until it ends."""
        record_or_404(scan_id)
        if not jobs.cancel(scan_id):
            raise HTTPException(409, f"scan {scan_id} is running; delete it when it has finished")
        store.delete(scan_id)
        return Response(status_code=204)

    @app.get("/api/scans/{scan_id}/events", responses=_ERRORS,
             response_class=StreamingResponse)
    async def scan_events(scan_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: `meta`, then one `row` per tile row (raster order), then `done` or `failed`.

        A finished scan replays the same events from its stored result."""
        record_or_404(scan_id)

        async def stream():
            sent = 0
            while True:
                events, finished = jobs.events_since(scan_id, sent)
                for name, data in events:
                    yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
                sent += len(events)
                if finished or await request.is_disconnected():
                    return
                await asyncio.sleep(0.02)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def scan_image_u8(scan_id: str) -> np.ndarray:
        path = store.folder(scan_id) / "image.npy"
        if not path.exists():
            raise HTTPException(409, f"scan {scan_id} has no image yet")
        return np.load(path)

    @app.get("/api/scans/{scan_id}/image.jpg", responses=_ERRORS, response_class=Response)
    def scan_image_jpeg(scan_id: str) -> Response:
        """The mammogram as scanned, 70 µm, for viewing: 8-bit JPEG at quality 95 (encodes in
        about 15 ms where a PNG takes 200 ms, so the viewer shows it while the scan runs).
        Overlays and heatmaps are computed from the lossless copy."""
        record_or_404(scan_id)
        cached = store.folder(scan_id) / "image.jpg"
        if not cached.exists():
            partial = cached.with_suffix(".part")
            Image.fromarray(scan_image_u8(scan_id)).save(partial, "JPEG", quality=95)
            partial.replace(cached)
        return FileResponse(cached, media_type="image/jpeg")

    @app.get("/api/scans/{scan_id}/overlay.png", responses=_ERRORS, response_class=Response)
    def overlay_png(scan_id: str, threshold: float | None = Query(None, ge=0, le=1),
                    normal_color: str = "#e6e6e6", mcc_color: str | None = None) -> Response:
        """The overlay as `mccscan scan` draws it: normal tiles lightened, MCC tiles as they are
        (or tinted with `mcc_color`), at full resolution."""
        record = done_or_409(scan_id)
        result = ScanResult.from_dict(jobs.result(scan_id))
        if threshold is not None:
            result = result.relabel(threshold)
        try:
            rgb = render_overlay(scan_image_u8(scan_id).astype(np.float32) / 255, result,
                                 normal_color=normal_color, mcc_color=mcc_color)
        except ValueError as exc:
            raise HTTPException(422, f"bad colour: {exc}") from exc
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG", compress_level=1)
        return Response(buf.getvalue(), media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{Path(record.filename).stem}.overlay.png"'})

    @app.get("/api/scans/{scan_id}/result.json", responses=_ERRORS)
    def result_json(scan_id: str) -> Response:
        """The result as a file, the same schema as `mccscan scan`."""
        record = done_or_409(scan_id)
        return FileResponse(store.folder(scan_id) / "result.json", media_type="application/json",
                            filename=f"{Path(record.filename).stem}.json")

    @app.get("/api/scans/{scan_id}/result.csv", responses=_ERRORS)
    def result_csv(scan_id: str) -> Response:
        """One line per tile, the same columns as `mccscan scan`."""
        record = done_or_409(scan_id)
        return FileResponse(store.folder(scan_id) / "result.csv", media_type="text/csv",
                            filename=f"{Path(record.filename).stem}.csv")

    @app.get("/api/scans/{scan_id}/heatmap.png", responses=_ERRORS, response_class=Response)
    def heatmap_png(scan_id: str) -> Response:
        """Dense P(MCC) map at a 16-px stride (RGBA, transparent where low or outside the breast).

        Pixel (i, j) is the 144-px window whose top-left corner is (16·j, 16·i) in the scanned
        image, so the map lies over the image from (72 − 8, 72 − 8) px at 16× scale. Computed
        on first request from the stored 8-bit image."""
        done_or_409(scan_id)
        cached = store.folder(scan_id) / "heatmap.png"
        if not cached.exists():
            image = scan_image_u8(scan_id).astype(np.float32) / 255
            dense = dense_probability_map(loaded.model, image, stride_px=HEATMAP_STRIDE_PX,
                                          mask=breast_mask(image))
            partial = cached.with_suffix(".part")
            Image.fromarray(heatmap_rgba(dense)).save(partial, "PNG")
            partial.replace(cached)
        return FileResponse(cached, media_type="image/png")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app

