"""Real components for the tests, started on a free loopback port in a temporary folder and
stopped after. A missing component is a failure, never a skip: `.ci/run` installs them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def orthanc(folder: Path):
    """Debian's Orthanc with its DICOMweb plugin; yields its DICOMweb root URL. Remote access
    is off, so it answers loopback clients only; its DICOM port is closed."""
    binary = shutil.which("Orthanc")
    assert binary and ORTHANC_DICOMWEB_PLUGIN.exists(), \
        "Orthanc is missing: apt-get install -y orthanc orthanc-dicomweb (.ci/run does)"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"Name": "mccscan-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"Orthanc exited at start: {(folder / 'orthanc.log').read_text()[-2000:]}"
            try:
                if httpx.get(f"{root}/dicom-web/studies", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Orthanc did not answer within {START_TIMEOUT_S} s"
            time.sleep(0.1)
        yield f"{root}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@contextlib.contextmanager
def postgresql():
    """Debian's PostgreSQL: a fresh cluster (initdb) in a temporary folder, started with pg_ctl
    on a free loopback port (trust authentication: only this machine's processes reach it),
    stopped and removed after. Yields its URL; `new_database` makes one database per test.
    As root, the server runs as the `postgres` user, since PostgreSQL refuses to run as root."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert found, "PostgreSQL is missing: apt-get install -y postgresql (.ci/run does)"
    bin_dir = found[-1].parent
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="mccscan-postgresql-"))
    if as_server:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_server, *command], check=True, capture_output=True, timeout=START_TIMEOUT_S * 2)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "mccscan", "--auth=trust", "--no-sync", "-E", "UTF8")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t",
            str(START_TIMEOUT_S), "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off", "start")
        yield f"postgresql://mccscan@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    import sqlalchemy

    name = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(server_url.replace("postgresql://", "postgresql+psycopg://"),
                                      isolation_level="AUTOCOMMIT")
    with engine.connect() as db:
        db.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


CRASH_ON = "MCCSCAN_TEST_CRASH_ON"  # "scan:NAME", "read:NAME" or "scan:*" (see crash_on_marked_image)


def crash_on_marked_image() -> None:
    """Ray worker setup hook: the process that is to scan (or read) the image named by
    $MCCSCAN_TEST_CRASH_ON ("scan:img4.dat", "read:img4.dat"; "scan:*" for every image) dies at
    once, with no Python exception, as a process killed for memory or a crashing decoder does."""
    import mccscan.scan as scan

    stage, marked = os.environ[CRASH_ON].split(":", 1)
    if stage == "scan":
        scan_prepared = scan.scan_prepared

        def scan_or_die(scan_img, loaded, *, name: str, **kwargs):
            if marked in ("*", name):
                os._exit(137)
            return scan_prepared(scan_img, loaded, name=name, **kwargs)

        scan.scan_prepared = scan_or_die
    else:
        prepare_file = scan.prepare_file

        def read_or_die(path, **kwargs):
            if Path(path).name == marked:
                os._exit(139)
            return prepare_file(path, **kwargs)

        scan.prepare_file = read_or_die
