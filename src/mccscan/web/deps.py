"""What the routes depend on, as FastAPI dependencies: the settings, the store, the job
pool, the model, and the scan a path names. `create_app` puts the real ones on
`app.state`; a test swaps any of them with `app.dependency_overrides`."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from mccscan.web.jobs import ScanJobs
from mccscan.web.settings import Settings
from mccscan.web.store import ScanRecord, ScanStore
from mccscan.weights import LoadedModel


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ScanStore:
    return request.app.state.store


def get_jobs(request: Request) -> ScanJobs:
    return request.app.state.jobs


def get_model(request: Request) -> LoadedModel:
    return request.app.state.model


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ScanStore, Depends(get_store)]
JobsDep = Annotated[ScanJobs, Depends(get_jobs)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]


def scan_record(scan_id: str, store: StoreDep) -> ScanRecord:
    """The scan the path names, or 404."""
    record = store.get(scan_id) if re.fullmatch(r"[0-9a-f]{32}", scan_id) else None
    if record is None:
        raise HTTPException(404, f"no scan {scan_id}")
    return record


def done_scan(record: Annotated[ScanRecord, Depends(scan_record)]) -> ScanRecord:
    """The scan the path names, once finished; 409 before."""
    if record.status != "done":
        raise HTTPException(409, f"scan {record.id} is {record.status}, not done")
    return record


RecordDep = Annotated[ScanRecord, Depends(scan_record)]
DoneDep = Annotated[ScanRecord, Depends(done_scan)]
