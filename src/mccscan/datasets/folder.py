"""Your own folder: images (PNG, JPEG, TIFF, PGM, DICOM) plus one CSV of annotations.

`annotations.csv` columns (header required, extra columns ignored):

    image            file name relative to the folder
    type             "mc" (a point, optional radius) or "cluster" (a box, or a circle)
    x, y             px: the MC centre, or the cluster box's top-left corner / circle centre
    width, height    px, cluster boxes
    radius           px, MCs or cluster circles
    patient_id, laterality, view, pixel_spacing_mm      optional, per image

Images with no row are normal. An image whose rows cannot be parsed is skipped, with the
line and the problem. Without `patient_id`, each image is its own patient.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mccscan.datasets.base import MC, ClusterRegion, DatasetIndex, MammogramRecord, Skipped
from mccscan.errors import InputError, MissingDataError
from mccscan.io import IMAGE_SUFFIXES


def _number(row: dict, key: str, default: float | None = None) -> float:
    value = (row.get(key) or "").strip()
    if not value:
        if default is None:
            raise InputError(f"'{key}' is empty")
        return default
    return float(value)


def image_files(paths) -> list[Path]:
    """The mammograms among `paths`: files as given, folders searched recursively."""
    found = []
    for given in map(Path, paths):
        if not given.exists():
            raise MissingDataError(f"{given}: no such file or folder")
        inside = sorted(p for p in given.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if given.is_dir() else [given]
        if not inside:
            raise MissingDataError(f"{given}: no mammogram ({', '.join(IMAGE_SUFFIXES)}) in it")
        found += inside
    return found


def read_folder(root: str | Path, annotations: str = "annotations.csv") -> DatasetIndex:
    root = Path(root)
    if not root.is_dir():
        raise MissingDataError(f"{root}: not a folder")
    images = image_files([root])
    index = DatasetIndex("folder", root, [])
    by_name = {p.relative_to(root).as_posix(): p for p in images}
    rows: dict[str, list[tuple[int, dict]]] = {}
    csv_path = root / annotations
    if csv_path.exists():
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "image" not in reader.fieldnames or "type" not in reader.fieldnames:
                raise InputError(f"{csv_path}: the header needs at least 'image' and 'type' columns")
            for line, row in enumerate(reader, start=2):
                rows.setdefault(row["image"].strip(), []).append((line, row))
    else:
        index.notes.append(f"no {annotations}: every image is taken as normal")
    for name in sorted(set(rows) - set(by_name)):
        index.skipped.append(Skipped(f"{annotations}:{rows[name][0][0]}", f"image {name!r} not found"))
    for name, path in by_name.items():
        first = rows.get(name, [(0, {})])[0][1]
        spacing = (first.get("pixel_spacing_mm") or "").strip()
        record = MammogramRecord(path, name, (first.get("patient_id") or "").strip() or Path(name).stem,
                                 (first.get("laterality") or "").strip().upper(),
                                 (first.get("view") or "").strip().upper(), float(spacing) if spacing else None)
        try:
            for line, row in rows.get(name, []):
                kind = row["type"].strip().lower()
                x, y = _number(row, "x"), _number(row, "y")
                if kind == "mc":
                    record.mcs.append(MC(x, y, _number(row, "radius", 0.0)))
                elif kind == "cluster" and (row.get("radius") or "").strip():
                    record.clusters.append(ClusterRegion.circle(x, y, _number(row, "radius")))
                elif kind == "cluster":
                    record.clusters.append(ClusterRegion.box(x, y, _number(row, "width"), _number(row, "height")))
                else:
                    raise InputError(f"type {row['type']!r} is neither 'mc' nor 'cluster'")
        except ValueError as exc:
            index.skipped.append(Skipped(f"{annotations}:{line}", f"{name}: {exc}"))
            continue
        index.records.append(record)
    return index
