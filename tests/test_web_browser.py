"""The page in a real browser: Playwright driving Debian's chromium (never a downloaded one).

Skipped when /usr/bin/chromium is missing, unless MCCSCAN_REQUIRE_BROWSER=1 (set by CI,
which installs it), where a missing browser fails. Screenshots go to test-artifacts/.
"""

import io
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from mccscan.web.app import Settings, create_app
from components import free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MCCSCAN_ARTIFACTS", "test-artifacts"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not CHROMIUM.exists():
    if os.environ.get("MCCSCAN_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


def serve(settings: Settings):
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve(Settings(data_dir=tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def paper_server(tmp_path_factory):
    yield from serve(Settings(data_dir=tmp_path_factory.mktemp("paper"), detector="paper"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(server)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def counters(page) -> dict[str, int]:
    return {k: int(page.text_content(f"#count-{k}")) for k in ("mcc", "normal", "background")}


def shown_colour(page, tile: dict) -> np.ndarray:
    """Mean RGB the page shows over the middle 32×32 px of a tile, viewed at scale 1."""
    page.evaluate(f"() => {{ state.view = {{s: 1, x: {-tile['x']}, y: {-tile['y']}}}; applyView(); }}")
    box = page.locator("#viewer").bounding_box()
    png = page.screenshot(clip={"x": box["x"] + 56, "y": box["y"] + 56, "width": 32, "height": 32})
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), float).mean((0, 1))


def downloaded_colour(server: str, scan_id: str, tile: dict, **params) -> np.ndarray:
    """Mean RGB of the same 32×32 px in the overlay PNG the server renders in the page's (the paper's) style."""
    overlay = httpx.get(f"{server}/api/scans/{scan_id}/overlay.png", params={"style": "paper", **params}, timeout=60)
    rgb = np.asarray(Image.open(io.BytesIO(overlay.content)).convert("RGB"), float)
    return rgb[tile["y"] + 56:tile["y"] + 88, tile["x"] + 56:tile["x"] + 88].mean((0, 1))


def test_scan_in_the_browser(page, server, small_phantom, tmp_path):
    dcm = small_phantom.write(tmp_path, stem="browser", formats=("dcm",))["dcm"]
    page.set_input_files("#file-input", str(dcm))
    page.wait_for_function("document.querySelector('#status').textContent.includes('scanned in')", timeout=30000)
    shot(page, "scan-done")
    assert not page.is_visible("#send-pacs")  # this server has no PACS
    scans = httpx.get(f"{server}/api/scans").json()
    api = httpx.get(f"{server}/api/scans/{scans[0]['id']}").json()
    assert counters(page) == api["counts"]
    timings = page.evaluate("window.mccscanTimings")
    assert timings["upload_start"] < timings["first_tile"] <= timings["done"]

    # tiles are drawn on the overlay: a normal tile is lightened, so its overlay pixels are opaque
    normal = next(t for t in api["result"]["tiles"] if t["label"] == "normal")
    alpha = page.evaluate(f"$('overlay').getContext('2d').getImageData({normal['col']} * OVERLAY_PX + 2, "
                          f"{normal['row']} * OVERLAY_PX + 2, 1, 1).data[3]")
    assert alpha > 0

    # the original, and back
    page.check("#show-original")
    assert page.evaluate("getComputedStyle($('overlay')).visibility") == "hidden"
    shot(page, "original")
    page.uncheck("#show-original")

    # click the scanned tile with the highest probability: its probability and F2 bars show
    tile = max((t for t in api["result"]["tiles"] if t["probability"] is not None), key=lambda t: t["probability"])
    box = page.locator("#viewer").bounding_box()
    view = page.evaluate("state.view")
    x = box["x"] + view["x"] + (tile["x"] + 72) * view["s"]
    y = box["y"] + view["y"] + (tile["y"] + 72) * view["s"]
    page.mouse.click(x, y)
    assert page.text_content("#tile-prob") == f"{tile['probability']:.3f}"
    assert page.locator("#f2-bars > div").count() == len(tile["f2"] or [])  # the paper's net only
    assert page.is_visible("#peak") == bool(tile["peak"])
    shot(page, "tile-selected")

    # the dense heatmap lies over the image, also over the original
    page.check("#show-heatmap")
    page.wait_for_selector("#heatmap:not([hidden])")
    rows, cols = api["result"]["scan_shape"]
    assert page.evaluate("$('heatmap').naturalWidth") == (cols - 144) // 16 + 1
    assert page.evaluate("$('heatmap').style.left") == "64px"

    # the threshold re-colours without a rescan
    page.evaluate("() => { const t = $('threshold'); t.value = 0; t.dispatchEvent(new Event('input')); }")
    scanned = api["counts"]["mcc"] + api["counts"]["normal"]
    assert counters(page) == {"mcc": scanned, "normal": 0, "background": api["counts"]["background"]}


def test_the_page_tints_tiles_as_the_downloaded_overlay_does(page, server):
    """One definition of the tint (render.py): what the viewer shows over a normal tile and
    over a tinted MCC tile matches the overlay PNG the server renders (the JPEG base aside)."""
    scan_id = httpx.get(f"{server}/api/scans").json()[0]["id"]
    page.click("#history li button.open")
    page.wait_for_function("document.querySelector('#status').textContent.includes('scanned in')", timeout=30000)
    page.evaluate("$('heatmap').hidden = true; $('clusters').style.visibility = 'hidden'")  # the tiles alone
    tiles = httpx.get(f"{server}/api/scans/{scan_id}").json()["result"]["tiles"]
    info = httpx.get(f"{server}/api/info").json()
    assert page.evaluate("getComputedStyle($('overlay-tint')).mixBlendMode") == info["overlay"]["mcc_blend"]
    normal = next(t for t in tiles if t["label"] == "normal" and t["breast_fraction"] == 1)
    np.testing.assert_allclose(shown_colour(page, normal), downloaded_colour(server, scan_id, normal), atol=3)
    page.evaluate("""() => { $('mcc-mode').value = 'tint'; $('mcc-color').value = '#ff8000';
                             const t = $('threshold'); t.value = 0; t.dispatchEvent(new Event('input')); }""")
    shot(page, "tinted")
    mcc = max((t for t in tiles if t["probability"] is not None), key=lambda t: t["breast_fraction"])
    np.testing.assert_allclose(shown_colour(page, mcc),
                               downloaded_colour(server, scan_id, mcc, threshold=0, mcc_color="#ff8000"), atol=3)
    assert len(httpx.get(f"{server}/api/scans").json()) == 1


def test_bad_file_shows_the_error_and_the_page_keeps_working(page, tmp_path):
    bad = tmp_path / "report.pdf"
    bad.write_bytes(b"%PDF-1.4 not a mammogram")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    text = page.text_content("#error")
    assert "report.pdf" in text and "not a recognised image format" in text
    shot(page, "bad-file")


def test_clusters_are_outlined_listed_and_follow_the_threshold(page, server):
    """The findings panel lists the reported clusters; a click zooms there; the threshold
    acts on the cluster score without a rescan."""
    scan_id = httpx.get(f"{server}/api/scans").json()[0]["id"]
    page.click("#history li button.open")
    page.wait_for_function("document.querySelector('#status').textContent.includes('scanned in')", timeout=30000)
    result = httpx.get(f"{server}/api/scans/{scan_id}").json()["result"]
    reported = [c for c in result["clusters"] if c["score"] >= result["threshold"]]
    assert page.locator("#findings li").count() == len(reported)
    assert page.locator("#clusters polygon").count() == len(reported)
    if reported:
        before = page.evaluate("state.view.s")
        page.click("#findings li >> nth=0")
        assert page.evaluate("state.view.s") != before
        assert page.locator("#clusters polygon.selected").count() == 1
        shot(page, "cluster-zoomed")
    page.evaluate("() => { const t = $('threshold'); t.value = 0; t.dispatchEvent(new Event('input')); }")
    assert page.locator("#findings li").count() == len(result["clusters"])
    page.evaluate("() => { const t = $('threshold'); t.value = 1; t.dispatchEvent(new Event('input')); }")
    assert page.locator("#findings li").count() == sum(c["score"] >= 1 for c in result["clusters"])


def test_the_papers_view_shows_a_tiles_f2_and_where_it_looked(browser, paper_server, small_phantom, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(paper_server)
    dcm = small_phantom.write(tmp_path, stem="paper", formats=("dcm",))["dcm"]
    page.set_input_files("#file-input", str(dcm))
    page.wait_for_function("document.querySelector('#status').textContent.includes('scanned in')", timeout=30000)
    scan = httpx.get(f"{paper_server}/api/scans").json()[0]
    result = httpx.get(f"{paper_server}/api/scans/{scan['id']}").json()["result"]
    tile = max((t for t in result["tiles"] if t["probability"] is not None), key=lambda t: t["probability"])
    page.evaluate(f"showTile(state.tiles[{tile['row']} * state.scan.n_cols + {tile['col']}])")
    assert page.locator("#f2-bars > div").count() == 16 and page.is_visible("#peak")
    context.close()


def test_send_to_pacs_from_the_page(browser, pacs, small_phantom, tmp_path_factory, tmp_path):
    """With --pacs, a finished DICOM scan goes to the PACS at a click; the page says where."""
    from test_dicomweb import modalities_in_study

    for url in serve(Settings(data_dir=tmp_path_factory.mktemp("pacs-server"), pacs_url=pacs)):
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_function("state.info && state.info.pacs")
        dcm = small_phantom.write(tmp_path, stem="to-pacs", formats=("dcm",))["dcm"]
        page.set_input_files("#file-input", str(dcm))
        page.wait_for_function("document.querySelector('#status').textContent.includes('scanned in')", timeout=30000)
        page.click("#send-pacs")
        page.wait_for_function("document.querySelector('#pacs-status').textContent.includes('stored SR')",
                               timeout=30000)
        shot(page, "sent-to-pacs")
        study = page.text_content("#pacs-status").split("study ")[1].split(" ")[0]
        assert modalities_in_study(pacs, study) == ["MG", "OT", "SR"]
        page.close()
