"""Time from a new mammogram in the PACS to its SR stored back, with `mccscan watch`.

    python benchmarks/pacs_latency.py [--images 10] [--poll 1.0] [--screenshot docs/orthanc-study.png]

Starts a real Orthanc (Debian's, with its DICOMweb plugin) on loopback, as the tests do, and
a watcher on it. Then, one at a time, stores a full-field phantom (3328×4084, 14 bit) with
STOW-RS and waits until the watcher's SR is in the image's study (QIDO-RS every 50 ms).
Prints each latency and the median, beside the scan time the watcher logged. With
--screenshot, Orthanc's own web page of the last study (image, SR and map series) is saved
through Debian's chromium.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from components import orthanc  # noqa: E402 — the tests' real-Orthanc launcher

from mccscan.datasets.phantom import make_phantom  # noqa: E402
from mccscan.dicomweb import connect, watch  # noqa: E402
from mccscan.io import write_dicom  # noqa: E402
from mccscan.weights import load_detector  # noqa: E402

WAIT_S = 120


def study_page(dicomweb_url: str, study_uid: str, out: str) -> None:
    """Screenshot Orthanc Explorer's page of a study (Debian's chromium, never a downloaded one)."""
    import httpx
    from playwright.sync_api import sync_playwright

    root = dicomweb_url.rsplit("/dicom-web", 1)[0]
    (study,) = httpx.post(f"{root}/tools/lookup", content=study_uid).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 560})
        page.goto(f"{root}/app/explorer.html#study?uuid={study['ID']}")
        page.wait_for_selector("text=mccscan cluster score map")
        page.screenshot(path=out)
        browser.close()
    print(f"Orthanc's page of study {study_uid} → {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--poll", type=float, default=1.0, help="the watcher's poll interval (its default: 1 s)")
    parser.add_argument("--screenshot", help="PNG of Orthanc Explorer showing the last study")
    args = parser.parse_args()
    loaded = load_detector("mc")
    with tempfile.TemporaryDirectory() as tmp, orthanc(Path(tmp) / "orthanc") as url:
        client = connect(url)
        lines: list[str] = []
        stop = threading.Event()
        runner = threading.Thread(target=watch, args=(url, loaded, Path(tmp) / "watch"),
                                  kwargs=dict(poll_s=args.poll, stop=stop, log=lines.append), daemon=True)
        runner.start()
        latencies = []
        for k in range(args.images):
            ph = make_phantom(250_000 + k, n_clusters=2)
            path = write_dicom(Path(tmp) / f"{k}.dcm", ph.to_uint16(), bits_stored=14, pixel_spacing_mm=0.07,
                               laterality=ph.laterality, view=ph.view, description="synthetic phantom")
            image = pydicom.dcmread(path)
            client.store_instances([image])
            stored = time.perf_counter()
            deadline = stored + WAIT_S
            while not client.search_for_instances(image.StudyInstanceUID, search_filters={"Modality": "SR"}):
                if time.perf_counter() > deadline:
                    raise SystemExit(f"no SR after {WAIT_S} s; watcher log: {lines[-3:]}")
                time.sleep(0.05)
            latencies.append(time.perf_counter() - stored)
            print(f"image {k + 1}: SR stored back {latencies[-1]:.2f} s after the image", flush=True)
        stop.set()
        runner.join(30)
        if args.screenshot:
            study_page(url, image.StudyInstanceUID, args.screenshot)
    scans = [float(m.group(1)) for line in lines if (m := re.search(r"in ([0-9.]+) s", line))]
    print(f"\nmedian latency {statistics.median(latencies):.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f}) "
          f"over {len(latencies)} images, poll {args.poll:g} s; the watcher's fetch + scan + write + send: "
          f"median {statistics.median(scans):.2f} s")


if __name__ == "__main__":
    main()
