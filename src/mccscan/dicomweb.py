"""Scan the mammograms a PACS holds, over DICOMweb, and store the results back in it.

Everything that touches images is standard DICOMweb (dicomweb-client): QIDO-RS finds the MG
images of a study, series or instance, WADO-RS fetches each, STOW-RS stores the SR and the
parametric map into the image's own study. `watch` follows a PACS for new images through
Orthanc's /changes feed, the one call that is not DICOMweb (DICOMweb has no change feed);
each change is then resolved and fetched over DICOMweb like any other image.

`watch` is resumable: its state (the last change handled and every MG image's outcome) is
saved after each image in `watch-state.json` in the output folder, so a restart neither
rescans nor skips an image (a crash between storing an SR and saving the state rescans that
one image and stores a second SR). It holds at most `batch_size` changes at a time; the
backlog stays in the PACS. A failed image is logged with its reason, recorded, and skipped;
a PACS that does not answer is not the image's fault: the watcher waits and tries it again.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mccscan.atomic import atomic_write_text
from mccscan.dicom_results import build_dicom_results, dicom_results_paths, save_dicom_results, write_dicom_results
from mccscan.errors import InputError, MccscanError
from mccscan.scan import ScanResult, scan_file
from mccscan.weights import LoadedModel

MAMMOGRAPHY = "MG"  # the modality scanned; results (SR, OT) and other modalities are left alone
DEFAULT_POLL_S = 1.0
DEFAULT_BATCH_SIZE = 100
DEFAULT_TIMEOUT_S = 60.0
UNREACHABLE_WAIT_S = 10.0
STATE_FILE = "watch-state.json"
RETRY_ATTEMPTS, RETRY_WAIT_MS = 3, 250  # a busy or restarting PACS gets ~1.5 s; dicomweb-client's default is ~30 s


class PacsError(MccscanError):
    """The PACS could not be reached or refused a request; the message names the URL."""


@dataclass(frozen=True)
class ImageRef:
    """Where an image is in the PACS."""

    study: str
    series: str
    sop: str

    @classmethod
    def from_qido(cls, item: dict) -> "ImageRef":
        def uid(tag: str) -> str:
            return item[tag]["Value"][0]

        return cls(uid("0020000D"), uid("0020000E"), uid("00080018"))


def connect(url: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """A DICOMweb client for the service root `url` (e.g. http://pacs:8042/dicom-web)."""
    from dicomweb_client.api import DICOMwebClient

    if not url.startswith(("http://", "https://")):
        raise InputError(f"DICOMweb URL must start with http:// or https://, got {url!r}")
    client = DICOMwebClient(url.rstrip("/"), timeout=timeout_s)
    client.set_http_retry_params(max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_WAIT_MS)
    return client


def _pacs_call(client, what: str, call: Callable, *args, **kwargs):
    """Run one DICOMweb request; a network or HTTP failure becomes a PacsError naming it."""
    import requests
    import retrying

    try:
        return call(*args, **kwargs)
    except retrying.RetryError as exc:  # dicomweb-client gave up on a busy PACS (429, 503, 504, …)
        response = exc.last_attempt.value
        status = getattr(response, "status_code", "?") if not exc.last_attempt.has_exception else "?"
        raise PacsError(f"{client.base_url}: {what} failed after {RETRY_ATTEMPTS} attempts "
                        f"(HTTP {status})") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        hint = " (is the URL the DICOMweb root, e.g. http://host:8042/dicom-web?)" if status == 404 else ""
        raise PacsError(f"{client.base_url}: {what} failed with HTTP {status}{hint}") from exc
    except requests.RequestException as exc:
        raise PacsError(f"{client.base_url}: {what} failed ({type(exc).__name__}: {exc})") from exc
    except ValueError as exc:  # dicomweb-client checks UIDs before it asks
        raise InputError(f"{what}: {exc}") from exc


def find_images(client, *, study: str | None = None, series: str | None = None,
                instance: str | None = None) -> list[ImageRef]:
    """The MG images of a study, a series or one instance (QIDO-RS)."""
    study, series, instance = (uid.strip() if uid else uid for uid in (study, series, instance))
    if not (study or series or instance):
        raise InputError("say which images to scan: a study, a series or an instance UID")
    filters = {"Modality": MAMMOGRAPHY}
    if series:
        filters["SeriesInstanceUID"] = series
    if instance:
        filters["SOPInstanceUID"] = instance
    found = _pacs_call(client, "QIDO-RS search", client.search_for_instances, study_instance_uid=study,
                       search_filters=filters, get_remaining=True)
    return [ImageRef.from_qido(item) for item in found]


def fetch(client, ref: ImageRef, folder: str | Path) -> Path:
    """Retrieve one image (WADO-RS) into `folder` as <SOP UID>.dcm, in its stored transfer syntax."""
    dataset = _pacs_call(client, f"WADO-RS retrieve of {ref.sop}", client.retrieve_instance,
                         ref.study, ref.series, ref.sop, media_types=(("application/dicom", "*"),))
    path = Path(folder) / f"{ref.sop}.dcm"
    dataset.save_as(path, enforce_file_format=False)
    return path


def send(client, items: list) -> list[str]:
    """Store DICOM datasets or files into the PACS (STOW-RS); returns their SOP Instance UIDs."""
    import pydicom

    datasets = [item if isinstance(item, pydicom.Dataset) else pydicom.dcmread(item) for item in items]
    _pacs_call(client, "STOW-RS store", client.store_instances, datasets)
    return [ds.SOPInstanceUID for ds in datasets]


def has_instance(client, sop: str) -> bool:
    """Whether the PACS holds the instance (QIDO-RS)."""
    return bool(_pacs_call(client, "QIDO-RS search", client.search_for_instances,
                           search_filters={"SOPInstanceUID": sop}))


@dataclass
class SentScan:
    study: str
    sr: str  # SOP Instance UIDs stored
    pmap: str
    image_sent: bool  # the image itself too, because the PACS did not have it


def send_scan(client, result: ScanResult, image: Path, folder: Path, stem: str) -> SentScan:
    """Store a finished scan of the DICOM file `image` in the PACS: its SR and map (written into
    `folder` once, so sending again stores the same instances, not new ones), and the image
    first when the PACS lacks it (a file dropped in the web app)."""
    import pydicom

    paths = dicom_results_paths(folder, stem)
    if not all(p.exists() for p in paths.values()):
        paths = write_dicom_results(result, image, folder, stem)
    header = pydicom.dcmread(image, stop_before_pixels=True)
    image_sent = not has_instance(client, header.SOPInstanceUID)
    sent = send(client, ([image] if image_sent else []) + [paths["sr"], paths["pmap"]])
    return SentScan(header.StudyInstanceUID, sent[-2], sent[-1], image_sent)


@dataclass
class RemoteScan:
    ref: ImageRef
    result: ScanResult
    written: dict[str, Path]  # json, sr, pmap
    sent: list[str] = field(default_factory=list)  # SOP Instance UIDs stored back into the PACS


def scan_remote_image(client, ref: ImageRef, loaded: LoadedModel, out_dir: str | Path, *, send_back: bool = False,
                      **scan_options) -> RemoteScan:
    """Fetch one image, scan it, write <SOP UID>.json/.sr.dcm/.pmap.dcm into `out_dir`, and
    with `send_back` store the SR and map into the image's study."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mccscan-wado-") as folder:
        path = fetch(client, ref, folder)
        try:
            result, _ = scan_file(path, loaded, name=ref.sop, **scan_options)
            datasets = build_dicom_results(result, path)
        except MccscanError as exc:  # name the image as the PACS knows it, not the temporary file
            raise MccscanError(str(exc).replace(str(path), f"instance {ref.sop}")) from exc
    written = save_dicom_results(datasets, out_dir, ref.sop)
    written["json"] = atomic_write_text(out_dir / f"{ref.sop}.json", result.to_json() + "\n")
    sent = send(client, [datasets["sr"], datasets["pmap"]]) if send_back else []  # no re-read of what was written
    return RemoteScan(ref, result, written, sent)


# ---- watch ---------------------------------------------------------------------------------

@dataclass
class WatchState:
    """What `watch` has handled: the last Orthanc change and each image's outcome by SOP UID."""

    since: int = 0
    images: dict[str, str] = field(default_factory=dict)  # SOP UID → "done" or "failed: reason"

    @classmethod
    def load(cls, path: Path) -> "WatchState":
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(int(data["since"]), dict(data["images"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a watch state file ({exc}); move it away to start afresh") from exc

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"since": self.since, "images": self.images}, indent=1) + "\n")


def orthanc_rest_url(dicomweb_url: str) -> str:
    """Orthanc's REST root from its DICOMweb root (http://host:8042/dicom-web → http://host:8042)."""
    url = dicomweb_url.rstrip("/")
    return url[: -len("/dicom-web")] if url.endswith("/dicom-web") else url


class OrthancChanges:
    """New instances from Orthanc's /changes feed, as SOP Instance UIDs, in order."""

    def __init__(self, rest_url: str, session, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.rest_url, self.session, self.timeout_s = rest_url.rstrip("/"), session, timeout_s

    def _get(self, path: str, missing_ok: bool = False, **params) -> dict | None:
        import requests

        try:
            response = self.session.get(f"{self.rest_url}{path}", params=params, timeout=self.timeout_s)
            if missing_ok and response.status_code == 404:
                return None
            response.raise_for_status()
            return response.json()
        except requests.RequestException as exc:
            raise PacsError(f"{self.rest_url}{path}: {type(exc).__name__}: {exc}") from exc

    def page(self, since: int, limit: int) -> tuple[list[tuple[int, str]], int, bool]:
        """([(seq, Orthanc instance ID)], last seq, done) for at most `limit` changes after `since`."""
        data = self._get("/changes", since=since, limit=limit)
        new = [(c["Seq"], c["ID"]) for c in data["Changes"] if c["ChangeType"] == "NewInstance"]
        return new, int(data["Last"]), bool(data["Done"])

    def last(self) -> int:
        """The newest change's number: where a watch that ignores the images already there starts."""
        return int(self._get("/changes", last="")["Last"])

    def sop_uid(self, instance_id: str) -> str | None:
        """The SOP Instance UID of an Orthanc instance; None when it was deleted since."""
        data = self._get(f"/instances/{instance_id}", missing_ok=True)
        return None if data is None else data["MainDicomTags"]["SOPInstanceUID"]


@dataclass
class WatchCounts:
    scanned: int = 0
    failed: int = 0
    skipped: int = 0  # handled before this run


def watch(url: str, loaded: LoadedModel, out_dir: str | Path, *, send_back: bool = True,
          changes_url: str | None = None, poll_s: float = DEFAULT_POLL_S, batch_size: int = DEFAULT_BATCH_SIZE,
          once: bool = False, from_start: bool = False, stop: threading.Event | None = None,
          log: Callable[[str], None] = print, **scan_options) -> WatchCounts:
    """Scan every new MG image of the PACS at `url` once, storing results back (`send_back`).

    A first watch starts at the newest change: images already in the PACS are left alone
    unless `from_start` (then every MG image it holds is scanned too). Runs until `stop` is
    set (or, with `once`, until the feed is drained). `changes_url` is Orthanc's REST root
    (default: `url` without its /dicom-web)."""
    import requests

    if poll_s <= 0 or batch_size < 1:
        raise InputError("the poll interval must be positive and the batch size at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    first_watch = not state_path.exists()
    state = WatchState.load(state_path)
    client = connect(url)
    feed = OrthancChanges(changes_url or orthanc_rest_url(url), requests.Session())
    if first_watch and not from_start:
        state.since = feed.last()
        state.save(state_path)
        log(f"first watch: the images already in the PACS (up to change {state.since}) are not scanned; "
            "--from-start scans them too")
    stop = stop or threading.Event()
    counts = WatchCounts()
    log(f"watching {url} from change {state.since}; results in {out_dir}")
    while not stop.is_set():
        try:
            drained = _watch_page(feed, client, loaded, out_dir, send_back, state, state_path, counts, log,
                                  batch_size, stop, scan_options)
        except PacsError as exc:  # the PACS is down or restarting: wait, then go on where we were
            if once:
                raise
            log(f"PACS unreachable ({exc}); trying again in {UNREACHABLE_WAIT_S:.0f} s")
            stop.wait(UNREACHABLE_WAIT_S)
            continue
        if drained and once:
            break
        if drained:
            stop.wait(poll_s)
    return counts


def _watch_page(feed: OrthancChanges, client, loaded: LoadedModel, out_dir: Path, send_back: bool,
                state: WatchState, state_path: Path, counts: WatchCounts, log: Callable[[str], None],
                batch_size: int, stop: threading.Event, scan_options: dict) -> bool:
    """Handle one page of changes; True when the feed is drained. The state is saved after each
    image (and at the end of the page), never past a change not yet handled."""
    changes, last, drained = feed.page(state.since, batch_size)
    if last < state.since:  # a new Orthanc database: its feed starts again; handled images stay skipped
        log(f"the PACS's change feed restarted (last change {last} < {state.since}); reading it from the start")
        state.since = 0
        return False
    for seq, instance_id in changes:
        if stop.is_set():
            return False
        sop = feed.sop_uid(instance_id)
        if sop is not None and sop in state.images:
            counts.skipped += 1
            scanned = False
        else:
            scanned = sop is not None and _watch_one(client, sop, loaded, out_dir, send_back, state, counts, log,
                                                     scan_options)
        state.since = seq
        if scanned:
            state.save(state_path)
    if drained:
        state.since = max(state.since, last)
    state.save(state_path)
    return drained


def _watch_one(client, sop: str, loaded: LoadedModel, out_dir: Path, send_back: bool, state: WatchState,
               counts: WatchCounts, log: Callable[[str], None], scan_options: dict) -> bool:
    """Scan one new instance if it is an MG image and record the outcome; False when it is not
    a mammogram. A PACS failure (PacsError) is not the image's fault: it propagates, and the
    image is tried again once the PACS answers."""
    start = time.perf_counter()
    refs = find_images(client, instance=sop)
    if not refs:
        return False  # another modality (our own SR and map land here too)
    try:
        done = scan_remote_image(client, refs[0], loaded, out_dir, send_back=send_back, **scan_options)
    except PacsError:
        raise
    except MccscanError as exc:
        state.images[sop] = f"failed: {exc}"
    except Exception as exc:  # noqa: BLE001 — one image's surprise must not stop the watch
        state.images[sop] = f"failed: {type(exc).__name__}: {exc}"
    else:
        state.images[sop] = "done"
        counts.scanned += 1
        stored = f"; SR and map stored in study {done.ref.study}" if done.sent else ""
        log(f"scanned {sop}: {len(done.result.findings)} cluster(s) in {time.perf_counter() - start:.1f} s{stored}")
        return True
    counts.failed += 1
    log(f"failed  {sop}: {state.images[sop][len('failed: '):]}")
    return True
