"""Scan history that survives restarts: one SQLite row per scan, its files in a folder.

Layout under the data directory:

    scans.sqlite3             one row per scan (status, counts, timings, error)
    scans/<id>/upload         the uploaded bytes (the client's file name is never a path)
    scans/<id>/image.npy      the 70 µm image as uint8, what the viewer and overlays use
    scans/<id>/result.json    the scan result, same schema as `mccscan scan`
    scans/<id>/result.csv     one line per tile
    scans/<id>/result.sr.dcm  DICOM SR and parametric map, made when the scan is sent to a PACS
    scans/<id>/result.pmap.dcm
    scans/<id>/image.jpg      the image for viewing, heatmap.png and overlay-<hash>.png: each made
                              once, on first request (`derived`)

Only this module knows that layout. Every file is written atomically (a crash or a
concurrent reader never sees half a file). The database is opened per call (SQLite
serialises writers), so any thread may use it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mccscan.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from mccscan.scan import ScanResult

STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    pixel_spacing_mm REAL,
    counts TEXT,
    elapsed_s REAL,
    error TEXT
)
"""


@dataclass
class ScanRecord:
    id: str
    filename: str
    status: str
    created_at: float
    finished_at: float | None = None
    pixel_spacing_mm: float | None = None  # as given with the upload
    counts: dict | None = None
    elapsed_s: float | None = None
    error: str | None = None


class ScanStore:
    def __init__(self, data_dir: str | Path, *, max_renders: int = 2):
        self.data_dir = Path(data_dir)
        self._renders = threading.BoundedSemaphore(max_renders)  # derived files made at once, server-wide
        self._file_locks = [threading.Lock() for _ in range(64)]  # one writer per derived file
        (self.data_dir / "scans").mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "scans.sqlite3"
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def folder(self, scan_id: str) -> Path:
        return self.data_dir / "scans" / scan_id

    def upload_path(self, scan_id: str) -> Path:
        """Where the uploaded bytes are kept."""
        return self.folder(scan_id) / "upload"

    def save_image(self, scan_id: str, image: np.ndarray) -> None:
        """Keep the 70 µm image (float in [0, 1]) as uint8 for the viewer and the overlays."""
        atomic_write(self.folder(scan_id) / "image.npy", lambda fh: np.save(fh, np.round(image * 255).astype(np.uint8)))

    def load_image(self, scan_id: str) -> np.ndarray | None:
        """The stored 70 µm image as uint8, or None before the scan has read it."""
        path = self.folder(scan_id) / "image.npy"
        return np.load(path) if path.exists() else None

    def save_result(self, scan_id: str, result: ScanResult) -> None:
        atomic_write_text(self.folder(scan_id) / "result.csv", result.to_csv())
        atomic_write_text(self.folder(scan_id) / "result.json", result.to_json() + "\n")

    def result_path(self, scan_id: str, suffix: str) -> Path:
        """The stored result as "json", "csv", "sr.dcm" or "pmap.dcm"."""
        return self.folder(scan_id) / f"result.{suffix}"

    def load_result(self, scan_id: str) -> dict | None:
        path = self.result_path(scan_id, "json")
        return json.loads(path.read_text()) if path.exists() else None

    def derived(self, scan_id: str, name: str, make: Callable[[], bytes]) -> Path:
        """A file made once from a scan's stored data (image.jpg, heatmap.png, an overlay) and
        served from disk afterwards. Concurrent requesters of one file wait for its single
        writer; at most `max_renders` files are being made at once in the whole server, so
        downloads cannot exhaust its memory."""
        path = self.folder(scan_id) / name
        if path.exists():
            return path
        with self._file_locks[hash(path) % len(self._file_locks)]:
            if not path.exists():
                with self._renders:
                    atomic_write_bytes(path, make())
        return path

    def create(self, filename: str, pixel_spacing_mm: float | None = None) -> ScanRecord:
        record = ScanRecord(uuid.uuid4().hex, filename, "queued", time.time(), pixel_spacing_mm=pixel_spacing_mm)
        self.folder(record.id).mkdir(parents=True)
        with self._connect() as db:
            db.execute("INSERT INTO scans (id, filename, status, created_at, pixel_spacing_mm) VALUES (?, ?, ?, ?, ?)",
                       (record.id, record.filename, record.status, record.created_at, pixel_spacing_mm))
        return record

    def update(self, scan_id: str, **fields) -> None:
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown status {fields['status']!r}")
        if "counts" in fields:
            fields["counts"] = json.dumps(fields["counts"])
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._connect() as db:
            db.execute(f"UPDATE scans SET {columns} WHERE id = ?", (*fields.values(), scan_id))

    def get(self, scan_id: str) -> ScanRecord | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM scans WHERE id = ?", (scan_id,)).fetchone()
        return _record(row) if row else None

    def list(self) -> list[ScanRecord]:
        """All scans, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM scans ORDER BY created_at DESC").fetchall()
        return [_record(row) for row in rows]

    def unfinished(self) -> list[ScanRecord]:
        """Scans a previous server left queued or running, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM scans WHERE status IN ('queued', 'running') "
                              "ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]

    def delete(self, scan_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM scans WHERE id = ?", (scan_id,))
        shutil.rmtree(self.folder(scan_id), ignore_errors=True)


def _record(row: sqlite3.Row) -> ScanRecord:
    fields = dict(row)
    fields["counts"] = json.loads(fields["counts"]) if fields["counts"] else None
    return ScanRecord(**fields)
