"""CBIS-DDSM calcifications: case-description CSVs plus TCIA's DICOM folders.

`calc_case_description_train_set.csv` and `…_test_set.csv` have one row per abnormality:
`patient_id`, `left or right breast`, `image view`, `abnormality id`, `calc type`,
`calc distribution`, `pathology`, `image file path`, `ROI mask file path`. Rows of one
mammogram are grouped; each ROI mask becomes a cluster region (any calc distribution:
clustered, segmental, linear, regional, diffuse). There are no individual MC points.

Paths: the CSV's path is tried under the root as written; TCIA downloads often rename
the UID folders, so otherwise the DICOMs under the path's first folder are used (the
ROI folder holds the mask and a cropped patch: the mask is the one the size of the
mammogram). The DICOMs carry no pixel spacing, so the caller gives it (DDSM scanners:
0.050 mm Lumisys, 0.0435 mm Howtek, 0.042 mm DBA); it is recorded in the dataset card.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mccscan.datasets.base import ClusterRegion, DatasetIndex, MammogramRecord, Skipped
from mccscan.errors import InputError, MissingDataError

CSV_NAMES = ("calc_case_description_train_set.csv", "calc_case_description_test_set.csv")
_REQUIRED = ("patient_id", "left or right breast", "image view", "image file path", "roi mask file path")


def _dicoms_under(root: Path, csv_path: str) -> list[Path]:
    exact = root / csv_path.strip()
    if exact.is_file():
        return [exact]
    top = csv_path.strip().split("/")[0]
    for base in (root, root / "CBIS-DDSM"):
        if (base / top).is_dir():
            return sorted((base / top).rglob("*.dcm"))
    return []


def _dicom_shape(path: Path) -> tuple[int, int] | None:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # noqa: BLE001 — an unreadable candidate is just not the mask
        return None


DDSM_PIXEL_SPACING_MM = 0.05  # the Lumisys scanners' (Howtek 0.0435, DBA 0.042); used for the films here


def read_cbis_ddsm(root: str | Path, pixel_spacing_mm: float | None) -> DatasetIndex:
    root = Path(root)
    if pixel_spacing_mm is None or not pixel_spacing_mm > 0:
        raise InputError("CBIS-DDSM DICOMs carry no pixel spacing: give it with --pixel-spacing "
                         "(DDSM scanners: 0.050 Lumisys, 0.0435 Howtek, 0.042 DBA)")
    csv_paths = [root / name for name in CSV_NAMES if (root / name).exists()]
    if not csv_paths:
        raise MissingDataError(f"{root}: none of {', '.join(CSV_NAMES)} found")
    index = DatasetIndex("cbis-ddsm", root, [], notes=[
        f"pixel spacing {pixel_spacing_mm} mm given by the user (the DICOMs carry none)",
        "every calcification ROI mask is a cluster region; CBIS-DDSM has no individual MC points"])
    groups: dict[str, dict] = {}
    for csv_path in csv_paths:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            missing = [f for f in _REQUIRED if f not in fields]
            if missing:
                raise InputError(f"{csv_path}: missing columns {missing}")
            for line, row in enumerate(reader, start=2):
                get = {k: (row[v] or "").strip() for k, v in fields.items()}
                key = get["image file path"].split("/")[0]
                group = groups.setdefault(key, {"row": get, "masks": [], "where": f"{csv_path.name}:{line}"})
                group["masks"].append((get["roi mask file path"], f"{csv_path.name}:{line}"))
    for key in sorted(groups):
        group, get = groups[key], groups[key]["row"]
        images = _dicoms_under(root, get["image file path"])
        if len(images) != 1:
            index.skipped.append(Skipped(group["where"], f"mammogram DICOM for {key} not found"
                                         if not images else f"{len(images)} DICOMs for {key}, expected 1"))
            continue
        shape = _dicom_shape(images[0])
        if shape is None:
            index.skipped.append(Skipped(str(images[0]), "not a readable DICOM"))
            continue
        record = MammogramRecord(images[0], key, get["patient_id"],
                                 {"LEFT": "L", "RIGHT": "R"}.get(get["left or right breast"].upper(), ""),
                                 get["image view"].upper(), pixel_spacing_mm)
        for mask_path, where in group["masks"]:
            masks = [p for p in _dicoms_under(root, mask_path) if _dicom_shape(p) == shape]
            if not masks:
                index.skipped.append(Skipped(where, f"ROI mask of {key} not found (no DICOM the size of the image)"))
                record = None
                break
            record.clusters.append(ClusterRegion(mask_path=masks[0]))
        if record is not None:
            index.records.append(record)
    return index
