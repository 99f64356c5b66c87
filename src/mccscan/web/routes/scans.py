"""Scans: upload, history, Server-Sent Events while scanning, and the stored results."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse

from mccscan.io import MammogramError
from mccscan.scan import probe_file
from mccscan.web.deps import DoneDep, JobsDep, RecordDep, SettingsDep, StoreDep
from mccscan.web.jobs import WEB_HINTS, QueueFull
from mccscan.web.schemas import ERROR_RESPONSES, ScanDetail, ScanSummary

router = APIRouter(prefix="/api/scans", tags=["scans"])
HTTP_STATUS = {"empty": 400, "too_large": 413, "unsupported": 415, "unreadable": 422}  # by MammogramError.reason


def safe_filename(name: str | None) -> str:
    """A display name for an uploaded file: its last path part, printable, at most 120 characters."""
    name = re.split(r"[\\/]", name or "")[-1]
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:120] or "upload"


@router.post("", status_code=202, response_model=ScanSummary, responses=ERROR_RESPONSES)
def create_scan(settings: SettingsDep, store: StoreDep, jobs: JobsDep,
                file: UploadFile = File(..., description="PNG, JPEG, TIFF, PGM or DICOM (content is sniffed)"),
                pixel_spacing_mm: float | None = Form(None, description="mm, 0.02–1.0; overrides the file's")):
    """Upload a mammogram; it is checked, stored and queued. Follow it at `/api/scans/{id}/events`."""
    filename = safe_filename(file.filename)
    if file.size is not None and file.size > settings.max_upload_bytes:
        raise HTTPException(413, f"{filename}: upload above the limit of "
                                 f"{settings.max_upload_bytes / 2**20:.0f} MB")
    if jobs.pending() >= settings.max_queued:
        raise HTTPException(503, f"{jobs.pending()} scans are waiting; try again shortly")
    record = store.create(filename, pixel_spacing_mm)
    upload = store.upload_path(record.id)
    try:
        with open(upload, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        probe_file(upload, max_pixels=settings.max_pixels, pixel_spacing_mm=pixel_spacing_mm)
        jobs.submit(record.id)
    except MammogramError as exc:
        store.delete(record.id)
        raise HTTPException(HTTP_STATUS.get(exc.reason, 422), f"{filename}: {exc.problem_and_fix(WEB_HINTS)}") from exc
    except QueueFull as exc:
        store.delete(record.id)
        raise HTTPException(503, str(exc)) from exc
    except BaseException:  # nothing half-made is left behind, whatever went wrong
        store.delete(record.id)
        raise
    return ScanSummary(**asdict(store.get(record.id)))


@router.get("", response_model=list[ScanSummary])
def list_scans(store: StoreDep) -> list[ScanSummary]:
    """Every scan kept in the data directory, newest first."""
    return [ScanSummary(**asdict(r)) for r in store.list()]


@router.get("/{scan_id}", response_model=ScanDetail, responses=ERROR_RESPONSES)
def get_scan(record: RecordDep, store: StoreDep) -> ScanDetail:
    """Status, and the full result once done."""
    return ScanDetail(**asdict(record), result=store.load_result(record.id) if record.status == "done" else None)


@router.delete("/{scan_id}", status_code=204, responses=ERROR_RESPONSES)
def delete_scan(record: RecordDep, store: StoreDep, jobs: JobsDep) -> Response:
    """Forget a scan and its files. A running scan cannot be deleted until it ends."""
    if not jobs.cancel(record.id):
        raise HTTPException(409, f"scan {record.id} is running; delete it when it has finished")
    store.delete(record.id)
    return Response(status_code=204)


@router.get("/{scan_id}/events", responses=ERROR_RESPONSES, response_class=StreamingResponse)
async def scan_events(record: RecordDep, jobs: JobsDep, request: Request) -> StreamingResponse:
    """Server-Sent Events: `meta`, then one `row` per tile row (raster order), then `done` or `failed`.

    A finished scan replays the same events from its stored result."""

    async def stream():
        sent = 0
        while True:
            events, finished = jobs.events_since(record.id, sent)
            for name, data in events:
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
            sent += len(events)
            if finished or await request.is_disconnected():
                return
            await asyncio.sleep(0.02)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{scan_id}/result.json", responses=ERROR_RESPONSES)
def result_json(record: DoneDep, store: StoreDep) -> Response:
    """The result as a file, the same schema as `mccscan scan`."""
    return FileResponse(store.result_path(record.id, "json"), media_type="application/json",
                        filename=f"{Path(record.filename).stem}.json")


@router.get("/{scan_id}/result.csv", responses=ERROR_RESPONSES)
def result_csv(record: DoneDep, store: StoreDep) -> Response:
    """One line per tile, the same columns as `mccscan scan`."""
    return FileResponse(store.result_path(record.id, "csv"), media_type="text/csv",
                        filename=f"{Path(record.filename).stem}.csv")
