"""Real components for the tests, started on a free loopback port in a temporary folder and
stopped after. A missing component is a failure, never a skip: `.ci/run` installs them."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
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
