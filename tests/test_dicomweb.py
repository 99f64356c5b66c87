"""Scanning through a real PACS: Debian's Orthanc with its DICOMweb plugin, on loopback."""

import json
import threading
import time

import numpy as np
import pydicom
import pytest

from mccscan.cli import main
from mccscan.dicom_results import clusters_from_sr, source_scale
from mccscan.dicomweb import STATE_FILE, PacsError, WatchState, connect, find_images, watch
from mccscan.io import write_dicom
from mccscan.scan import ScanResult
from mccscan.weights import load_detector

WAIT_S = 60  # longest wait for the watcher to handle an image


def phantom_dicom(folder, small_phantom, name: str):
    """The small phantom as a new MG instance (fresh UIDs on every write)."""
    return write_dicom(folder / f"{name}.dcm", small_phantom.to_uint16(), bits_stored=14, pixel_spacing_mm=0.07,
                       laterality="L", view="CC")


def store(url: str, *paths) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in paths]
    connect(url).store_instances(datasets)
    return datasets


def modalities_in_study(url: str, study: str) -> list[str]:
    """The modality of every instance of a study in the PACS, sorted."""
    return sorted(item["00080060"]["Value"][0] for item in connect(url).search_for_instances(study))


def test_scan_a_study_in_the_pacs_and_send_the_results_back(pacs, small_phantom, tmp_path, capsys):
    (image,) = store(pacs, phantom_dicom(tmp_path, small_phantom, "a"))
    code = main(["scan", "--dicomweb", pacs, "--study", image.StudyInstanceUID, "--send", "--out", str(tmp_path / "o")])
    assert code == 0, capsys.readouterr().err
    assert modalities_in_study(pacs, image.StudyInstanceUID) == ["MG", "OT", "SR"]  # image, map, report
    client = connect(pacs)
    (sr_ref,) = [r for r in client.search_for_instances(image.StudyInstanceUID, search_filters={"Modality": "SR"})]
    sr = client.retrieve_instance(image.StudyInstanceUID, sr_ref["0020000E"]["Value"][0],
                                  sr_ref["00080018"]["Value"][0])
    result = ScanResult.from_dict(json.loads((tmp_path / "o" / f"{image.SOPInstanceUID}.json").read_text()))
    assert len(result.findings) >= 1
    back = clusters_from_sr(sr, source_scale(result))
    assert [(c.id, c.score, c.n_mcs) for c in back] == [(c.id, c.score, c.n_mcs) for c in result.findings]
    assert "stored SR" in capsys.readouterr().out
    # the same scan sent again, then a watch that scans what the PACS already holds: still one SR and one map
    assert main(["scan", "--dicomweb", pacs, "--study", image.StudyInstanceUID, "--send",
                 "--out", str(tmp_path / "o2")]) == 0
    counts = watch(pacs, load_detector("mc"), tmp_path / "w", once=True, from_start=True, log=lambda line: None)
    assert counts.scanned >= 1
    assert modalities_in_study(pacs, image.StudyInstanceUID) == ["MG", "OT", "SR"]


def test_only_mammograms_are_found(pacs, small_phantom, tmp_path):
    ct = pydicom.dcmread(phantom_dicom(tmp_path, small_phantom, "ct"))
    ct.Modality = "CT"
    ct.save_as(tmp_path / "ct.dcm")
    store(pacs, tmp_path / "ct.dcm")
    assert find_images(connect(pacs), study=ct.StudyInstanceUID) == []
    with pytest.raises(ValueError, match="say which images"):
        find_images(connect(pacs))


def test_watch_scans_each_new_image_once_skips_a_bad_one_and_resumes(pacs, small_phantom, tmp_path):
    loaded = load_detector("mc")
    out, lines, stop = tmp_path / "watch", [], threading.Event()
    watch(pacs, loaded, out, once=True, log=lines.append)  # a first watch starts after what is already there
    state = WatchState.load(out / STATE_FILE)
    seen_before, start = dict(state.images), state.since
    assert seen_before == {} and start > 0
    runner = threading.Thread(target=watch, args=(pacs, loaded, out),
                              kwargs=dict(poll_s=0.2, stop=stop, log=lines.append), daemon=True)
    runner.start()
    try:
        bad = write_dicom(tmp_path / "tiny.dcm", np.zeros((40, 40), np.uint16), pixel_spacing_mm=0.07)
        (tiny,) = store(pacs, bad)  # a 40×40 "mammogram": refused, logged, skipped
        (good,) = store(pacs, phantom_dicom(tmp_path, small_phantom, "new"))
        deadline = time.monotonic() + WAIT_S
        while good.SOPInstanceUID not in WatchState.load(out / STATE_FILE).images:
            assert runner.is_alive() and time.monotonic() < deadline, lines
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(WAIT_S)
    state = WatchState.load(out / STATE_FILE)
    assert state.images[good.SOPInstanceUID] == "done"
    assert state.images[tiny.SOPInstanceUID].startswith("failed:") and "smaller than one" in \
        state.images[tiny.SOPInstanceUID]
    assert set(state.images) - set(seen_before) == {good.SOPInstanceUID, tiny.SOPInstanceUID}
    assert modalities_in_study(pacs, good.StudyInstanceUID) == ["MG", "OT", "SR"]
    assert any(line.startswith(f"failed  {tiny.SOPInstanceUID}") for line in lines)
    again = watch(pacs, loaded, out, once=True, log=lines.append)  # a restart scans nothing twice
    assert (again.scanned, again.failed) == (0, 0)
    state.since = start  # even when the feed is read again, each image handled is recognised
    state.save(out / STATE_FILE)
    replay = watch(pacs, loaded, out, once=True, log=lines.append)
    assert (replay.scanned, replay.failed, replay.skipped) == (0, 0, 2)
    assert modalities_in_study(pacs, good.StudyInstanceUID) == ["MG", "OT", "SR"]


def test_a_busy_pacs_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    """A PACS that answers 503 however often it is asked (dicomweb-client retries, then gives up)."""
    import http.server

    from components import free_port

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/dicom-web"
        with pytest.raises(PacsError, match="HTTP 503"):
            find_images(connect(url), study="1.2.3")
        assert main(["scan", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path)]) == 2
        assert "failed after 3 attempts (HTTP 503)" in capsys.readouterr().err
    finally:
        server.shutdown()


def test_an_unreachable_pacs_is_a_clear_error(tmp_path, capsys):
    from components import free_port

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PacsError, match="127.0.0.1"):
        find_images(connect(url), study="1.2.3")
    assert main(["scan", "--dicomweb", url, "--study", "1.2.3", "--out", str(tmp_path)]) == 2
    assert "QIDO-RS search failed" in capsys.readouterr().err


def test_a_pacs_failure_mid_image_is_retried_not_recorded_as_the_images_fault(pacs, small_phantom, tmp_path,
                                                                               monkeypatch):
    import mccscan.dicomweb as dicomweb

    loaded, out = load_detector("mc"), tmp_path / "watch"
    watch(pacs, loaded, out, once=True, log=lambda line: None)  # catch up with earlier tests
    (image,) = store(pacs, phantom_dicom(tmp_path, small_phantom, "blip"))
    real = dicomweb.scan_remote_image

    def store_fails(*args, **kwargs):
        raise PacsError("STOW-RS store failed with HTTP 503")

    monkeypatch.setattr(dicomweb, "scan_remote_image", store_fails)
    with pytest.raises(PacsError):  # with `once`, an unreachable PACS ends the run (a service waits instead)
        watch(pacs, loaded, out, once=True, log=lambda line: None)
    assert image.SOPInstanceUID not in WatchState.load(out / STATE_FILE).images
    monkeypatch.setattr(dicomweb, "scan_remote_image", real)
    again = watch(pacs, loaded, out, once=True, log=lambda line: None)
    assert again.scanned == 1 and WatchState.load(out / STATE_FILE).images[image.SOPInstanceUID] == "done"
