"""Scans run by a bounded worker pool; each scan's progress is a list of events.

A scan's events, in order: `meta` (image geometry, once the image is read), one `row`
per tile row in raster order, then `done` (counts) or `failed` (message). A live scan
keeps them in memory for its streamers; a finished scan's events are rebuilt from its
stored result, so a page opened after a restart replays it the same way.

Memory is bounded by the pool: uploads wait on disk, and only `workers` images are in
memory at once. The queue is bounded too; `submit` refuses when it is full.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from mccscan.io import DEFAULT_MAX_PIXELS, MammogramError
from mccscan.scan import ScanResult, Tile, default_threshold, scan_file
from mccscan.tiling import PATCH_SIZE_PX, TileGrid
from mccscan.web.store import ScanStore
from mccscan.weights import LoadedModel

Event = tuple[str, dict]
LIVE_EVENTS_KEPT_S = 60.0  # a finished scan's events stay in memory this long for its streamers; then the store answers


WEB_HINTS = {"pixel_spacing": "give the right one in the field Pixel spacing, in mm",
             "max_pixels": "the limit is this server's"}  # io.CLI_HINTS in the page's terms: it has no flags


class QueueFull(RuntimeError):
    pass


@dataclass
class _Live:
    events: list[Event] = field(default_factory=list)
    finished_at: float | None = None  # time.monotonic() when the scan ended

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def meta_event(scan_id: str, name: str, scan_shape: tuple[int, int], tile_size_px: int, **extra) -> Event:
    grid = TileGrid(scan_shape, tile_size_px)
    return "meta", {"id": scan_id, "image": name, "scan_shape": list(scan_shape), "tile_size_px": tile_size_px,
                    "n_rows": grid.n_rows, "n_cols": grid.n_cols, **extra}


def row_event(tiles: list[Tile]) -> Event:
    return "row", {"row": tiles[0].row, "tiles": [asdict(t) for t in tiles]}


def done_event(result: dict) -> Event:
    return "done", {key: result.get(key) for key in ("counts", "elapsed_s", "warnings", "threshold", "model",
                                                     "detector", "clusters")}


def replay(scan_id: str, result: dict) -> list[Event]:
    """The events of a finished scan, rebuilt from its stored result."""
    events = [meta_event(scan_id, result["image"], tuple(result["scan_shape"]), result["tile_size_px"],
                         threshold=result["threshold"])]
    rows: dict[int, list[Tile]] = {}
    for t in result["tiles"]:
        rows.setdefault(t["row"], []).append(Tile(**t))
    events += [row_event(rows[r]) for r in sorted(rows)]
    return events + [done_event(result)]


class ScanJobs:
    def __init__(self, store: ScanStore, loaded: LoadedModel, *, workers: int = 1, max_queued: int = 64,
                 max_pixels: int = DEFAULT_MAX_PIXELS, threshold: float | None = None):
        self.store, self.loaded = store, loaded
        self.threshold = default_threshold(loaded) if threshold is None else threshold  # the weights' operating point
        self.max_queued, self.max_pixels = max_queued, max_pixels
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mccscan-scan")
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._futures: dict[str, Future] = {}

    def resume(self) -> int:
        """Queue again what a previous server left unfinished; returns how many."""
        unfinished = self.store.unfinished()
        for record in unfinished:
            self.store.update(record.id, status="queued")
            self.submit(record.id, force=True)
        return len(unfinished)

    def pending(self) -> int:
        with self._lock:
            return sum(not f.done() for f in self._futures.values())

    def submit(self, scan_id: str, force: bool = False) -> None:
        with self._lock:
            self._futures = {k: f for k, f in self._futures.items() if not f.done()}
            self._forget_finished()
            if not force and len(self._futures) >= self.max_queued:
                raise QueueFull(f"{len(self._futures)} scans are waiting; try again shortly")
            self._live[scan_id] = _Live()
            self._futures[scan_id] = self._pool.submit(self._run, scan_id)

    def cancel(self, scan_id: str) -> bool:
        """Cancel a queued scan; False if it is running (it cannot be stopped midway)."""
        with self._lock:
            future = self._futures.get(scan_id)
            if future is not None and not future.cancel() and not future.done():
                return False
            self._futures.pop(scan_id, None)
            self._live.pop(scan_id, None)
        return True

    def events_since(self, scan_id: str, start: int) -> tuple[list[Event], bool]:
        """Events from index `start` on, and whether the scan has finished."""
        with self._lock:
            self._forget_finished()
            live = self._live.get(scan_id)
            if live is not None:
                return live.events[start:], live.finished
        record = self.store.get(scan_id)
        if record is None:
            return [], True
        if record.status == "failed":
            return [("failed", {"message": record.error})][start:], True
        if record.status == "done":
            return replay(scan_id, self.store.load_result(scan_id))[start:], True
        return [], False  # queued by a previous server, not yet resumed

    def _emit(self, scan_id: str, event: Event) -> None:
        with self._lock:
            self._live[scan_id].events.append(event)

    def _run(self, scan_id: str) -> None:
        record = self.store.get(scan_id)
        if record is None:  # deleted while queued
            return
        self.store.update(scan_id, status="running")
        tile = PATCH_SIZE_PX

        def on_image(image: np.ndarray) -> None:
            self.store.save_image(scan_id, image)
            self._emit(scan_id, meta_event(scan_id, record.filename, image.shape, tile,
                                           threshold=self.threshold))

        try:
            result, _ = scan_file(self.store.upload_path(scan_id), self.loaded,
                                  pixel_spacing_mm=record.pixel_spacing_mm, max_pixels=self.max_pixels,
                                  name=record.filename, threshold=self.threshold, hints=WEB_HINTS,
                                  on_image=on_image, on_row=lambda tiles: self._emit(scan_id, row_event(tiles)))
            self._save(scan_id, result)
        except MammogramError as exc:
            self._fail(scan_id, f"{record.filename}: {exc.problem_and_fix(WEB_HINTS)}")
        except Exception as exc:  # noqa: BLE001 — a worker must survive anything one file does
            self._fail(scan_id, f"{record.filename}: scan failed ({type(exc).__name__}: {exc})")
        finally:
            with self._lock:
                self._live[scan_id].finished_at = time.monotonic()

    def _save(self, scan_id: str, result: ScanResult) -> None:
        self.store.save_result(scan_id, result)
        self.store.update(scan_id, status="done", finished_at=time.time(), counts=result.counts,
                          elapsed_s=result.elapsed_s)
        self._emit(scan_id, done_event(result.to_dict()))

    def _fail(self, scan_id: str, message: str) -> None:
        self.store.update(scan_id, status="failed", finished_at=time.time(), error=message)
        self._emit(scan_id, ("failed", {"message": message}))

    def _forget_finished(self) -> None:
        """Drop the in-memory events of scans that ended LIVE_EVENTS_KEPT_S ago; the store now
        answers for them. Called with the lock held, on the next request: no timer thread, which
        would hold the model past its server and could free it during interpreter shutdown."""
        cutoff = time.monotonic() - LIVE_EVENTS_KEPT_S
        self._live = {k: v for k, v in self._live.items() if v.finished_at is None or v.finished_at > cutoff}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
