"""The web application: upload a mammogram, watch it being scanned tile by tile.

A thin FastAPI layer over `mccscan.scan.scan_file` (the CLI's scan function): uploads
are checked cheaply (`probe_mammogram`), stored, and queued on a bounded worker pool
(`mccscan.web.jobs`); progress streams as Server-Sent Events; results and history live
in SQLite plus files (`mccscan.web.store`). Routes are in `routes/` (scans, viewer,
pages) and reach the settings, store, pool and model through `deps`. The page is static
HTML/JS in `static/`. The OpenAPI page at `/docs` is the API's reference.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from mccscan.web.jobs import ScanJobs
from mccscan.web.routes import pages, scans, viewer
from mccscan.web.settings import Settings
from mccscan.web.store import ScanStore
from mccscan.weights import load_model


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
    app.state.settings, app.state.store, app.state.jobs, app.state.model = settings, store, jobs, loaded

    @app.middleware("http")
    async def limit_upload_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and \
                int(length) > settings.max_upload_bytes + 64 * 1024:
            return JSONResponse({"detail": f"upload is {int(length) / 2**20:.0f} MB, above the limit of "
                                           f"{settings.max_upload_bytes / 2**20:.0f} MB"}, status_code=413)
        return await call_next(request)

    for module in (scans, viewer, pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app
