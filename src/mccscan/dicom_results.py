"""Scan results as standard DICOM that PACS viewers show: a TID 1500 SR and a Parametric Map.

- SR (Comprehensive 3D SR, TID 1500 Measurement Report): one measurement group per reported
  cluster, its finding "Calcification Cluster" (SCT 129769006), its outline as an SCOORD
  polygon on the source image, its score and MC count as measurements, its MCs as an SCOORD
  multipoint, and the algorithm (TID 4019: name, version, weights SHA-256 and threshold);
  one image-level group (TID 1501) says how many were found, "without findings" included.
- Parametric Map: the cluster score a 1 cm² window centred on each pixel would have (the
  paper's net: its tile probability), float, on the source image's own pixel grid, so a
  viewer overlays it with adjustable opacity.

Scans run at 70 µm; DICOM coordinates are in the source image's pixels with (0, 0) at the
top-left corner of the top-left pixel, so a scan pixel centre (x, y) is at ((x + 0.5)·sx,
(y + 0.5)·sy), sx and sy being source pixels per scan pixel.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from mccscan import __version__
from mccscan.atomic import atomic_write
from mccscan.errors import InputError
from mccscan.clusters import MC, Cluster, window_scores
from mccscan.render import HEATMAP_STRIDE_PX
from mccscan.scan import ScanResult

MANUFACTURER = "mccscan"
SERIES_NUMBER_SR, SERIES_NUMBER_MAP = 9001, 9002  # high numbers keep results after the images in a viewer


def _codes():
    """The coded concepts the SR uses (pydicom's dictionary; imported late: it is large)."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    return {"cluster": codes.SCT.CalcificationCluster, "mc": codes.SCT.IndividualCalcification,
            "score": codes.DCM.Probability, "n_mcs": codes.DCM.NumberOfCalcifications,
            "no_units": Code("1", "UCUM", "no units"), "procedure": Code("71651007", "SCT", "Mammography"),
            "device": codes.cid270.Device, "n_findings": codes.DCM.NumberOfSimilarFindings,
            "summary": codes.DCM.CADProcessingAndFindingsSummary,
            "with_findings": codes.DCM.AllAlgorithmsSucceededWithFindings,
            "without_findings": codes.DCM.AllAlgorithmsSucceededWithoutFindings}


def source_scale(result: ScanResult) -> tuple[float, float]:
    """(sx, sy): source pixels per scan pixel along x (columns) and y (rows)."""
    if result.source_shape is None:
        raise InputError(f"{result.image}: the result does not say the source image's size (an older result); "
                         "scan the image again")
    (rows, cols), (scan_rows, scan_cols) = result.source_shape, result.scan_shape
    return cols / scan_cols, rows / scan_rows


def to_source_xy(xy: np.ndarray, scale: tuple[float, float], edges: bool = False) -> np.ndarray:
    """Scan pixel centres (N, 2) → DICOM image coordinates of the source (N, 2). With `edges`,
    the points are pixel corners (the paper's tile boxes), which need no half-pixel shift."""
    return (np.asarray(xy, np.float64) + (0.0 if edges else 0.5)) * np.asarray(scale)


def from_source_xy(xy: np.ndarray, scale: tuple[float, float], edges: bool = False) -> np.ndarray:
    """Inverse of `to_source_xy`."""
    return np.asarray(xy, np.float64) / np.asarray(scale) - (0.0 if edges else 0.5)


def _algorithm(result: ScanResult):
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=f"mccscan {result.detector} detector", version=__version__,
        parameters=[f"weights {result.model.get('name', '')} sha256 {result.model.get('sha256', '')}",
                    f"cluster threshold {result.threshold:.4f}"])


def _stable_uid(*parts: str) -> str:
    """A UID that is the same for the same parts (the device observer of given weights)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=list(parts))


def _result_uid(result: ScanResult, source, *what: str) -> str:
    """The UID of one part of the results for this image, these weights and this threshold: the
    same scan sent twice (scan --send, then watch; a second click) stores the same instances."""
    return _stable_uid(source.SOPInstanceUID, result.model.get("sha256", ""), f"{result.threshold:.6f}", *what)


def build_sr(result: ScanResult, source):
    """The result's reported clusters as a Comprehensive 3D SR (TID 1500) referencing `source`
    (the scanned image's dataset; pixel data not needed)."""
    import highdicom as hd

    code = _codes()
    scale = source_scale(result)
    image_ref = hd.sr.SourceImageForRegion.from_source_image(source)
    algorithm = _algorithm(result)
    groups = []
    tile_boxes = result.detector == "paper"  # its outlines are tile edges and it counts no MCs
    for c in result.findings:
        outline = to_source_xy(np.asarray(c.outline + c.outline[:1], np.float64), scale,  # closed: last = first
                               edges=tile_boxes)
        measurements = [hd.sr.Measurement(code["score"], float(c.score), code["no_units"], algorithm_id=algorithm)]
        if not tile_boxes:
            measurements.append(hd.sr.Measurement(code["n_mcs"], float(c.n_mcs), code["no_units"],
                                                  algorithm_id=algorithm))
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=_result_uid(result, source, "cluster", str(c.id)),
                                                         identifier=f"cluster {c.id}"),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, outline.astype(np.float32),
                                                image_ref),
            finding_type=code["cluster"], algorithm_id=algorithm, measurements=measurements)
        if c.mcs:
            points = to_source_xy(np.array([[m.x, m.y] for m in c.mcs]), scale).astype(np.float32)
            item = hd.sr.ScoordContentItem(
                code["mc"], hd.sr.GraphicTypeValues.MULTIPOINT if len(points) > 1 else hd.sr.GraphicTypeValues.POINT,
                points if len(points) > 1 else points[0], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
            item.ContentSequence = [hd.sr.SourceImageForRegion.from_source_image(source)]  # the points' image
            group[0].ContentSequence.append(item)
        groups.append(group)
    summary = hd.sr.MeasurementsAndQualitativeEvaluations(  # TID 1501, so "nothing found" is said too
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_result_uid(result, source, "image"), identifier="image"),
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        measurements=[hd.sr.Measurement(code["n_findings"], float(len(groups)), code["no_units"],
                                        algorithm_id=algorithm)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            code["summary"], code["with_findings"] if groups else code["without_findings"])])
    observer = hd.sr.ObserverContext(
        observer_type=code["device"],
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_stable_uid(result.model.get("sha256", ""), __version__), name="mccscan",
            manufacturer_name=MANUFACTURER, model_name=f"mccscan {result.detector} detector"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=code["procedure"], imaging_measurements=[summary, *groups])
    return hd.sr.Comprehensive3DSR(
        evidence=[source], content=report, series_instance_uid=_result_uid(result, source, "sr series"),
        series_number=SERIES_NUMBER_SR, sop_instance_uid=_result_uid(result, source, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True,
        series_description=f"mccscan clusters ({len(groups)} at score >= {result.threshold:.3f})")


def score_map(result: ScanResult, stride_px: int = HEATMAP_STRIDE_PX) -> np.ndarray:
    """A float32 map at the scan resolution: for the cluster detector, the score a cluster in
    the 1 cm² window centred there would have (from every candidate cluster's MCs: the result
    alone, no rescan; the web app's heatmap rescans and counts every MC); for the paper's net,
    each tile's probability."""
    rows, cols = result.scan_shape
    out = np.zeros((rows, cols), np.float32)
    tile = result.tile_size_px
    if result.detector == "mc":
        mcs = [m for c in result.clusters for m in c.mcs]
        cells = window_scores(mcs, (rows, cols), window_px=tile, stride_px=stride_px)
        r0 = tile // 2 - stride_px // 2  # each window's value fills the stride×stride block at its centre
        for i, j in zip(*np.nonzero(cells)):
            out[r0 + i * stride_px:r0 + (i + 1) * stride_px, r0 + j * stride_px:r0 + (j + 1) * stride_px] = cells[i, j]
    else:
        for t in result.tiles:
            if t.probability is not None:
                out[t.y:t.y + tile, t.x:t.x + tile] = t.probability
    return out


def _on_source_grid(values: np.ndarray, source_shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of a scan-resolution map onto the source pixel grid."""
    rows = np.minimum((np.arange(source_shape[0]) + 0.5) * values.shape[0] / source_shape[0], values.shape[0] - 1)
    cols = np.minimum((np.arange(source_shape[1]) + 0.5) * values.shape[1] / source_shape[1], values.shape[1] - 1)
    return np.ascontiguousarray(values[rows.astype(int)][:, cols.astype(int)])


def _on_pixel_grid(source, pixel_spacing_mm: float):
    """A copy of a projection image's header with the geometry the Parametric Map IOD requires.

    A mammogram has no patient frame of reference; the map gets one of its own on the image's
    pixel grid (origin at the top-left pixel, x along rows), and references the image with
    spatial locations preserved, so a viewer lays it over the image pixel for pixel."""
    import copy

    from pydicom.uid import generate_uid

    header = copy.deepcopy(source)
    if "ImagePositionPatient" not in header:  # even where the image names a frame of reference
        header.FrameOfReferenceUID = generate_uid(entropy_srcs=[header.SOPInstanceUID, "mccscan pixel grid"])
        header.PositionReferenceIndicator = ""
        header.ImagePositionPatient = [0.0, 0.0, 0.0]
        header.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if "PixelSpacing" not in header:
        header.PixelSpacing = header.get("ImagerPixelSpacing") or [pixel_spacing_mm] * 2
    header.SliceThickness = header.get("SliceThickness") or 1.0
    return header


def build_parametric_map(result: ScanResult, source):
    """`score_map` on the source image's grid as a float Parametric Map referencing `source`."""
    import highdicom as hd

    code = _codes()
    values = _on_source_grid(score_map(result), result.source_shape)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="SCORE", lut_explanation="mccscan cluster score (0-1) of the 1 cm2 window centred here",
        unit=code["no_units"], value_range=(0.0, 1.0), slope=1.0, intercept=0.0)
    pmap = hd.pm.ParametricMap(
        source_images=[_on_pixel_grid(source, result.source_pixel_spacing_mm)], pixel_array=values,
        series_instance_uid=_result_uid(result, source, "map series"), series_number=SERIES_NUMBER_MAP,
        sop_instance_uid=_result_uid(result, source, "map"), instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"mccscan {result.detector} detector", software_versions=__version__,
        device_serial_number=result.model.get("sha256", "")[:16] or "none",
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="MCC_SCORE", content_description="cluster score of the 1 cm2 window centred on each pixel",
        series_description="mccscan cluster score map")
    laterality = source.get("ImageLaterality") or source.get("Laterality")
    if laterality and "Laterality" not in pmap:  # a paired organ: the series says which side
        pmap.Laterality = laterality
    return pmap


def clusters_from_sr(sr, scale: tuple[float, float]) -> list[Cluster]:
    """The clusters an SR written by `build_sr` holds, back in scan pixels (`scale` as from
    `source_scale`). MC scores are not in the SR; they read back as the cluster's score."""
    import highdicom as hd

    code = _codes()
    report = hd.sr.Comprehensive3DSR.from_dataset(sr)
    clusters = []
    for group in report.content.get_planar_roi_measurement_groups():
        values = {m.name: m.value for m in group.get_measurements()}
        tile_box = code["n_mcs"] not in values  # the paper's net: a box of tile edges, no MCs counted
        outline = from_source_xy(group.roi.value, scale, edges=tile_box)[:-1]  # the polygon was closed
        points = [item for item in group[0].ContentSequence
                  if item.ValueType == "SCOORD" and item.ConceptNameCodeSequence[0].CodeValue == code["mc"].value]
        xy = from_source_xy(np.asarray(points[0].GraphicData, np.float64).reshape(-1, 2), scale) if points else \
            np.zeros((0, 2))
        score = float(values[code["score"]])
        mcs = [MC(float(x), float(y), score) for x, y in xy]
        centre = xy.mean(axis=0) if len(xy) else outline.mean(axis=0)
        clusters.append(Cluster(int(group.tracking_identifier.split()[-1]), float(centre[0]), float(centre[1]),
                                [tuple(map(float, p)) for p in outline], score, int(values.get(code["n_mcs"], 0)), mcs))
    return clusters


TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


def reference_header(path: str | Path):
    """The scanned DICOM's header (no pixel data) with the patient and study attributes the
    results must repeat; ones a source lacks (a research export) are added empty, as DICOM
    allows. A file that is no DICOM image is refused by name."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InputError(f"{path}: not a DICOM file, so no DICOM SR or map can reference it") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not header.get(keyword):
            raise InputError(f"{path}: the DICOM has no {keyword}, so no SR or map can reference it")
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def dicom_results_paths(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Where the SR and the map of a scan named `stem` are kept."""
    return {"sr": Path(out_dir) / f"{stem}.sr.dcm", "pmap": Path(out_dir) / f"{stem}.pmap.dcm"}


def build_dicom_results(result: ScanResult, source: str | Path) -> dict:
    """The SR and the map (pydicom datasets) for a scan of the DICOM file `source`."""
    header = reference_header(source)
    with warnings.catch_warnings():  # the source's patient name is copied as it is, odd or not: nothing to act on
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        return {"sr": build_sr(result, header), "pmap": build_parametric_map(result, header)}


def save_dicom_results(datasets: dict, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Write what `build_dicom_results` made as <stem>.sr.dcm and <stem>.pmap.dcm."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = dicom_results_paths(out_dir, stem)
    for key, dataset in datasets.items():
        atomic_write(paths[key], lambda fh, ds=dataset: ds.save_as(fh, enforce_file_format=True))
    return paths


def write_dicom_results(result: ScanResult, source: str | Path, out_dir: str | Path, stem: str) -> dict[str, Path]:
    """Write <stem>.sr.dcm and <stem>.pmap.dcm for a scan of the DICOM file `source`; both are
    built before either is written, so a failure leaves neither."""
    return save_dicom_results(build_dicom_results(result, source), out_dir, stem)
