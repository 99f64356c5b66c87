"""Load on a real server process (loopback only, bounded): 16 concurrent uploads of a
full-size mammogram, then 16 overlay and 16 heatmap downloads at once, all first-time
renders. The server's peak RSS must stay under 1.5 GB; the figure is printed."""

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mccscan.datasets.phantom import make_phantom

PEAK_RSS_LIMIT_MB = 1536
CONCURRENT = 16


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("load")
    process = subprocess.Popen([sys.executable, "-m", "mccscan", "serve", "--port", "0", "--data-dir", str(data)],
                               stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", process.stderr.readline()).group(1))
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                httpx.get(f"{url}/api/info")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(20)


def wait_done(url: str, scan_id: str, timeout_s: float = 300) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = httpx.get(f"{url}/api/scans/{scan_id}").json()["status"]
        if status in ("done", "failed"):
            return status
        time.sleep(0.2)
    return "timeout"


def test_sixteen_uploads_and_thirty_two_downloads_stay_under_1_5_gb(server, tmp_path):
    url, pid = server
    dcm = make_phantom(11, size="large", n_clusters=3).write(tmp_path, stem="full", formats=("dcm",))["dcm"]
    payload = dcm.read_bytes()

    def upload(k: int) -> str:
        response = httpx.post(f"{url}/api/scans", files={"file": (f"case{k}.dcm", payload)}, timeout=120)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    start = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        ids = list(pool.map(upload, range(CONCURRENT)))
        assert list(pool.map(lambda i: wait_done(url, i), ids)) == ["done"] * CONCURRENT
    scanned_s = time.perf_counter() - start
    after_scans = peak_rss_mb(pid)

    def download(args) -> tuple[int, int]:
        scan_id, what = args
        response = httpx.get(f"{url}/api/scans/{scan_id}/{what}", timeout=300)
        return response.status_code, len(response.content)

    jobs = [(i, "overlay.png") for i in ids] + [(i, "heatmap.png") for i in ids]
    start = time.perf_counter()
    with ThreadPoolExecutor(2 * CONCURRENT) as pool:
        answers = list(pool.map(download, jobs))
    downloaded_s = time.perf_counter() - start
    assert all(status == 200 and size > 1000 for status, size in answers), answers
    peak = peak_rss_mb(pid)
    print(f"\n16 uploads of a 3328×4084 DICOM scanned in {scanned_s:.1f} s (peak RSS {after_scans:.0f} MB); "
          f"16 overlays + 16 heatmaps in {downloaded_s:.1f} s; server peak RSS {peak:.0f} MB")
    assert peak < PEAK_RSS_LIMIT_MB
