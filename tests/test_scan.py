import csv
import io
import json

import numpy as np
import pytest
import torch

from mccscan.io import MammogramError
from mccscan.paper import build_model
from mccscan.scan import ScanResult, iter_row_scores, scan_file, scan_image, score_tiles
from mccscan.weights import LoadedModel


def per_patch_reference(model, image, tile=144):
    """The paper's way: every tile cut out and passed through the model on its own."""
    rows, cols = -(-image.shape[0] // tile), -(-image.shape[1] // tile)
    padded = np.zeros((rows * tile, cols * tile), np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    out = np.zeros((rows, cols), np.float32)
    with torch.no_grad():
        for r in range(rows):
            for c in range(cols):
                patch = torch.from_numpy(padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile].copy())
                out[r, c] = torch.sigmoid(model(patch[None, None]))[0]
    return out


def test_convolutional_scan_equals_per_patch_inference(small_phantom, random_model):
    # a model with a strong bias so probabilities sit mid-range where errors would show
    with torch.no_grad():
        random_model.model.dense.bias.fill_(-float(random_model.model.dense.weight.sum()) * 0.05)
    result = scan_image(small_phantom.image, random_model, min_breast_fraction=0.0)
    reference = per_patch_reference(random_model.model, small_phantom.image)
    grid = result.probability_grid()
    assert grid.shape == reference.shape and not np.isnan(grid).any()
    assert np.abs(grid - reference).max() < 1e-5
    assert 0.01 < np.median(grid) < 0.99


@pytest.mark.parametrize("engine", ["batched", "patch"])
def test_all_engines_agree(small_phantom, random_model, engine):
    a = scan_image(small_phantom.image, random_model)
    b = scan_image(small_phantom.image, random_model, engine=engine)
    np.testing.assert_allclose(a.probability_grid(), b.probability_grid(), atol=1e-5)
    assert [t.peak for t in a.tiles] == [t.peak for t in b.tiles]


def test_pooling_model_falls_back_to_batched_tiles(small_phantom):
    torch.manual_seed(1)
    loaded = LoadedModel(build_model("cl2-k5-6x16-mp2").eval(), "pool", "0" * 64, {})
    conv = scan_image(small_phantom.image, loaded)
    reference = per_patch_reference(loaded.model, small_phantom.image)
    mask = ~np.isnan(conv.probability_grid())
    np.testing.assert_allclose(conv.probability_grid()[mask], reference[mask], atol=1e-5)


def test_tiles_in_raster_order_with_counts(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model, threshold=0.5)
    positions = [(t.row, t.col) for t in result.tiles]
    assert positions == sorted(positions)
    assert all(t.x == t.col * 144 and t.y == t.row * 144 for t in result.tiles)
    assert sum(result.counts.values()) == len(result.tiles) == 10 * 8
    assert result.counts["background"] == sum(t.breast_fraction < 0.3 for t in result.tiles)
    for t in result.tiles:
        assert (t.probability is None) == (t.label == "background")
        if t.probability is not None:
            assert t.label == ("mcc" if t.probability >= 0.5 else "normal")
            assert t.x <= t.peak[0] < t.x + 144 and t.y <= t.peak[1] < t.y + 144


def test_relabel_changes_labels_not_scores(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model)
    probs = sorted(t.probability for t in result.tiles if t.probability is not None)
    middle = probs[len(probs) // 2]
    relabelled = result.relabel(middle)
    assert relabelled.counts["mcc"] == sum(p >= middle for p in probs)
    np.testing.assert_array_equal(relabelled.probability_grid(), result.probability_grid())


def test_json_and_csv_schema(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model, name="x.png")
    data = json.loads(result.to_json())
    for key in ("image", "pixel_spacing_mm", "tile_size_px", "threshold", "counts", "tiles", "model"):
        assert key in data
    assert set(data["counts"]) == {"mcc", "normal", "background"}
    assert set(data["model"]) >= {"name", "sha256"}
    assert set(data["tiles"][0]) >= {"row", "col", "x", "y", "probability", "label"}
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == len(result.tiles) and rows[0]["image"] == "x.png"


def test_scan_file_resamples_and_reports_bad_files(tmp_path, small_phantom, random_model):
    paths = small_phantom.write(tmp_path, formats=("dcm", "png"))
    result, image = scan_file(paths["dcm"], random_model)
    assert image.shape == small_phantom.image.shape and not result.spacing_assumed
    result, image = scan_file(paths["png"], random_model, pixel_spacing_mm=0.035)
    assert image.shape == (650, 550) and result.source_pixel_spacing_mm == 0.035
    result, _ = scan_file(paths["png"], random_model)
    assert result.spacing_assumed and "assumed 0.07 mm" in result.warnings[0]
    assert "with --pixel-spacing if this is wrong" in result.warnings[0]  # the command line's fix, by default
    (tmp_path / "bad.png").write_text("no image")
    with pytest.raises(MammogramError, match="bad.png"):
        scan_file(tmp_path / "bad.png", random_model)


def test_empty_mask_scores_nothing_but_visits_every_row(small_phantom, random_model):
    scanned = np.zeros((10, 8), bool)
    rows = [r for r, scores in iter_row_scores(random_model.model, small_phantom.image, scanned)
            if len(scores.probabilities) == 0]
    assert rows == list(range(10))
    assert len(score_tiles(random_model.model, small_phantom.image, scanned).probabilities) == 0


def test_on_row_streams_each_row_in_raster_order_as_in_the_result(small_phantom, random_model):
    rows = []
    result = scan_image(small_phantom.image, random_model, on_row=rows.append)
    assert [row[0].row for row in rows] == list(range(len(rows)))
    assert all([t.col for t in row] == list(range(len(row))) for row in rows)
    assert [t for row in rows for t in row] == result.tiles


def test_result_round_trips_through_json(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model)
    again = ScanResult.from_dict(json.loads(result.to_json()))
    assert again.to_json() == result.to_json()


def test_same_clusters_from_16_bit_dicom_8_bit_windowed_png_gamma_lut_and_a_burned_in_label(tmp_path):
    """Whatever the bit depth, window or contrast curve an export used, the clusters are the same."""
    from PIL import Image

    from mccscan.datasets.phantom import make_phantom
    from mccscan.io import write_dicom
    from mccscan.weights import load_detector

    ph = make_phantom(230_003, size="small", n_clusters=3)  # a seed no training uses; 3 visible clusters
    image, breast = ph.image, ph.breast_mask
    # the PNG's window cuts the darkest 1% of the breast; a window that also clips its top
    # would saturate MCs in the densest tissue, for any reader (one cluster here sits there)
    lo, hi = np.percentile(image[breast], [1, 100])
    labelled = image.copy()
    labelled[40:120, -300:-60] = 1.0  # a burned-in view label at full white …
    labelled[60:64, -200:-180] = 0.0
    files = {
        "dicom16": write_dicom(tmp_path / "a.dcm", np.round(image * 65535).astype(np.uint16), bits_stored=16,
                               pixel_spacing_mm=0.07),
        "png8_window": tmp_path / "b.png",
        "gamma": write_dicom(tmp_path / "c.dcm", np.round(image ** 0.6 * 65535).astype(np.uint16), bits_stored=16,
                             pixel_spacing_mm=0.07),
        "label": write_dicom(tmp_path / "d.dcm", np.round(labelled * 4095).astype(np.uint16), bits_stored=12,
                             pixel_spacing_mm=0.07),
    }
    Image.fromarray(np.round(np.clip((image - lo) / (hi - lo), 0, 1) * breast * 255).astype(np.uint8)).save(
        files["png8_window"])
    loaded = load_detector("mc")
    found = {name: scan_file(path, loaded)[0].findings for name, path in files.items()}
    reference = found["dicom16"]
    assert len(reference) >= 2
    for name, clusters in found.items():
        assert_same_clusters(clusters, reference, name)


def assert_same_clusters(found, reference, name):
    """As many clusters, each centred inside a reference cluster's outline, and every reference
    cluster so found: the FROC's matching rule with no margin. A faint MC at a cluster's edge
    may come and go with the encoding and move its centre by a millimetre or two."""
    from mccscan.metrics import compare_clusters

    comparison = compare_clusters(found, [r.outline for r in reference], margin_px=0)
    assert len(found) == len(reference), (name, [(c.x, c.y, c.score) for c in found])
    assert all(comparison.found) and comparison.false_reported == 0, (name, comparison.summary())


def _compressed_copies(source, folder):
    """The same DICOM in every compressed transfer syntax a scanner sends: pydicom's encoders
    (RLE, JPEG-LS, JPEG 2000) and dcmtk's dcmcjpeg for JPEG Lossless, which pydicom cannot write."""
    import subprocess

    import pydicom
    from pydicom import uid

    copies = {}
    for syntax, options in [(uid.RLELossless, {}), (uid.JPEGLSLossless, {}), (uid.JPEG2000Lossless, {}),
                            (uid.JPEGLSNearLossless, {"jls_error": 2}), (uid.JPEG2000, {"j2k_cr": [10]})]:
        ds = pydicom.dcmread(source)
        ds.compress(syntax, **options)
        copies[syntax.name] = folder / f"{syntax.name.split()[0]}-{len(copies)}.dcm"
        ds.save_as(copies[syntax.name])
    for name, flags in [("JPEG Lossless SV1", ["+e1"]), ("JPEG Lossless process 14", ["+el", "+sv", "6"])]:
        copies[name] = folder / f"jpeg-lossless-{len(copies)}.dcm"
        subprocess.run(["dcmcjpeg", *flags, str(source), str(copies[name])], check=True, capture_output=True)
    return copies


def test_every_compressed_transfer_syntax_gives_the_same_clusters(tmp_path):
    """A phantom stored by a scanner in any compressed syntax: lossless ones decode to the same
    pixels, and every one (lossy JPEG 2000 at 10:1 and near-lossless JPEG-LS included) gives
    the clusters of the uncompressed file."""
    import pydicom
    from pydicom import uid

    from mccscan.datasets.phantom import make_phantom
    from mccscan.io import read_mammogram, write_dicom
    from mccscan.weights import load_detector

    ph = make_phantom(230_003, size="small", n_clusters=3)
    source = write_dicom(tmp_path / "plain.dcm", np.round(ph.image * 4095).astype(np.uint16), bits_stored=12,
                         pixel_spacing_mm=0.07)
    copies = _compressed_copies(source, tmp_path)
    loaded = load_detector("mc")
    reference = scan_file(source, loaded)[0].findings
    plain = read_mammogram(source).image
    assert len(reference) >= 2
    lossy = {uid.JPEGLSNearLossless, uid.JPEG2000}
    for name, path in copies.items():
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax.is_compressed, name
        found = scan_file(path, loaded)[0].findings
        if syntax not in lossy:  # the same pixels, so the very same clusters
            assert np.array_equal(read_mammogram(path).image, plain), name
            assert [c.to_dict() for c in found] == [c.to_dict() for c in reference], name
        assert_same_clusters(found, reference, name)


def test_weights_whose_card_names_no_detector_settings_scan_with_the_first_ones_and_todays_coarse_rule():
    from mccscan.mcdetect import COARSE_MM, FIRST_DETECTOR_SETTINGS
    from mccscan.models import MCCNet, MCNet
    from mccscan.scan import detector_options

    def options(point, model=MCNet()):
        return detector_options(LoadedModel(model, "mc", "", {"operating_point": point}))

    first = {**FIRST_DETECTOR_SETTINGS, "coarse_mm": COARSE_MM}
    assert options({}) == first == {"mc_floor": 0.5, "candidate_snr": 3.5, "wide_sigma_px": 6.0, "coarse_mm": 1.0}
    assert options({"mc_floor": 0.5, "candidate_snr": 3.5}) == first
    assert options({"mc_floor": 0.8, "candidate_snr": 3.0, "wide_sigma_px": 3.0, "coarse_mm": 0}) == {
        "mc_floor": 0.8, "candidate_snr": 3.0, "wide_sigma_px": 3.0, "coarse_mm": 0}
    assert options({"mc_floor": 0.8}, MCCNet()) == {}  # the paper's net on tiles has none


def test_out_of_range_fraction_or_threshold_is_refused(small_phantom, random_model):
    for kwargs in ({"min_breast_fraction": 2.0}, {"min_breast_fraction": -0.1}, {"threshold": 1.5}):
        [(name, value)] = kwargs.items()
        with pytest.raises(ValueError, match=f"{name} must lie in \\[0, 1\\], got {value}"):
            scan_image(small_phantom.image, random_model, **kwargs)


def test_no_breast_warning_only_when_there_is_none(random_model):
    """The MC detector finds MCs in all the breast whatever tiles the map shows, so a breast
    that covers no tile by the fraction asked must not make it say that nothing was
    scanned; a blank image still does."""
    from mccscan.datasets.phantom import make_phantom
    from mccscan.weights import load_detector

    loaded = load_detector("mc")
    ph = make_phantom(seed=7, size="small", n_clusters=3)  # the demo's phantom
    x, y = int(ph.clusters[0].x), int(ph.clusters[0].y)
    image = np.zeros((432, 432), np.float32)  # a disc of its tissue around a cluster, 200 px across:
    disc = np.hypot(*np.mgrid[-216:216, -216:216]) < 100  # it covers no 144-px tile whole
    image[disc] = ph.image[y - 216:y + 216, x - 216:x + 216][disc]
    small = scan_image(image, loaded, min_breast_fraction=1.0)
    assert len(small.clusters) == 1 and not small.warnings
    tiles_only = scan_image(image, random_model, min_breast_fraction=1.0)  # the paper's net scans tiles, so none
    assert tiles_only.warnings == ["image: the breast covers no tile by 1; nothing was scanned"]
    blank = scan_image(np.zeros((400, 400), np.float32), loaded)
    assert any("no breast found" in w for w in blank.warnings) and not blank.clusters
