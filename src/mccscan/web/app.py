"""The web application: upload a mammogram, watch it being scanned tile by tile.

A thin FastAPI layer over `mccscan.scan.scan_file` (the CLI's scan function): uploads
are checked cheaply (`scan.probe_file`), stored, and queued on a bounded worker pool
(`mccscan.web.jobs`); progress streams as Server-Sent Events; results and history live
in SQLite plus files (`mccscan.web.store`). Routes are in `routes/` (scans, viewer,
pacs, pages) and reach the settings, store, pool and model through `deps`; `guards` checks
the Host, the origin and the upload size first. The page is static HTML/JS in `static/`.
The OpenAPI page at `/docs` is the API's reference.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mccscan import __version__
from mccscan.dicomweb import connect
from mccscan.web.guards import SameOriginAndUploadLimit
from mccscan.web.jobs import ScanJobs
from mccscan.web.routes import pacs, pages, scans, viewer
from mccscan.web.settings import Settings
from mccscan.web.store import ScanStore
from mccscan.weights import load_detector

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and fields around the file
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas. Each request thread that allocates image-sized buffers
    otherwise gets an arena of its own (up to 8 per core) that keeps its freed memory:
    16 concurrent downloads took the server from 0.9 to 2.3 GB; capped, 0.94 GB.
    Returns False where there is no glibc (nothing to do)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return bool(name) and ctypes.CDLL(name).mallopt(-8, arenas) == 1  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.pacs_url:
        connect(settings.pacs_url)  # a malformed URL is refused at start, not at the first send
    limit_malloc_arenas()
    loaded = load_detector(settings.detector, settings.weights)
    store = ScanStore(settings.data_dir, max_renders=settings.max_renders)
    jobs = ScanJobs(store, loaded, workers=settings.workers, max_queued=settings.max_queued,
                    max_pixels=settings.max_pixels, threshold=settings.threshold)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jobs.resume()
        yield
        jobs.shutdown()

    app = FastAPI(title="mccscan", version=__version__, lifespan=lifespan,
                  description="Find microcalcification clusters in mammograms. Upload a mammogram, follow its "
                              "scan as Server-Sent Events, fetch the result as JSON, CSV or an overlay PNG.")
    app.state.settings, app.state.store, app.state.jobs, app.state.model = settings, store, jobs, loaded
    app.add_middleware(SameOriginAndUploadLimit, max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    for module in (scans, viewer, pacs, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app
