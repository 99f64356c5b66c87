"""The server's settings: where scans are kept, which weights, its limits, who may call it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mccscan.io import DEFAULT_MAX_PIXELS

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass
class Settings:
    data_dir: Path = Path("mccscan-data")
    detector: str | None = None  # default: weights.DEFAULT_DETECTOR
    weights: str | None = None  # overrides the detector's shipped weights
    workers: int = 1  # scans at once; each uses every core through PyTorch
    max_queued: int = 64
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    threshold: float | None = None  # default: the operating point stored with the weights
    max_renders: int = 2  # overlays, heatmaps and JPEGs made at once (each holds a copy of an image)
    pacs_url: str | None = None  # DICOMweb root that finished scans can be sent to (SR + parametric map)
    # Host headers answered; any other is refused (a DNS-rebinding page cannot reach the server)
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES

    @staticmethod
    def hosts_for(bind_address: str) -> tuple[str, ...]:
        """The Host names to accept for a bind address: loopback names for a loopback bind,
        the address itself otherwise, any name for 0.0.0.0 / :: (a proxy must check them)."""
        if bind_address in ("", "0.0.0.0") or ":" in bind_address:
            return ("*",)  # any interface, or IPv6 (Starlette cannot match a bracketed Host)
        try:
            loopback = ipaddress.ip_address(bind_address).is_loopback
        except ValueError:  # a host name
            loopback = bind_address == "localhost"
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, bind_address))) if loopback else (bind_address,)
