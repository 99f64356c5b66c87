"""INbreast: `AllDICOMs/*.dcm`, `AllXML/<image id>.xml` (OsiriX plist ROIs), `INbreast.csv`.

- DICOM file names start with the image id, then the patient (case) hash:
  `22678622_61b13c59bcba149e_MG_R_CC_ANON.dcm`. Pixel spacing comes from the DICOM (70 µm).
- `INbreast.csv` is semicolon-separated with a header (`Laterality`, `View`, `File Name`
  = image id, `Bi-Rads`, …); its patient column is anonymised away, so the patient is the
  hash in the DICOM file name.
- Each XML is an Apple plist: a dict with `Images` → list of dicts with `ROIs` → list of
  dicts with `Name`, `NumberOfPoints`, `Point_px` ("(x, y)" strings) and `Type` (19 a
  point, 15 a polygon), read by key, never by position. A one-point "Calcification" is an
  MC at that point; a polygon "Calcification" is one MC at its centroid with its extent;
  "Cluster" is a cluster outline. Other ROIs (masses, …) carry no MC label.
- An image without an XML is normal. A malformed XML is reported and its image skipped.
"""

from __future__ import annotations

import csv
import plistlib
import re
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np

from mccscan.datasets.base import MC, ClusterRegion, DatasetIndex, MammogramRecord, Skipped
from mccscan.errors import InputError, MissingDataError

_POINT = re.compile(r"^\s*\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*(?:,\s*[-+0-9.eE]+\s*)?\)\s*$")
ROI_POINT, ROI_POLYGON = 19, 15


class InbreastXMLError(InputError):
    pass


def parse_roi_xml(path: Path) -> tuple[list[MC], list[ClusterRegion]]:
    """MCs and cluster outlines of one INbreast XML; raises InbreastXMLError when malformed."""
    try:
        with open(path, "rb") as fh:
            plist = plistlib.load(fh)
    except (plistlib.InvalidFileException, ExpatError, ValueError, OSError, TypeError) as exc:
        raise InbreastXMLError(f"not a readable plist ({exc})") from exc
    if not isinstance(plist, dict) or not isinstance(plist.get("Images"), list):
        raise InbreastXMLError("no 'Images' list in the plist")
    mcs, clusters = [], []
    for image in plist["Images"]:
        rois = image.get("ROIs", []) if isinstance(image, dict) else None
        if not isinstance(rois, list):
            raise InbreastXMLError("an 'Images' entry has no 'ROIs' list")
        for roi in rois:
            if not isinstance(roi, dict) or "Name" not in roi or "Point_px" not in roi:
                raise InbreastXMLError("an ROI lacks 'Name' or 'Point_px'")
            points = np.array([_parse_point(p) for p in roi["Point_px"]], np.float64).reshape(-1, 2)
            if len(points) == 0:
                raise InbreastXMLError(f"ROI {roi['Name']!r} has no points")
            name = str(roi["Name"]).strip().lower()
            if name.startswith("calcification"):
                centre = points.mean(axis=0)
                radius = float(np.max(np.hypot(*(points - centre).T))) if len(points) > 1 else 0.0
                mcs.append(MC(float(centre[0]), float(centre[1]), radius))
            elif name.startswith("cluster"):
                if len(points) < 3:
                    raise InbreastXMLError("a 'Cluster' ROI needs at least 3 points")
                clusters.append(ClusterRegion(outline=[(float(x), float(y)) for x, y in points]))
    return mcs, clusters


def _parse_point(text) -> tuple[float, float]:
    match = _POINT.match(str(text))
    if not match:
        raise InbreastXMLError(f"bad point {text!r} (expected '(x, y)')")
    return float(match.group(1)), float(match.group(2))


def _read_csv(path: Path) -> dict[str, dict[str, str]]:
    """Rows of INbreast.csv by image id (the 'File Name' column)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    if "file name" not in header:
        raise InputError(f"{path}: no 'File Name' column in the header {rows[0]}")
    out = {}
    for row in rows[1:]:
        if len(row) == len(header):
            entry = {h: v.strip() for h, v in zip(header, row)}
            out[entry["file name"]] = entry
    return out


def read_inbreast(root: str | Path) -> DatasetIndex:
    root = Path(root)
    dicom_dir, xml_dir = root / "AllDICOMs", root / "AllXML"
    if not dicom_dir.is_dir():
        raise MissingDataError(f"{root}: no AllDICOMs/ folder (is this the INbreast root?)")
    csv_path = root / "INbreast.csv"
    table = _read_csv(csv_path) if csv_path.exists() else {}
    index = DatasetIndex("inbreast", root, [])
    if not table:
        index.notes.append("INbreast.csv missing or empty: laterality and view taken from the file names")
    for dcm in sorted(dicom_dir.glob("*.dcm")):
        parts = dcm.stem.split("_")
        image_id = parts[0]
        patient = parts[1] if len(parts) > 1 else image_id
        info = table.get(image_id, {})
        laterality = info.get("laterality") or next((p for p in parts[2:] if p in ("L", "R")), "")
        view = info.get("view") or next((p for p in parts[2:] if p in ("CC", "MLO")), "")
        record = MammogramRecord(dcm, image_id, patient, laterality, view, None)
        xml = xml_dir / f"{image_id}.xml"
        if xml.exists():
            try:
                record.mcs, record.clusters = parse_roi_xml(xml)
            except InbreastXMLError as exc:
                index.skipped.append(Skipped(str(xml), f"malformed XML: {exc}"))
                continue
        index.records.append(record)
    return index


def write_roi_xml(path: str | Path, mcs: list[MC], clusters: list[ClusterRegion],
                  pixel_spacing_mm: float = 0.07) -> Path:
    """Write MCs and cluster outlines as an INbreast/OsiriX ROI plist (for fixtures and phantoms)."""
    def roi(name, points, kind):
        points = [(float(x), float(y)) for x, y in points]
        centre = np.mean(points, axis=0)
        return {"Name": name, "NumberOfPoints": len(points), "Type": kind, "IndexInImage": 0,
                "Area": 0.0, "Center": f"({centre[0]:.6f}, {centre[1]:.6f}, 0.000000)",
                "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points],
                "Point_mm": [f"({x * pixel_spacing_mm:.6f}, {y * pixel_spacing_mm:.6f}, 0.000000)"
                             for x, y in points]}
    rois = []
    for mc in mcs:
        if mc.radius_px < 1.5:
            rois.append(roi("Calcification", [(mc.x, mc.y)], ROI_POINT))
        else:
            t = np.linspace(0, 2 * np.pi, 8, endpoint=False)
            rois.append(roi("Calcification", [(mc.x + mc.radius_px * np.cos(a), mc.y + mc.radius_px * np.sin(a))
                                              for a in t], ROI_POLYGON))
    rois += [roi("Cluster", c.outline, ROI_POLYGON) for c in clusters]
    path = Path(path)
    with open(path, "wb") as fh:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}, fh)
    return path


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """INbreast.csv with its header; rows give laterality, view, file name (image id), bi-rads."""
    header = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]
    path = Path(path)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\n")
        writer.writerow(header)
        for r in rows:
            writer.writerow(["removed", "removed", r["laterality"], r["view"], "", r["image_id"],
                             r.get("acr", ""), r.get("birads", "")])
    return path
