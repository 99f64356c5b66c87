"""What every request passes before a route sees it: a known Host (against DNS rebinding),
the same origin for anything that changes state (against cross-site uploads and deletes),
and an upload size limit that holds for chunked bodies too (counted as they arrive)."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SameOriginAndUploadLimit:
    """ASGI middleware: refuse a state-changing request from another origin (403), and a
    request body above `max_body_bytes` (413) — from its Content-Length at once, or while
    it streams in, so a chunked body is never stored past the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{headers.get('host', '')}":
            return await _refuse(scope, receive, send, 403, f"cross-origin request from {origin} refused")
        limit_mb = f"{self.max_body_bytes / 2**20:.0f} MB"
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            return await _refuse(scope, receive, send, 413, f"upload is {int(length) / 2**20:.0f} MB, above the "
                                                            f"limit of {limit_mb}")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # FastAPI passes an HTTPException raised here on as it is
                raise HTTPException(413, f"upload is above the limit of {limit_mb}")
            return message

        await self.app(scope, counted_receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
