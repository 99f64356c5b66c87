"""The bad-input corpus (tests/bad_inputs.py) through the CLI and the API, one file at a
time, as a markdown table: what each answers. Run it on two checkouts to compare:

    python benchmarks/bad_input_table.py > after.md
    PYTHONPATH=/path/to/old/src python benchmarks/bad_input_table.py > before.md
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bad_inputs import write_corpus  # noqa: E402


def short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def cli_answer(path: Path, out: Path) -> str:
    from mccscan.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["scan", str(path), "--out", str(out)])
    except BaseException as exc:  # noqa: BLE001 — the old CLI let some escape
        return f"**crash** {type(exc).__name__}: {short(exc, 60)}"
    lines = [line.split(": ", 2)[-1] for line in err.getvalue().splitlines()
             if line.startswith(("error", "warning")) and "no pixel spacing" not in line]
    return f"exit {code}" + (f": {short(lines[0], 70)}" if lines else "")


def api_answer(client, path: Path) -> str:
    with open(path, "rb") as fh:
        response = client.post("/api/scans", files={"file": (path.name, fh)})
    if response.status_code != 202:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        left = [s["status"] for s in client.get("/api/scans").json() if s["status"] in ("queued", "running")]
        return f"{response.status_code}: {short(detail, 70)}" + (f" (a record left {left[0]})" if left else "")
    scan_id, last = response.json()["id"], None
    with client.stream("GET", f"/api/scans/{scan_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                last = line[7:]
            elif line.startswith("data: ") and last in ("done", "failed"):
                detail = line[6:]
    if last == "done" and client.get(f"/api/scans/{scan_id}/overlay.png").status_code != 200:
        return "202 → done, but overlay.png fails"
    return f"202 → {last}" + (f": {short(json.loads(detail)['message'], 70)}" if last == "failed" else "")


def main() -> None:
    from fastapi.testclient import TestClient

    from mccscan.datasets.phantom import make_phantom
    from mccscan.web.app import Settings, create_app

    image = make_phantom(seed=123, size=(1300, 1100), view="CC", laterality="L", n_clusters=2).image
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = write_corpus(tmp / "corpus", image)
        print("| input | expected | CLI | API |\n|---|---|---|---|")
        with TestClient(create_app(Settings(data_dir=tmp / "data")), base_url="http://127.0.0.1",
                        raise_server_exceptions=False) as client:
            for case in cases:
                path = tmp / "corpus" / case.name
                print(f"| {case.name} | {case.expect} | {cli_answer(path, tmp / 'out')} | "
                      f"{api_answer(client, path)} |", flush=True)


if __name__ == "__main__":
    main()
