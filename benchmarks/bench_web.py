"""The web app on one 3328×4084 phantom mammogram, measured in the browser.

Starts `mccscan serve` in its own process, then with Playwright driving Debian's
chromium uploads the phantom DICOM `--repeats` times and reads the page's own timings
(performance.now() at upload, first scored tile drawn, base image shown, full result
drawn). Then posts 8 uploads at once and reports the server's peak RSS (VmHWM).

    python benchmarks/bench_web.py [--repeats 5] [--screenshots docs/]

With --screenshots it also saves the README's pictures: the page mid-scan (the stream
is cut at half the rows, exactly as the page looked then) and after the scan.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HALF_SCANNED = """(oldId) => new Promise((resolve) => {
  const poll = () => {
    if (state.scan && state.scan.id !== oldId && state.rowsDone >= state.scan.n_rows / 2) {
      state.source.close();
      resolve(state.scan.id);
    }
    else requestAnimationFrame(poll);
  };
  poll();
})"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "mccscan", "serve", "--port", str(port),
                               "--data-dir", str(data_dir)])
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info")
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("server did not start")


def wait_all_done(url: str, ids: list[str], timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        statuses = {s["id"]: s["status"] for s in httpx.get(f"{url}/api/scans").json()}
        if all(statuses.get(i) in ("done", "failed") for i in ids):
            return
        time.sleep(0.2)
    raise TimeoutError("scans did not finish")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--screenshots", type=Path, help="folder for the README's screenshots")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from mccscan.datasets.phantom import make_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dcm = make_phantom(7, n_clusters=3).write(tmp, stem="phantom_7", formats=("dcm",))["dcm"]
        url = f"http://127.0.0.1:{args.port}"
        server = start_server(tmp / "data", args.port)
        try:
            rows = []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                if args.screenshots:
                    args.screenshots.mkdir(parents=True, exist_ok=True)
                    for _ in range(2):  # the second shows history and a warm server
                        page.set_input_files("#file-input", str(dcm))
                        scan_id = page.evaluate(HALF_SCANNED, page.evaluate("state.scan && state.scan.id"))
                    page.screenshot(path=str(args.screenshots / "web-mid-scan.png"))
                    page.click(f"#history li[data-id='{scan_id}'] button.open")
                    page.wait_for_function(f"state.finished && state.scan.id === '{scan_id}'")
                    page.wait_for_timeout(300)
                    page.screenshot(path=str(args.screenshots / "web-done.png"))
                for i in range(args.repeats + 1):  # the first is a warm-up
                    page.set_input_files("#file-input", str(dcm))
                    page.wait_for_function("window.mccscanTimings.done && window.mccscanTimings.image_loaded",
                                           timeout=60000)
                    t = page.evaluate("window.mccscanTimings")
                    if i:
                        rows.append({k: (t[k] - t["upload_start"]) / 1000
                                     for k in ("accepted", "first_tile", "image_loaded", "done")})
                browser.close()
            single_rss = peak_rss_mb(server.pid)

            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                def post(_):
                    with open(dcm, "rb") as fh:
                        return httpx.post(f"{url}/api/scans", files={"file": ("p.dcm", fh)}, timeout=120)
                responses = list(pool.map(post, range(8)))
            ids = [r.json()["id"] for r in responses]
            wait_all_done(url, ids)
            eight_s = time.perf_counter() - start
            statuses = [httpx.get(f"{url}/api/scans/{i}").json()["status"] for i in ids]
            eight_rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(10)

    print(f"3328×4084 phantom DICOM, {args.repeats} uploads in the browser (seconds after the upload starts):")
    print(f"{'':<28}{'median':>8}{'min':>8}{'max':>8}")
    for key, label in (("accepted", "upload accepted (202)"), ("first_tile", "first scored tile drawn"),
                       ("image_loaded", "base image shown"), ("done", "full result drawn")):
        values = [r[key] for r in rows]
        print(f"{label:<28}{statistics.median(values):>8.3f}{min(values):>8.3f}{max(values):>8.3f}")
    print(f"server peak RSS after the browser scans: {single_rss:.0f} MB")
    print(f"8 concurrent uploads: {statuses.count('done')}/8 done in {eight_s:.1f} s; "
          f"server peak RSS {eight_rss:.0f} MB")


if __name__ == "__main__":
    main()
