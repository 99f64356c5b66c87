"""mccscan batch on Ray Data, results in SQLite and in a real PostgreSQL: every good image
exactly once, bad ones recorded, a SIGKILLed batch resumed, a two-node cluster the same."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from components import new_database

from mccscan.batch import list_images, run_batch
from mccscan.database import create_engine
from mccscan.io import write_dicom
from mccscan.results_table import rows
from mccscan.scan import scan_file
from mccscan.weights import load_detector

GOOD_IMAGES = 20
WAIT_S = 180  # longest wait for a batch subprocess to write its first rows


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """20 small phantoms (DICOM and PNG, in nested folders, extensions that lie) and 3 bad files."""
    from mccscan.datasets.phantom import make_phantom

    root = tmp_path_factory.mktemp("archive")
    for k in range(GOOD_IMAGES):
        ph = make_phantom(260_000 + k, size=(720, 640), n_clusters=1)
        folder = root / f"patient{k % 4}"
        folder.mkdir(exist_ok=True)
        if k % 2:
            ph.write(folder, stem=f"img{k}", formats=("png",))
        else:
            write_dicom(folder / f"img{k}.dat", ph.to_uint16(), bits_stored=14, pixel_spacing_mm=0.07)
    (root / "bad").mkdir()
    (root / "bad" / "truncated.png").write_bytes((root / "patient1" / "img1.png").read_bytes()[:3000])
    write_dicom(root / "bad" / "tiny.dcm", np.zeros((40, 40), np.uint16), pixel_spacing_mm=0.07)
    (root / "bad" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (root / "notes.txt").write_text("not an image, so not listed")
    yield root
    import ray

    ray.shutdown()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.sqlite3'}"
    return new_database(request.getfixturevalue("postgres_server"))


def by_image(url: str) -> dict[str, dict]:
    table = rows(create_engine(url))
    assert len({r["image_sha256"] for r in table}) == len(table)  # never two rows for one image
    return {Path(r["image_path"]).name: r for r in table}


def test_folder_listing_is_by_content(archive):
    names = sorted(Path(p).name for p in list_images(archive))
    assert len(names) == GOOD_IMAGES + 3 and "notes.txt" not in names and "img0.dat" in names


def test_every_good_image_once_bad_ones_recorded_and_a_rerun_skips(archive, db_url):
    first = run_batch(archive, db_url)
    assert (first.done, first.failed, first.skipped) == (GOOD_IMAGES, 3, 0)
    table = by_image(db_url)
    assert len(table) == GOOD_IMAGES + 3
    assert "smaller than one" in table["tiny.dcm"]["error"] and table["tiny.dcm"]["status"] == "failed"
    assert "truncated.png" in table["truncated.png"]["error"] and "broken.dcm" in table["broken.dcm"]["error"]
    loaded = load_detector("mc")
    for name in ("img0.dat", "img1.png"):  # the same clusters as `mccscan scan`
        path = next(Path(archive).rglob(name))
        expected = [c.to_dict() for c in scan_file(path, loaded)[0].findings]
        assert json.loads(table[name]["clusters"]) == expected and table[name]["n_clusters"] == len(expected)
        assert table[name]["weights_sha256"] == loaded.sha256 and table[name]["model_name"] == "mc"
    again = run_batch(archive, db_url)
    assert (again.done, again.failed, again.skipped) == (0, 3, GOOD_IMAGES)  # failed ones are tried again
    assert len(by_image(db_url)) == GOOD_IMAGES + 3


def test_the_command_prints_a_summary_exports_csv_and_fails_when_an_image_failed(archive, tmp_path, capsys):
    import csv

    from mccscan.cli import main

    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["batch", str(archive), "--db", db, "--export", str(tmp_path / "table.csv")]) == 1
    out = capsys.readouterr()
    assert f"{GOOD_IMAGES + 3} images: {GOOD_IMAGES} scanned, 3 failed, 0 already done" in out.out
    assert "failed: " in out.err and "tiny.dcm" in out.err
    with open(tmp_path / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == GOOD_IMAGES + 3 and {r["status"] for r in table} == {"done", "failed"}


def test_a_killed_batch_resumes_and_still_has_every_image_once(archive, db_url, tmp_path):
    command = [sys.executable, "-m", "mccscan", "batch", str(archive), "--db", db_url, "--out", str(tmp_path)]
    batch = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + WAIT_S
    try:
        while True:
            assert batch.poll() is None, batch.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the batch wrote no rows"
            written = len(rows(create_engine(db_url))) if _table_exists(db_url) else 0
            if written >= 5:
                break
            time.sleep(0.2)
    finally:
        os.killpg(batch.pid, signal.SIGKILL)  # the batch and its Ray processes, mid-run
        batch.wait(30)
    done_before = sum(r["status"] == "done" for r in by_image(db_url).values())
    assert 1 <= done_before < GOOD_IMAGES  # killed mid-run
    resumed = run_batch(archive, db_url)
    assert (resumed.skipped, resumed.done, resumed.failed) == (done_before, GOOD_IMAGES - done_before, 3)
    table = by_image(db_url)
    assert len(table) == GOOD_IMAGES + 3
    assert sum(r["status"] == "done" for r in table.values()) == GOOD_IMAGES


def _table_exists(url: str) -> bool:
    import sqlalchemy

    return sqlalchemy.inspect(create_engine(url)).has_table("mccscan_results")


def test_a_two_node_cluster_gives_the_results_of_one_process(archive, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    local = f"sqlite:///{tmp_path / 'local.sqlite3'}"
    run_batch(archive, local)
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        remote = f"sqlite:///{tmp_path / 'cluster.sqlite3'}"
        summary = run_batch(archive, remote, ray_address=cluster.address, workers=2)
        assert (summary.done, summary.failed) == (GOOD_IMAGES, 3)
        nodes = {r["worker"].split("/")[1] for r in by_image(remote).values() if r["status"] == "done"}
        assert len(nodes) == 2  # both nodes scanned
        fields = ("status", "n_clusters", "clusters", "counts", "threshold")
        one, two = ({k: [r[f] for f in fields] for k, r in by_image(url).items()} for url in (local, remote))
        assert one == two
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_pacs_study_list_is_a_source_too(pacs, small_phantom, tmp_path):
    """SOURCE = a DICOMweb root and --studies: the MG images of those studies, fetched by the read tasks."""
    import pydicom

    from mccscan.dicomweb import connect

    images = [pydicom.dcmread(write_dicom(tmp_path / f"{k}.dcm", small_phantom.to_uint16(), bits_stored=14,
                                          pixel_spacing_mm=0.07)) for k in range(2)]
    connect(pacs).store_instances(images)
    studies = [ds.StudyInstanceUID for ds in images]
    db = f"sqlite:///{tmp_path / 'pacs.sqlite3'}"
    first = run_batch(pacs, db, studies=studies)
    assert (first.done, first.failed) == (2, 0)
    table = rows(create_engine(db))
    assert sorted(r["image_path"].rsplit("/", 1)[1] for r in table) == sorted(ds.SOPInstanceUID for ds in images)
    assert run_batch(pacs, db, studies=studies).skipped == 2
    with pytest.raises(ValueError, match="say which studies"):
        run_batch(pacs, db)
