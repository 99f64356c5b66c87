"""What every dataset reader returns: one record per mammogram, in the image's own pixels.

Readers never load pixels; they find the images, their patients and their annotations,
and report each file they had to skip and why (`Skipped`), never silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class MC:
    """One annotated microcalcification: centre and radius in pixels of its image."""

    x: float
    y: float
    radius_px: float = 0.0  # 0 for a point annotation


@dataclass
class ClusterRegion:
    """An annotated cluster: a polygon outline (x, y) px, or a mask file the size of the image."""

    outline: list[tuple[float, float]] | None = None
    mask_path: Path | None = None

    @classmethod
    def circle(cls, x: float, y: float, radius_px: float, n_points: int = 48) -> "ClusterRegion":
        t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
        return cls(outline=[(float(x + radius_px * np.cos(a)), float(y + radius_px * np.sin(a))) for a in t])

    @classmethod
    def box(cls, x: float, y: float, width: float, height: float) -> "ClusterRegion":
        return cls(outline=[(x, y), (x + width, y), (x + width, y + height), (x, y + height)])


@dataclass
class MammogramRecord:
    image_path: Path
    image_id: str
    patient_id: str
    laterality: str  # "L", "R" or "" when unknown
    view: str  # "CC", "MLO", … or "" when unknown
    pixel_spacing_mm: float | None  # None: take it from the file (DICOM) when reading
    mcs: list[MC] = field(default_factory=list)
    clusters: list[ClusterRegion] = field(default_factory=list)
    # image-level findings without locations (e.g. mini-MIAS CALC rows with no centre):
    # such an image is positive somewhere, so none of its patches can be labelled
    unlocated_findings: list[str] = field(default_factory=list)

    @property
    def annotated(self) -> bool:
        return bool(self.mcs or self.clusters)


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class DatasetIndex:
    source: str
    root: Path
    records: list[MammogramRecord]
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices the reader made (e.g. assumed spacing)
