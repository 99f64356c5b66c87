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
from components import CRASH_ON, new_database

from mccscan.batch import list_images, run_batch
from mccscan.database import create_engine
from mccscan.errors import MccscanError
from mccscan.io import write_dicom
from mccscan.results_table import rows
from mccscan.scan import scan_file
from mccscan.weights import load_detector

GOOD_IMAGES = 20
BAD_FILES = 4  # truncated.png, tiny.dcm, broken.dcm, empty.png
WAIT_S = 180  # longest wait for a batch subprocess to write its first rows


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """20 small phantoms (DICOM and PNG, in nested folders, extensions that lie) and BAD_FILES bad files."""
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
    (root / "bad" / "empty.png").write_bytes(b"")  # named as an image: listed, so reported as failed
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
    """The table by file name, after checking no image and no path has two rows."""
    table = rows(create_engine(url))
    assert len({r["image_sha256"] for r in table}) == len(table) == len({r["image_path"] for r in table})
    return {Path(r["image_path"]).name: r for r in table}


def test_folder_listing_is_by_content(archive):
    names = sorted(Path(p).name for p in list_images(archive))
    assert len(names) == GOOD_IMAGES + BAD_FILES and "notes.txt" not in names and "img0.dat" in names
    assert all(Path(p).is_absolute() for p in list_images(archive))


def test_csv_and_single_file_sources(archive, tmp_path):
    from mccscan.batch import looks_like_image

    image = next(Path(archive).rglob("img1.png"))
    with_header = tmp_path / "with_header.csv"
    with_header.write_text(f"patient,Path\nA,{image}\nB\n\nC,missing.dcm\n")
    assert list_images(with_header) == sorted([str(image), str(tmp_path / "missing.dcm")])  # short row skipped
    no_header = tmp_path / "no_header.csv"
    no_header.write_text(f"missing.png\n{image}\n")  # a missing first file is data, not a header
    assert list_images(no_header) == sorted([str(tmp_path / "missing.png"), str(image)])
    assert list_images(image) == [str(image)]
    (tmp_path / "binary.bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match="neither a mammogram nor a CSV"):
        list_images(tmp_path / "binary.bin")
    (tmp_path / "plan.txt").write_text("P2 is the plan, not a PGM")
    (tmp_path / "real.pgm").write_bytes(b"P5\n# a comment\n640 720\n255\n" + bytes(16))
    assert not looks_like_image(tmp_path / "plan.txt") and looks_like_image(tmp_path / "real.pgm")


def test_too_many_workers_and_an_unreachable_database_are_clear_errors(archive, tmp_path):
    from components import free_port

    with pytest.raises(ValueError, match="at most . scan worker"):
        run_batch(archive, f"sqlite:///{tmp_path / 'r.sqlite3'}", workers=64)
    with pytest.raises(Exception, match="cannot reach the database") as info:
        run_batch(archive, f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none")
    assert "secret" not in str(info.value)


def test_every_good_image_once_bad_ones_recorded_and_a_rerun_skips(archive, db_url):
    first = run_batch(archive, db_url)
    assert (first.done, first.failed, first.skipped) == (GOOD_IMAGES, BAD_FILES, 0)
    table = by_image(db_url)
    assert len(table) == GOOD_IMAGES + BAD_FILES
    assert "smaller than one" in table["tiny.dcm"]["error"] and table["tiny.dcm"]["status"] == "failed"
    assert "truncated.png" in table["truncated.png"]["error"] and "broken.dcm" in table["broken.dcm"]["error"]
    assert "empty.png: file is empty" in table["empty.png"]["error"]  # named as an image: not passed over
    loaded = load_detector("mc")
    for name in ("img0.dat", "img1.png"):  # the same clusters as `mccscan scan`
        path = next(Path(archive).rglob(name))
        expected = [c.to_dict() for c in scan_file(path, loaded)[0].findings]
        assert json.loads(table[name]["clusters"]) == expected and table[name]["n_clusters"] == len(expected)
        assert table[name]["weights_sha256"] == loaded.sha256 and table[name]["model_name"] == "mc"
    again = run_batch(archive, db_url)
    assert (again.done, again.failed, again.skipped) == (0, BAD_FILES, GOOD_IMAGES)  # failed ones are tried again
    assert len(by_image(db_url)) == GOOD_IMAGES + BAD_FILES


def test_the_command_prints_a_summary_exports_csv_and_fails_when_an_image_failed(archive, tmp_path, capsys):
    import csv
    from datetime import datetime, timedelta, timezone

    from mccscan.cli import main

    db = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    assert main(["batch", str(archive), "--db", db, "--export", str(tmp_path / "table.csv")]) == 1
    out = capsys.readouterr()
    assert f"{GOOD_IMAGES + BAD_FILES} images: {GOOD_IMAGES} scanned, {BAD_FILES} failed, 0 already done" in out.out
    assert "failed: " in out.err and "tiny.dcm" in out.err
    with open(tmp_path / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == GOOD_IMAGES + BAD_FILES and {r["status"] for r in table} == {"done", "failed"}
    finished = datetime.fromisoformat(table[0]["finished_at"])  # ISO 8601 in UTC, not Unix seconds
    assert finished.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - finished) < timedelta(hours=1)


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
    assert (resumed.skipped, resumed.done, resumed.failed) == (done_before, GOOD_IMAGES - done_before, BAD_FILES)
    table = by_image(db_url)
    assert len(table) == GOOD_IMAGES + BAD_FILES
    assert sum(r["status"] == "done" for r in table.values()) == GOOD_IMAGES


def _crashing_ray(marked: str) -> None:
    """Start Ray with a worker setup hook that kills the process handling `marked` (see components)."""
    import ray

    ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, runtime_env={
        "worker_process_setup_hook": "components.crash_on_marked_image",
        "env_vars": {"PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}${{PYTHONPATH}}", CRASH_ON: marked}})


def test_an_image_that_kills_its_scan_worker_is_recorded_and_the_batch_goes_on(archive, tmp_path):
    """A worker that dies (as one killed for memory does) loses only the image it was scanning:
    the batch goes on, and the image, retried once, is recorded as failed."""
    import ray

    _crashing_ray("scan:img4.dat")
    url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    try:
        summary = run_batch(archive, url)
    finally:
        ray.shutdown()
    assert (summary.done, summary.failed, summary.skipped) == (GOOD_IMAGES - 1, BAD_FILES + 1, 0)
    table = by_image(url)
    assert len(table) == GOOD_IMAGES + BAD_FILES
    assert table["img4.dat"]["status"] == "failed"
    assert "died while scanning it, 2 times" in table["img4.dat"]["error"]
    assert sum(r["status"] == "done" for r in table.values()) == GOOD_IMAGES - 1


def test_workers_that_keep_dying_or_a_crashing_decoder_stop_the_batch_with_a_clear_error(archive, tmp_path,
                                                                                          monkeypatch):
    """Workers dying with no image scanned in between (a machine short of memory) stop the batch
    after MAX_WORKER_DEATHS; a read task whose process dies is retried once, then stops it (not
    retried forever, as Ray Data would)."""
    import ray

    import mccscan.batch

    monkeypatch.setattr(mccscan.batch, "MAX_WORKER_DEATHS", 1)
    for marked, message in (("scan:*", "2 scan workers died with no image scanned in between"),
                            ("read:img4.dat", "a read task died twice while decoding")):
        _crashing_ray(marked)
        try:
            with pytest.raises(MccscanError, match=message):
                run_batch(archive, f"sqlite:///{tmp_path / marked.replace(':', '-')}.sqlite3")
        finally:
            ray.shutdown()


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
        assert (summary.done, summary.failed) == (GOOD_IMAGES, BAD_FILES)
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


def test_same_content_twice_a_fixed_file_and_new_options(tmp_path, db_url):
    """One row per content; a file that failed and was then fixed keeps only its done row; another
    threshold is another scan with rows of its own."""
    import shutil

    from mccscan.datasets.phantom import make_phantom

    folder = tmp_path / "small"
    make_phantom(260_100, size=(720, 640), n_clusters=1).write(folder, stem="a", formats=("png",))
    shutil.copy(folder / "a.png", folder / "copy_of_a.png")
    whole = (folder / "a.png").read_bytes()
    (folder / "b.png").write_bytes(whole[:2000])  # still being copied in: truncated
    first = run_batch(folder, db_url)
    assert (first.done, first.duplicates, first.failed) == (1, 1, 1)
    make_phantom(260_101, size=(720, 640), n_clusters=1).write(folder, stem="b", formats=("png",))  # now whole
    second = run_batch(folder, db_url)
    assert (second.done, second.failed, second.skipped) == (1, 0, 2)
    table = by_image(db_url)
    assert {name: r["status"] for name, r in table.items() if name.startswith("b")} == {"b.png": "done"}
    stricter = run_batch(folder, db_url, threshold=0.99)
    assert stricter.done == 2 and stricter.skipped == 0  # new options: scanned again, new rows
    assert len(rows(create_engine(db_url))) == 4


def test_study_lists_empty_sources_and_malformed_database_urls_are_clear(tmp_path):
    from mccscan.batch import read_study_list

    listed = tmp_path / "studies.txt"
    listed.write_text("StudyInstanceUID\n1.2.3\n\n# a comment\n 1.2.4 \n")
    assert read_study_list(listed) == ["1.2.3", "1.2.4"]
    listed.write_text("1.2.3\nnot-a-uid\n")
    with pytest.raises(ValueError, match="not Study Instance UIDs: not-a-uid"):
        read_study_list(listed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no mammogram found"):
        run_batch(tmp_path / "empty", f"sqlite:///{tmp_path / 'r.sqlite3'}")
    with pytest.raises(ValueError, match=r"malformed") as info:
        run_batch(tmp_path / "empty", "postgresql//user:secret@db/results")
    assert "secret" not in str(info.value)
