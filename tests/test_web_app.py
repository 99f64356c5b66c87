import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from bad_inputs import fake_png
from mccscan.cli import main
from mccscan.web.app import Settings, create_app
from mccscan.web.routes.scans import safe_filename
from mccscan.web.store import ScanStore


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory, small_phantom):
    folder = tmp_path_factory.mktemp("phantom")
    return small_phantom.write(folder, stem="breast", formats=("png", "dcm"))


LOCAL = "http://127.0.0.1"  # the Host the server accepts by default


def make_client(data_dir, **settings) -> TestClient:
    return TestClient(create_app(Settings(data_dir=Path(data_dir), **settings)), base_url=LOCAL)


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path / "data") as c:
        yield c


def upload(client, path: Path, name: str | None = None, **form):
    with open(path, "rb") as fh:
        return client.post("/api/scans", files={"file": (name or path.name, fh)}, data=form)


def events(client, scan_id: str) -> list[tuple[str, dict]]:
    """Read a scan's event stream to its end."""
    out, name = [], None
    with client.stream("GET", f"/api/scans/{scan_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


def scan(client, path: Path, **form) -> tuple[str, list]:
    response = upload(client, path, **form)
    assert response.status_code == 202, response.text
    scan_id = response.json()["id"]
    return scan_id, events(client, scan_id)


def without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "elapsed_s"}


def test_upload_streams_rows_in_raster_order_and_matches_the_cli(client, phantom_files, tmp_path):
    scan_id, stream = scan(client, phantom_files["dcm"])
    names = [name for name, _ in stream]
    assert names[0] == "meta" and names[-1] == "done" and set(names[1:-1]) == {"row"}
    meta = stream[0][1]
    rows = [data for name, data in stream if name == "row"]
    assert [r["row"] for r in rows] == list(range(meta["n_rows"]))
    detail = client.get(f"/api/scans/{scan_id}").json()
    assert detail["status"] == "done" and detail["counts"] == stream[-1][1]["counts"]
    streamed_tiles = [t for r in rows for t in r["tiles"]]
    assert streamed_tiles == detail["result"]["tiles"]

    assert main(["scan", str(phantom_files["dcm"]), "--out", str(tmp_path / "cli")]) == 0
    cli_result = json.loads((tmp_path / "cli" / "breast.json").read_text())
    assert without_timing(detail["result"]) == without_timing(cli_result)
    assert client.get(f"/api/scans/{scan_id}/result.csv").text == (tmp_path / "cli" / "breast.csv").read_text()


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[:20000]


@pytest.mark.parametrize("name, content, status, message", [
    ("notes.txt", b"just some text\n", 415, "not a recognised image format"),
    ("cut.png", _truncated_png(), 422, "corrupt or truncated"),
    ("huge.png", fake_png(20000, 20000), 413, "above the limit"),
    ("empty.png", b"", 400, "file is empty"),
])
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(client, phantom_files, tmp_path,
                                                                  name, content, status, message):
    (tmp_path / name).write_bytes(content)
    response = upload(client, tmp_path / name)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert name in detail and message in detail and str(tmp_path) not in detail
    assert client.get("/api/scans").json() == []  # nothing half-made is kept
    scan_id, stream = scan(client, phantom_files["png"])
    assert stream[-1][0] == "done"


def test_upload_size_limit(tmp_path, phantom_files):
    with make_client(tmp_path / "data", max_upload_bytes=10_000) as client:
        response = upload(client, phantom_files["png"])
        assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_full_queue_answers_503(tmp_path, phantom_files):
    with make_client(tmp_path / "data", max_queued=0) as client:
        response = upload(client, phantom_files["png"])
        assert response.status_code == 503 and client.get("/api/scans").json() == []


def test_client_file_names_never_become_paths(client, phantom_files, tmp_path):
    response = upload(client, phantom_files["png"], name="../../outside.png")
    scan_id = response.json()["id"]
    events(client, scan_id)
    assert response.json()["filename"] == "outside.png"
    assert not list(tmp_path.rglob("outside.png"))
    assert safe_filename("C:\\x\\a\x00b.dcm") == "ab.dcm" and safe_filename("") == "upload"


def test_restart_keeps_finished_scans_and_their_events(tmp_path, phantom_files):
    with make_client(tmp_path / "data") as client:
        scan_id, live = scan(client, phantom_files["dcm"])
        before = client.get(f"/api/scans/{scan_id}").json()
    with make_client(tmp_path / "data") as client:
        listed = client.get("/api/scans").json()
        assert [s["id"] for s in listed] == [scan_id] and listed[0]["status"] == "done"
        after = client.get(f"/api/scans/{scan_id}").json()
        assert after == before
        replayed = events(client, scan_id)
        assert [(n, d) for n, d in replayed if n == "row"] == [(n, d) for n, d in live if n == "row"]
        assert replayed[0] == live[0] and replayed[-1][1]["counts"] == live[-1][1]["counts"]


def test_a_finished_scans_events_leave_memory_for_the_store_and_no_thread_waits_to_drop_them(
        client, phantom_files, monkeypatch):
    import threading

    from mccscan.web import jobs

    scan_id, live = scan(client, phantom_files["png"])
    scan_jobs = client.app.state.jobs
    assert scan_id in scan_jobs._live and events(client, scan_id) == live  # kept for its streamers …
    monkeypatch.setattr(jobs, "LIVE_EVENTS_KEPT_S", 0.0)
    replayed = events(client, scan_id)  # … until the next request after the keep time
    assert scan_id not in scan_jobs._live
    assert [e for e in replayed if e[0] == "row"] == [e for e in live if e[0] == "row"]
    assert not any(isinstance(t, threading.Timer) for t in threading.enumerate())


def test_restart_resumes_scans_left_unfinished(tmp_path, phantom_files):
    store = ScanStore(tmp_path / "data")
    record = store.create("left-behind.png")
    (store.folder(record.id) / "upload").write_bytes(phantom_files["png"].read_bytes())
    store.update(record.id, status="running")  # the server died mid-scan
    with make_client(tmp_path / "data") as client:
        stream = events(client, record.id)
        assert stream[-1][0] == "done"
        assert client.get(f"/api/scans/{record.id}").json()["status"] == "done"


def test_eight_concurrent_uploads_all_complete(client, phantom_files):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: upload(client, phantom_files["png"], name=f"p{i}.png"), range(8)))
    assert [r.status_code for r in responses] == [202] * 8
    finals = [events(client, r.json()["id"])[-1] for r in responses]
    assert all(name == "done" for name, _ in finals)
    assert len({json.dumps(data["counts"]) for _, data in finals}) == 1  # same file, same answer
    assert {s["status"] for s in client.get("/api/scans").json()} == {"done"}


def test_a_file_that_fails_in_the_worker_is_reported_and_kept_as_failed(client, tmp_path):
    # valid header and CRCs, but zlib data that does not inflate: only decoding finds it
    (tmp_path / "bad.png").write_bytes(fake_png(200, 200, idat=b"\x00" + b"\x80" * 200))
    response = upload(client, tmp_path / "bad.png")
    assert response.status_code == 202
    name, data = events(client, response.json()["id"])[-1]
    assert name == "failed" and "bad.png" in data["message"]
    assert client.get(f"/api/scans/{response.json()['id']}").json()["status"] == "failed"


def test_overlay_heatmap_image_and_delete(client, phantom_files):
    scan_id, stream = scan(client, phantom_files["png"])
    rows, cols = stream[0][1]["scan_shape"]
    base = Image.open(io.BytesIO(client.get(f"/api/scans/{scan_id}/image.jpg").content))
    assert base.size == (cols, rows) and base.mode == "L"
    overlay = client.get(f"/api/scans/{scan_id}/overlay.png", params={"style": "paper"})
    assert overlay.headers["content-disposition"].endswith('breast.overlay.png"')
    dark = client.get(f"/api/scans/{scan_id}/overlay.png", params={"threshold": 0.0, "mcc_color": "#000000",
                                                                      "style": "paper"})
    a = np.asarray(Image.open(io.BytesIO(overlay.content)))
    b = np.asarray(Image.open(io.BytesIO(dark.content)))
    assert a.shape == (rows, cols, 3) and b.mean() < a.mean()  # every breast tile is MCC and blackened
    assert client.get(f"/api/scans/{scan_id}/overlay.png", params={"normal_color": "nope"}).status_code == 422
    heat = Image.open(io.BytesIO(client.get(f"/api/scans/{scan_id}/heatmap.png").content))
    assert heat.mode == "RGBA" and heat.size == ((cols - 144) // 16 + 1, (rows - 144) // 16 + 1)
    assert client.delete(f"/api/scans/{scan_id}").status_code == 204
    assert client.get(f"/api/scans/{scan_id}").status_code == 404
    assert client.get("/api/scans/not-an-id").status_code == 404


def test_pixel_spacing_field_resamples(client, phantom_files):
    _, stream = scan(client, phantom_files["png"], pixel_spacing_mm="0.14")
    rows, cols = stream[0][1]["scan_shape"]
    assert (rows, cols) == (2600, 2200)
    assert upload(client, phantom_files["png"], pixel_spacing_mm="-1").status_code == 422


def test_openapi_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/scans", "/api/scans/{scan_id}", "/api/scans/{scan_id}/events",
                 "/api/scans/{scan_id}/overlay.png"):
        assert path in paths
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_routes_reach_settings_and_store_through_dependencies(tmp_path):
    """FastAPI's way: a test swaps the settings or the store with `dependency_overrides`."""
    from mccscan.web.deps import get_settings, get_store

    app = create_app(Settings(data_dir=tmp_path / "a"))
    other = ScanStore(tmp_path / "b")
    other.create("elsewhere.png")
    app.dependency_overrides[get_store] = lambda: other
    app.dependency_overrides[get_settings] = lambda: Settings(data_dir=tmp_path / "a", threshold=0.9)
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/info").json()["threshold"] == 0.9
        assert [s["filename"] for s in c.get("/api/scans").json()] == ["elsewhere.png"]
    app.dependency_overrides.clear()
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/info").json()["threshold"] == app.state.jobs.threshold != 0.9
        assert c.get("/api/scans").json() == []


def test_unknown_host_and_cross_origin_changes_are_refused(client, phantom_files):
    """Against DNS rebinding (a page on evil.example resolving to 127.0.0.1) and cross-site
    uploads: the Host must be the server's, and a state-changing request its own origin."""
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    with open(phantom_files["png"], "rb") as fh:
        refused = client.post("/api/scans", files={"file": ("x.png", fh)}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403 and "cross-origin" in refused.json()["detail"]
    assert client.get("/api/scans").json() == []
    with open(phantom_files["png"], "rb") as fh:
        same = client.post("/api/scans", files={"file": ("x.png", fh)}, headers={"origin": LOCAL})
    assert same.status_code == 202


def test_a_chunked_upload_stops_at_the_limit(tmp_path):
    """No Content-Length: the body is counted as it streams in, refused past the limit,
    and nothing of it is kept."""
    boundary = "mccscanboundary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(64):  # 64 MiB, against a 1 MiB limit
            yield b"\0" * 2**20
        yield f"\r\n--{boundary}--\r\n".encode()

    with make_client(tmp_path / "data", max_upload_bytes=2**20) as client:
        response = client.post("/api/scans", content=body(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert response.status_code == 413 and "limit" in response.json()["detail"]
        assert client.get("/api/scans").json() == []
    assert not any((tmp_path / "data" / "scans").iterdir())


def test_a_coarse_spacing_given_with_the_upload_is_refused_before_decoding(client, tmp_path):
    Image.fromarray(np.full((1500, 1500), 128, np.uint8)).save(tmp_path / "coarse.png")
    response = upload(client, tmp_path / "coarse.png", pixel_spacing_mm="1.0")
    assert response.status_code == 413 and "once resampled" in response.json()["detail"]
    assert response.json()["detail"].endswith("; the limit is this server's")  # not a flag the page has
    assert upload(client, tmp_path / "coarse.png", pixel_spacing_mm="5").status_code == 422


def test_concurrent_first_downloads_get_whole_files_made_once(client, phantom_files):
    scan_id, _ = scan(client, phantom_files["png"])
    urls = [f"/api/scans/{scan_id}/image.jpg"] * 8 + [f"/api/scans/{scan_id}/overlay.png"] * 8
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(client.get, urls))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses[:8]}) == 1 and len({r.content for r in responses[8:]}) == 1
    Image.open(io.BytesIO(responses[0].content)).load()  # whole, not truncated
    assert len(responses[0].content) > 10_000
    folder = client.app.state.store.folder(scan_id)
    assert len(list(folder.glob("overlay-*.png"))) == 1 and not list(folder.glob("*.part"))


def test_derived_files_are_made_once_and_at_most_max_renders_at_a_time(tmp_path):
    import threading
    import time

    store = ScanStore(tmp_path, max_renders=2)
    scan_id = store.create("x.png").id
    running, peak, calls = [0], [0], []
    lock = threading.Lock()

    def make(name):
        def slow() -> bytes:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                calls.append(name)
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return name.encode()
        return slow

    names = [f"f{k % 6}.png" for k in range(24)]  # 6 files, each asked for 4 times at once
    with ThreadPoolExecutor(24) as pool:
        paths = list(pool.map(lambda n: store.derived(scan_id, n, make(n)), names))
    assert sorted(calls) == sorted(set(names)) and peak[0] <= 2
    assert all(p.read_bytes() == p.name.encode() for p in paths)


def test_non_latin1_file_names_download(client, phantom_files, tmp_path):
    import shutil

    name = tmp_path / "乳房-überprüft.png"
    shutil.copy(phantom_files["png"], name)
    scan_id, _ = scan(client, name)
    for path in ("overlay.png", "result.json", "result.csv"):
        response = client.get(f"/api/scans/{scan_id}/{path}")
        assert response.status_code == 200 and "filename*=utf-8''" in response.headers["content-disposition"]


def test_send_a_finished_dicom_scan_to_the_pacs(tmp_path, phantom_files, pacs):
    from test_dicomweb import modalities_in_study

    from mccscan.dicomweb import connect

    with make_client(tmp_path / "data", pacs_url=pacs) as c:
        assert c.get("/api/info").json()["pacs"] == pacs
        scan_id, _ = scan(c, phantom_files["dcm"])
        first = c.post(f"/api/scans/{scan_id}/pacs")
        assert first.status_code == 200, first.text
        sent = first.json()
        assert sent["image_sent"]  # the PACS did not have the dropped image: it goes first
        assert modalities_in_study(pacs, sent["study_instance_uid"]) == ["MG", "OT", "SR"]
        sr = connect(pacs).search_for_instances(sent["study_instance_uid"], search_filters={"Modality": "SR"})
        assert sr[0]["00080018"]["Value"][0] == sent["sr_sop_instance_uid"]
        again = c.post(f"/api/scans/{scan_id}/pacs").json()
        assert again["image_sent"] is False and again["sr_sop_instance_uid"] == sent["sr_sop_instance_uid"]
        assert modalities_in_study(pacs, sent["study_instance_uid"]) == ["MG", "OT", "SR"]  # no second SR
        png_id, _ = scan(c, phantom_files["png"])
        refused = c.post(f"/api/scans/{png_id}/pacs")
        assert refused.status_code == 409 and "breast.png: not a DICOM file" in refused.json()["detail"]
        assert str(tmp_path) not in refused.json()["detail"]
    with make_client(tmp_path / "data") as c:  # the same scan, a server with no PACS
        assert c.post(f"/api/scans/{scan_id}/pacs").status_code == 409
    with make_client(tmp_path / "data", pacs_url="http://127.0.0.1:9/dicom-web") as c:
        down = c.post(f"/api/scans/{scan_id}/pacs")
        assert down.status_code == 502 and "127.0.0.1:9" in down.json()["detail"]
