"""DICOM SR and Parametric Map: valid by dicom3tools' dciodvfy, and they hold what the JSON holds."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from mccscan.cli import main
from mccscan.dicom_results import clusters_from_sr, score_map, source_scale, write_dicom_results
from mccscan.io import write_dicom
from mccscan.scan import scan_file
from mccscan.weights import load_detector


def dciodvfy_errors(path) -> list[str]:
    """The error lines of dicom3tools' IOD validator (Debian package dicom3tools)."""
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy is missing: apt-get install dicom3tools (.ci/run does)"
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


SOURCE_SPACING_MM = 0.1


@pytest.fixture(scope="module")
def phantom():
    from mccscan.datasets.phantom import make_phantom

    return make_phantom(230_003, size="small", n_clusters=3)


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, phantom):
    """A phantom stored at 0.1 mm (so SR coordinates must be scaled to the source grid), scanned."""
    from mccscan.io import resample_to_spacing

    folder = tmp_path_factory.mktemp("dicom_results")
    stored = resample_to_spacing(phantom.image, (0.07, 0.07), SOURCE_SPACING_MM)
    path = write_dicom(folder / "case.dcm", np.round(stored * 4095).astype(np.uint16), bits_stored=12,
                       pixel_spacing_mm=SOURCE_SPACING_MM, laterality="L", view="CC")
    result, _ = scan_file(path, load_detector("mc"))
    return path, result, write_dicom_results(result, path, folder / "out", "case")


def test_sr_and_parametric_map_validate_with_dciodvfy(scanned, tmp_path):
    source, result, written = scanned
    assert len(result.findings) >= 2
    assert dciodvfy_errors(written["sr"]) == []
    assert dciodvfy_errors(written["pmap"]) == []
    nothing = write_dicom_results(result.relabel(1.01), source, tmp_path, "none")  # no cluster reported
    assert clusters_from_sr(pydicom.dcmread(nothing["sr"]), source_scale(result)) == []
    assert dciodvfy_errors(nothing["sr"]) == []


def test_sr_reads_back_as_the_json_clusters(scanned):
    source, result, written = scanned
    sr = pydicom.dcmread(written["sr"])
    image = pydicom.dcmread(source, stop_before_pixels=True)
    assert sr.StudyInstanceUID == image.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    back = clusters_from_sr(sr, source_scale(result))
    assert [(c.id, c.score, c.n_mcs) for c in back] == [(c.id, c.score, c.n_mcs) for c in result.findings]
    for mine, read in zip(result.findings, back):
        np.testing.assert_allclose(read.outline, mine.outline, atol=1e-3)
        np.testing.assert_allclose([[m.x, m.y] for m in read.mcs], [[m.x, m.y] for m in mine.mcs], atol=1e-3)
    texts = _text_items(sr.ContentSequence)
    assert texts["Algorithm Parameters"][0].endswith(result.model["sha256"])
    assert texts["Tracking Identifier"] == ["image"] + [f"cluster {c.id}" for c in result.findings]


def _text_items(items, found=None) -> dict[str, list[str]]:
    """Every TEXT content item of an SR tree, by concept name."""
    found = {} if found is None else found
    for item in items:
        if "TextValue" in item:
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
        _text_items(item.get("ContentSequence", []), found)
    return found


def test_sr_points_are_where_the_phantoms_mcs_are_on_the_stored_image(scanned, phantom):
    """Independent of the code's mapping: a true MC at 70 µm pixel (x, y) is at (x + ½)·0.07 mm
    from the image corner, so at (x + ½)·0.07 / 0.1 in the stored image's DICOM coordinates."""
    _, result, written = scanned
    truth = np.array([[(m.x + 0.5) * 0.07 / SOURCE_SPACING_MM, (m.y + 0.5) * 0.07 / SOURCE_SPACING_MM]
                      for m in phantom.mcs])
    points = np.concatenate([_mc_points(group) for group in _groups(pydicom.dcmread(written["sr"]))])
    assert len(points) == sum(c.n_mcs for c in result.findings)
    offset = points - truth[np.argmin(np.hypot(*(points[:, None, :] - truth[None]).transpose(2, 0, 1)), axis=1)]
    at_an_mc = np.hypot(*offset.T) < 2.0  # source pixels (0.1 mm); the rest are specks the detector took for MCs
    assert np.mean(at_an_mc) > 0.8 and np.median(np.hypot(*offset[at_an_mc].T)) < 1.0
    assert np.hypot(*offset[at_an_mc].mean(0)) < 0.3  # no half-pixel shift: a wrong pixel-centre convention is ≥ 0.35


def _groups(sr) -> list:
    """The TID 1410 groups (one per cluster) of the SR's Imaging Measurements container."""
    container = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    return [g for g in container.ContentSequence if any(i.ValueType == "SCOORD" for i in g.ContentSequence)]


def _mc_points(group) -> np.ndarray:
    item = next(i for i in group.ContentSequence if i.ValueType == "SCOORD" and i.GraphicType != "POLYLINE")
    return np.asarray(item.GraphicData, np.float64).reshape(-1, 2)


def test_a_frame_of_reference_without_geometry_and_the_papers_net_still_give_valid_results(scanned, tmp_path):
    """An MG may name a frame of reference yet have no plane geometry; the paper's net counts no MCs."""
    source, _, _ = scanned
    ds = pydicom.dcmread(source)
    ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "for.dcm")
    paper = load_detector("paper")
    result, _ = scan_file(tmp_path / "for.dcm", paper, threshold=0.0)
    assert result.findings
    written = write_dicom_results(result, tmp_path / "for.dcm", tmp_path, "for")
    assert dciodvfy_errors(written["sr"]) == [] and dciodvfy_errors(written["pmap"]) == []
    back = clusters_from_sr(pydicom.dcmread(written["sr"]), source_scale(result))
    for mine, read in zip(result.findings, back):  # tile boxes: edges, not pixel centres
        np.testing.assert_allclose(read.outline, mine.outline, atol=1e-3)
        assert read.n_mcs == 0


def test_parametric_map_lies_on_the_source_grid_and_peaks_at_the_clusters(scanned):
    source, result, written = scanned
    pmap = pydicom.dcmread(written["pmap"])
    image = pydicom.dcmread(source, stop_before_pixels=True)
    assert (pmap.Rows, pmap.Columns) == (image.Rows, image.Columns)
    assert pmap.Laterality == "L"
    values = pmap.pixel_array.astype(np.float32)
    sx, sy = source_scale(result)
    for c in result.findings:  # the map is high where each reported cluster is
        assert values[int((c.y + 0.5) * sy), int((c.x + 0.5) * sx)] >= 0.5 * c.score
    assert values.max() <= max(c.score for c in result.clusters) + 1e-6
    assert float((values > 0).mean()) < 0.2  # and zero over most of the breast
    assert score_map(result).shape == result.scan_shape


def test_scan_dicom_flag_writes_sr_and_map_and_refuses_a_png_by_name(tmp_path, scanned, capsys):
    from PIL import Image

    source, result, _ = scanned
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "flat.png")
    code = main(["scan", str(source), str(tmp_path / "flat.png"), "--dicom", "--out", str(tmp_path / "out")])
    assert code == 0  # the PNG's other outputs are written; it just has no SR
    assert (tmp_path / "out" / "case.sr.dcm").exists() and (tmp_path / "out" / "case.pmap.dcm").exists()
    assert not (tmp_path / "out" / "flat.sr.dcm").exists()
    err = capsys.readouterr().err
    assert "warning: no DICOM SR or map" in err and "flat.png: not a DICOM file" in err
    assert result.laterality == "L" and result.view == "CC"
