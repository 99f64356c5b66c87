"""mini-MIAS: `Info.txt` plus `mdbNNN.pgm` (1024×1024, 200 µm, all MLO).

Each Info.txt line: reference, background tissue, abnormality class, severity, x, y,
radius (px), with y measured from the bottom of the image. CALC rows with coordinates
give a cluster circle; CALC rows without (e.g. "* NOTE 3") are image-level findings,
so that image yields no patch labels. Other classes (masses, distortions) carry no MC
label. Consecutive images (mdb001 + mdb002, …) are the two breasts of one patient.
Lines that do not start with a reference (headers, notes) are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from mccscan.datasets.base import ClusterRegion, DatasetIndex, MammogramRecord, Skipped
from mccscan.errors import MissingDataError

PIXEL_SPACING_MM = 0.2
_REF = re.compile(r"^(mdb\d{3})\b")


def read_mini_mias(root: str | Path, info_name: str = "Info.txt") -> DatasetIndex:
    root = Path(root)
    info = root / info_name
    if not info.exists():
        raise MissingDataError(f"{root}: no {info_name}")
    rows: dict[str, list[list[str]]] = {}
    for line in info.read_text(errors="replace").splitlines():
        match = _REF.match(line.strip())
        if match:
            rows.setdefault(match.group(1), []).append(line.split())
    index = DatasetIndex("mini-mias", root, [], notes=[
        "laterality is not given by Info.txt; all views are MLO; patients are consecutive pairs"])
    for ref in sorted(rows):
        path = root / f"{ref}.pgm"
        if not path.exists():
            index.skipped.append(Skipped(str(path), "listed in Info.txt but the image is missing"))
            continue
        try:
            with Image.open(path) as img:
                height = img.size[1]
        except OSError as exc:
            index.skipped.append(Skipped(str(path), f"not a readable PGM ({exc})"))
            continue
        number = int(ref[3:])
        record = MammogramRecord(path, ref, f"mias{(number + 1) // 2:03d}", "", "MLO", PIXEL_SPACING_MM)
        bad = None
        for tokens in rows[ref]:
            if len(tokens) < 3 or tokens[2].upper() != "CALC":
                continue
            try:
                x, y, radius = (float(t) for t in tokens[4:7])
            except ValueError:  # no (or not numeric) coordinates: an image-level finding
                record.unlocated_findings.append(" ".join(tokens[1:]))
                continue
            if radius <= 0:
                bad = f"CALC row with radius {radius}"
            else:
                record.clusters.append(ClusterRegion.circle(x, height - y, radius))
        if bad:
            index.skipped.append(Skipped(f"{info_name}:{ref}", bad))
            continue
        index.records.append(record)
    return index
