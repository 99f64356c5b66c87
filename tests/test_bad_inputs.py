"""Every kind of bad input gets a clear answer naming the file, through the CLI and the
API; awkward but valid files scan; the batch and the server keep going; nothing
half-made is left behind."""

import json
import re

import pytest

from bad_inputs import write_corpus
from mccscan.cli import main
from mccscan.render import output_stems
from test_web_app import events, make_client, upload


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_phantom):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, write_corpus(folder, small_phantom.image)


CLI_FLAG = re.compile(r"--[a-z]")  # a flag, which a web user has no way to give


def test_the_corpus_has_thirty_kinds_and_both_answers(corpus):
    _, cases = corpus
    assert len(cases) >= 30 and {c.expect for c in cases} == {"error", "ok"}


def test_cli_answers_every_file_and_finishes_the_batch(corpus, tmp_path, capsys, small_phantom):
    folder, cases = corpus
    paths = [str(folder / c.name) for c in cases]
    assert main(["scan", *paths, "--out", str(tmp_path)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    for case, path, stem in zip(cases, paths, output_stems(paths)):
        written = tmp_path / f"{stem}.json"
        said = [line for line in errors if path in line]
        if case.expect == "error":
            assert len(said) == 1 and case.says in said[0], (case.name, said)
            assert not written.exists()
        else:
            assert not said and written.exists(), (case.name, said)
            result = json.loads(written.read_text())
            assert case.says in " ".join(result["warnings"]), case.name
            if case.name.startswith("all-"):
                assert result["counts"]["mcc"] + result["counts"]["normal"] == 0
            else:
                assert tuple(result["scan_shape"]) == small_phantom.image.shape, case.name
                assert result["counts"]["normal"] > 10, case.name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".part"]


def test_api_answers_every_file_keeps_serving_and_leaves_nothing_half_made(corpus, tmp_path, small_phantom):
    folder, cases = corpus
    with make_client(tmp_path / "data") as client:
        for case in cases:
            response = upload(client, folder / case.name)
            assert response.status_code in case.status, (case.name, response.status_code, response.text)
            if response.status_code != 202:
                detail = response.json()["detail"]
                assert case.name in detail and case.says in detail, (case.name, detail)
                assert not CLI_FLAG.search(detail), detail  # the page has fields, not flags
                continue
            scan_id = response.json()["id"]
            name, data = events(client, scan_id)[-1]
            if case.expect == "error":
                assert name == "failed" and case.name in data["message"] and case.says in data["message"], data
                assert not CLI_FLAG.search(data["message"]), data
            else:
                assert name == "done" and case.says in " ".join(data["warnings"]), (case.name, data)
                assert not CLI_FLAG.search(" ".join(data["warnings"])), data
                overlay = client.get(f"/api/scans/{scan_id}/overlay.png")
                assert overlay.status_code == 200 and overlay.headers["content-disposition"].startswith("attachment")
                assert client.get(f"/api/scans/{scan_id}/image.jpg").status_code == 200
        good = upload(client, folder / "16-bit.png")
        assert events(client, good.json()["id"])[-1][0] == "done"
        scans = client.get("/api/scans").json()
        assert {s["status"] for s in scans} <= {"done", "failed"}
        kept = {p.name for p in (tmp_path / "data" / "scans").iterdir()}
        assert kept == {s["id"] for s in scans}
        assert not list((tmp_path / "data").rglob("*.part"))
