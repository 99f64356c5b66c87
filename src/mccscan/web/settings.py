"""The server's settings: where scans are kept, which weights, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mccscan.io import DEFAULT_MAX_PIXELS
from mccscan.scan import DEFAULT_THRESHOLD


@dataclass
class Settings:
    data_dir: Path = Path("mccscan-data")
    weights: str | None = None  # default: the shipped demo weights
    workers: int = 1  # scans at once; each uses every core through PyTorch
    max_queued: int = 64
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    threshold: float = DEFAULT_THRESHOLD
