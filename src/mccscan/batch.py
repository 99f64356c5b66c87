"""`mccscan batch`: scan a whole archive on Ray Data into a database, resumably.

Pipeline, streamed by Ray Data: list the images → read (CPU tasks: hash the file, skip it if
done with these weights, decode, resample to 70 µm) → scan (actors holding the model, one
per worker) → the driver writes one row per image, in its own transaction, as results
arrive. Ray's backpressure bounds the images in flight, so memory does not grow with the
archive. Ray starts in this process unless `ray_address` names a cluster; the same code
runs on both.

Every image is recorded once per weights and scan options (`results_table`): a killed
batch, rerun, skips what is done and scans the rest; a failed image is recorded with its
reason and never stops the batch. A scan worker that dies (killed for memory, say) takes
only the image it was scanning with it: the pipeline restarts on what is left, and an image
that two workers died on is recorded as failed. A read task whose process dies (a crash in
a decoder) is retried once, then ends the batch with an error.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from mccscan.errors import InputError, MccscanError, MissingDataError
from mccscan.io import IMAGE_SUFFIXES
from mccscan.weights import file_sha256

NO_IMAGE = np.zeros((1, 1), np.float32)  # the image column of a row with no image (skipped, failed)
READ_CPUS = 0.5  # Ray CPUs a read task asks for; a scan worker asks for 1
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")  # PNG, JPEG, TIFF
PGM_MAGIC = re.compile(rb"P[25]\s+(#[^\n]*\n\s*)*\d+\s+\d+")  # binary or plain PGM: magic, then width height
# The environment of read tasks and scan workers (1 worker on 2 cores, batch_scale.py): OpenMP
# threads sleep, not spin, while they wait, or they steal the cores the other stages and Ray need
# (2.7 → 3.05 images/s); glibc keeps freed image-sized buffers for the next image instead of
# returning each to the kernel and faulting it back in (3.05 → 3.21)
RAY_ENV = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
                        "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}}
DB_ATTEMPTS = 4  # a database that does not answer is tried again after 1, 2 and 4 s
DEATHS_TO_FAIL = 2  # an image is recorded as failed when a worker died scanning it this often
MAX_WORKER_DEATHS = 10  # this many workers dead with no image scanned in between stop the batch (short of memory)


def looks_like_image(path: Path) -> bool:
    """Whether a file's first bytes are those of a DICOM, PNG, JPEG, TIFF or PGM file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head.startswith(MAGIC) or PGM_MAGIC.match(head) is not None


def list_images(source: str | Path, studies: list[str] | None = None) -> list[str]:
    """The mammograms a source names: every image file under a folder (found by content, not
    extension, plus any named as an image, so a broken one fails loudly; hidden files
    skipped), the paths in a CSV (a `path` column, else the first
    column; relative paths are relative to the CSV), or the MG images of `studies` in a PACS
    whose DICOMweb root `source` is (as URL#study/series/instance). Sorted, each once."""
    if str(source).startswith(("http://", "https://")):
        return _list_dicomweb(str(source), studies)
    if studies:
        raise InputError("--studies is for a DICOMweb source")
    source = Path(source)
    if not source.exists():
        raise MissingDataError(f"{source}: no such folder, CSV or image file")
    if source.is_dir():
        found = (p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                           p.relative_to(source).parts))
        # a file named as an image is meant to be scanned: listed whatever its content, so a broken one fails loudly
        return sorted({str(p.absolute()) for p in found if p.suffix.lower() in IMAGE_SUFFIXES or looks_like_image(p)})
    if looks_like_image(source):
        return [str(source.absolute())]
    return _list_csv(source)


def _list_csv(source: Path) -> list[str]:
    """The paths in a CSV: its `path` column (any case) if it has a header naming one, else its
    first column; relative paths are relative to the CSV. A path that does not exist is kept
    (it will be recorded as failed)."""
    try:
        with open(source, newline="", encoding="utf-8") as fh:
            table = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{source}: neither a mammogram nor a CSV of paths ({exc})") from exc
    if not table:
        raise InputError(f"{source}: empty CSV; expected a column of image paths")
    names = [cell.strip().lower() for cell in table[0]]
    column, body = (names.index("path"), table[1:]) if "path" in names else (0, table)
    return sorted({str((source.parent / row[column].strip()).absolute()) for row in body
                   if len(row) > column and row[column].strip()})


UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def read_study_list(path: str | Path) -> list[str]:
    """Study Instance UIDs, one a line; blank lines, `#` comments and a header line are skipped."""
    try:
        lines = [line.split("#", 1)[0].strip().strip('"') for line in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingDataError(f"{path}: cannot read the study list ({exc})") from exc
    lines = [line for line in lines if line]
    if lines and not UID.fullmatch(lines[0]):
        lines = lines[1:]  # a header such as StudyInstanceUID
    bad = [line for line in lines if not UID.fullmatch(line) or len(line) > 64]
    if bad:
        raise InputError(f"{path}: not Study Instance UIDs: {', '.join(bad[:3])}")
    if not lines:
        raise InputError(f"{path}: no Study Instance UID in it")
    return lines


def _list_dicomweb(url: str, studies: list[str] | None) -> list[str]:
    from mccscan.dicomweb import connect, find_images

    if not studies:
        raise InputError(f"{url}: say which studies to scan (--studies FILE, one Study Instance UID a line)")
    client = connect(url)
    found = {study: find_images(client, study=study) for study in studies}
    empty = [study for study, refs in found.items() if not refs]
    if empty:
        logging.getLogger(__name__).warning("%d of %d studies have no MG image at %s: %s", len(empty),
                                            len(studies), url, ", ".join(empty[:3]))
    return sorted({f"{url}#{r.study}/{r.series}/{r.sop}" for refs in found.values() for r in refs})


def _fetched(path: str, folder: str) -> str:
    """A local file for an image: the path itself, or a PACS image (URL#study/series/instance)
    retrieved with WADO-RS into `folder`."""
    if "#" not in path or not path.startswith(("http://", "https://")):
        return path
    from mccscan.dicomweb import ImageRef, connect, fetch

    url, uids = path.split("#", 1)
    return str(fetch(connect(url), ImageRef(*uids.split("/")), folder))


def read_stage(row: dict, *, done: frozenset, pixel_spacing_mm: float | None, max_pixels: int | None) -> dict:
    """Ray task: hash the file; unless done, decode it and bring it to 70 µm. Never raises: a
    bad file becomes a row that says why. The 70 µm image travels as an array column (read in
    place from Ray's shared memory by the scan worker); the rest of what was read beside it."""
    from mccscan.scan import prepare_file

    path, start = row["path"], time.perf_counter()
    out = {"path": path, "sha256": "", "status": "read", "error": "", "prepared": None, "image": NO_IMAGE,
           "read_s": 0.0}
    with tempfile.TemporaryDirectory(prefix="mccscan-batch-") as folder:
        try:
            local = _fetched(path, folder)
            before = _stamp(local)
            out["sha256"] = file_sha256(local)
        except (OSError, MccscanError) as exc:
            reason = f"cannot read the file ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
            return {**out, "sha256": hashlib.sha256(f"unreadable:{path}".encode()).hexdigest(), "status": "failed",
                    "error": f"{path}: {reason}"}
        if out["sha256"] in done:
            return {**out, "status": "skipped"}
        try:
            prepared = prepare_file(local, pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels)
            if _stamp(local) != before:  # still being copied in: the hash and the pixels would disagree
                raise MccscanError(f"{path}: the file changed while it was read; rerun the batch once it is whole")
            out["image"], out["prepared"] = prepared.image, prepared.without_pixels()
        except MccscanError as exc:
            return {**out, "status": "failed", "error": str(exc).replace(local, path)}
        except Exception as exc:  # noqa: BLE001 — one file's surprise must not stop the batch
            return {**out, "status": "failed", "error": f"{path}: {type(exc).__name__}: {exc}"}
    return {**out, "read_s": time.perf_counter() - start}


def _stamp(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


class ScanWorker:
    """Ray actor: holds the model, scans what the read tasks prepared. It tells the `InFlight`
    ledger which image it is scanning, so that if it dies the driver knows which one."""

    def __init__(self, detector: str | None, weights: str | None, scan_options: dict, options: str, threads: int,
                 in_flight):
        import socket

        import ray
        import torch

        from mccscan.weights import load_detector

        torch.set_num_threads(threads)
        self.loaded, self.scan_options, self.options = load_detector(detector, weights), scan_options, options
        self.in_flight, self.actor_id = in_flight, ray.get_runtime_context().get_actor_id()
        node = ray.get_runtime_context().get_node_id()[:8]
        self.name = f"{socket.gethostname()}/node {node}/pid {os.getpid()}"  # two nodes may share a host

    def __call__(self, row: dict) -> dict:
        """A results-table row for what the read task made (status "skipped" for an image done
        before: the driver writes no row for it), with the worker's name and peak RSS."""
        import resource

        import ray

        from mccscan.results_table import result_row
        from mccscan.scan import scan_prepared

        status, error, result, scan_s = row["status"], row["error"] or None, None, row["read_s"]
        if status == "read":
            start = time.perf_counter()
            ray.get(self.in_flight.start.remote(self.actor_id, row["path"], row["sha256"], self.name))
            try:
                result = scan_prepared(replace(row["prepared"], image=row["image"]), self.loaded,
                                       name=Path(row["path"]).name, **self.scan_options)
                status, scan_s = "done", scan_s + time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001 — recorded as failed, the batch goes on
                status, error = "failed", f"{row['path']}: scan failed ({type(exc).__name__}: {exc})"
            finally:
                ray.get(self.in_flight.end.remote(self.actor_id))
        # a skipped image gets the columns (and types) of any row: Ray joins blocks by their schema
        table_row = result_row(image_path=row["path"], image_sha256=row["sha256"], weights_sha256=self.loaded.sha256,
                               options=self.options, model_name=self.loaded.name,
                               status="done" if status == "skipped" else status, error=error, result=result,
                               scan_s=scan_s, worker=self.name)
        return {**table_row, "status": status,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class InFlight:
    """Ray actor: the image each scan worker is scanning, so that when a worker dies the
    driver knows which image it died on."""

    def __init__(self):
        self.scanning: dict[str, tuple[str, str, str]] = {}  # actor id → (path, SHA-256, worker name)

    def start(self, actor_id: str, path: str, sha256: str, worker: str) -> None:
        self.scanning[actor_id] = (path, sha256, worker)

    def end(self, actor_id: str) -> None:
        self.scanning.pop(actor_id, None)

    def died(self, actor_id: str) -> tuple[str, str, str] | None:
        return self.scanning.pop(actor_id, None)


@dataclass
class BatchSummary:
    images: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # done before, with the same weights and options
    duplicates: int = 0  # the content of an image met earlier in this run, under another path
    weights_sha256: str = ""
    options: str = ""  # the scan options, as the table keys them
    elapsed_s: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # per scan worker
    failures: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.done + self.failed) / self.elapsed_s if self.elapsed_s else 0.0


def start_ray(address: str | None) -> bool:
    """Join the cluster at `address` (or at RAY_ADDRESS, as Ray jobs set it), or start Ray in
    this process, quietly. Returns whether Ray runs on this machine alone."""
    try:
        import ray
    except ModuleNotFoundError:
        raise InputError("mccscan batch runs on Ray: pip install 'mccscan[archive]' (in a checkout: "
                         "pip install -e '.[archive]')") from None

    local = not (address or os.environ.get("RAY_ADDRESS"))
    if ray.is_initialized():
        return local
    options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if local:  # one CPU more than the machine has, so read tasks run beside busy scan workers
        ray.init(num_cpus=(os.cpu_count() or 1) + 1, **options)
    else:
        ray.init(address=address, **options)
    return local


def _check_cpus(workers: int, local: bool) -> None:
    """Refuse more scan workers than the cluster has CPUs for (Ray would wait for them forever)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if workers + READ_CPUS > cpus:
        fit = max(0, int(cpus - READ_CPUS))
        where = f"this machine has {os.cpu_count()} cores" if local else f"the cluster has {cpus:g} CPUs"
        raise InputError(f"--workers {workers}: {where}; at most {fit} scan worker(s) fit beside the read tasks")


def _write(engine, row: dict, db: str) -> None:
    """Record a row, waiting for a database that does not answer (restarting, say)."""
    import sqlalchemy

    from mccscan.results_table import COLUMNS, record

    for attempt in range(DB_ATTEMPTS):
        try:
            return record(engine, {k: row[k] for k in COLUMNS})
        except sqlalchemy.exc.OperationalError as exc:
            if attempt == DB_ATTEMPTS - 1:
                raise MccscanError(f"{db}: the database does not answer ({type(exc.orig).__name__}); the rows "
                                   "written so far are kept: rerun to go on") from exc
            time.sleep(2 ** attempt)


def run_batch(source: str | Path, db_url: str, *, studies: list[str] | None = None, workers: int = 1,
              ray_address: str | None = None, detector: str | None = None, weights: str | None = None,
              threshold: float | None = None, min_breast_fraction: float | None = None,
              pixel_spacing_mm: float | None = None, max_pixels: int | None = None, progress: bool = False,
              on_row: Callable[[dict], None] | None = None) -> BatchSummary:
    """Scan every image of `source` not yet done with these weights and options; rows go to
    `db_url`. `progress` shows a bar with images/s and the time left; `on_row` sees each row.
    Locally each worker uses its share of the cores; on a cluster one core (one worker a core)."""
    import sqlalchemy
    from tqdm import tqdm

    from mccscan.database import create_engine, redacted
    from mccscan.io import DEFAULT_MAX_PIXELS
    from mccscan.results_table import create_table, done_images, options_key, result_row
    from mccscan.scan import DEFAULT_MIN_BREAST_FRACTION, default_threshold
    from mccscan.weights import load_detector

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    engine, db = create_engine(db_url), redacted(db_url)  # a malformed URL fails before a long listing
    paths = list_images(source, studies)
    if not paths:
        raise MissingDataError(f"{source}: no mammogram found (files are recognised by content: DICOM, PNG, JPEG, "
                               "TIFF, PGM)")
    loaded = load_detector(detector, weights)  # its name and SHA-256 key the rows
    # the options as they will act (defaults resolved), so the same scan always has the same key
    scan_options = {"threshold": default_threshold(loaded) if threshold is None else threshold,
                    "min_breast_fraction": DEFAULT_MIN_BREAST_FRACTION if min_breast_fraction is None
                    else min_breast_fraction}
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    options = options_key({**scan_options, "pixel_spacing_mm": pixel_spacing_mm, "max_pixels": max_pixels})
    try:
        create_table(engine)
        done = frozenset(done_images(engine, loaded.sha256, options))
    except sqlalchemy.exc.OperationalError as exc:
        raise MccscanError(f"{db}: cannot reach the database ({type(exc.orig).__name__}: {exc.orig})") from exc
    summary, start = BatchSummary(len(paths), weights_sha256=loaded.sha256, options=options), time.perf_counter()
    local = start_ray(ray_address)
    import ray

    _check_cpus(workers, local)
    threads = max(1, (os.cpu_count() or 1) // workers) if local else 1
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images; Ray's count blocks per operator
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    in_flight = ray.remote(num_cpus=0)(InFlight).remote()
    stages = dict(read=dict(pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels),
                  scan=dict(detector=detector, weights=weights, scan_options=scan_options, options=options,
                            threads=threads, in_flight=in_flight))
    seen: set[str] = set()  # content written in this run
    handled: set[str] = set()  # paths with a result in this run (written, skipped or a duplicate)
    deaths = WorkerDeaths()
    with tqdm(total=len(paths), unit="image", desc="batch", disable=not progress, smoothing=0.1) as bar:
        def handle(row: dict) -> None:
            bar.update(1)
            handled.add(row["image_path"])
            _tally(summary, row, seen, engine, db)
            summary.elapsed_s = time.perf_counter() - start
            if row["status"] == "done":
                deaths.progress()
            if on_row is not None:
                on_row(row)

        while len(handled) < len(paths):
            rows = _pipeline([p for p in paths if p not in handled], done, workers, stages).iter_rows()
            try:
                for row in rows:
                    handle(row)
            except ray.exceptions.ActorDiedError as exc:  # a scan worker died: go on without what it scanned
                failed = deaths.record(exc, in_flight)
                if failed is not None:
                    path, sha256, worker, error = failed
                    handle(result_row(image_path=path, image_sha256=sha256, weights_sha256=loaded.sha256,
                                      options=options, model_name=loaded.name, status="failed", error=error,
                                      worker=worker))
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as exc:
                raise MccscanError(f"a read task died twice while decoding an image ({_ray_reason(exc)}); the rows "
                                   "written so far are kept: rerun to go on") from exc
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _ray_reason(exc) -> str:
    """The line of a Ray error that says why a process died (its last), shortened."""
    lines = (getattr(exc, "error_msg", None) or str(exc)).strip().splitlines()
    return lines[-1][:300] if lines else type(exc).__name__


@dataclass
class WorkerDeaths:
    """The scan workers that died in this run: per image, and since the last image scanned."""

    per_image: dict[str, int] = field(default_factory=dict)
    since_progress: int = 0

    def progress(self) -> None:
        """An image was scanned: the machine can still scan."""
        self.since_progress = 0

    def record(self, exc, in_flight) -> tuple[str, str, str, str] | None:
        """Count a worker's death. Returns (path, SHA-256, worker, error) for the image it was
        scanning once workers have died on it DEATHS_TO_FAIL times; None before (the image is
        tried again) and for a worker that died between images. MccscanError for a worker that
        could not start, or when MAX_WORKER_DEATHS died with no image scanned in between."""
        import ray

        why = _ray_reason(exc)
        if exc.actor_init_failed:
            raise MccscanError(f"a scan worker could not start ({why})") from exc
        victim = ray.get(in_flight.died.remote(exc.actor_id)) if exc.actor_id else None
        self.since_progress += 1
        if self.since_progress > MAX_WORKER_DEATHS:
            raise MccscanError(f"{self.since_progress} scan workers died with no image scanned in between (the last: "
                               f"{why}); is the machine short of memory? The rows written so far are kept: rerun to "
                               "go on") from exc
        log = logging.getLogger(__name__)
        if victim is None:
            log.warning("a scan worker died between images (%s); going on", why)
            return None
        path, sha256, worker = victim
        self.per_image[path] = died = self.per_image.get(path, 0) + 1
        log.warning("%s: the scan worker died while scanning it, %d of %d times (%s)", path, died, DEATHS_TO_FAIL, why)
        if died < DEATHS_TO_FAIL:
            return None
        return path, sha256, worker, (f"{path}: the scan worker died while scanning it, {died} times (killed for "
                                      "memory, or a crash)")


def _pipeline(paths: list[str], done: frozenset, workers: int, stages: dict):
    """The Ray Data pipeline over `paths`: read tasks, then scan workers (rows out)."""
    import ray

    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=min(len(paths), 1000))
    with warnings.catch_warnings():  # Ray 2.6x moves max_retries/max_restarts; they are still the way to set them
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        # a read task whose process dies (a crash in a decoder) is retried once, then ends the batch (not forever)
        dataset = dataset.map(read_stage, num_cpus=READ_CPUS, compute=ray.data.TaskPoolStrategy(size=workers + 1),
                              runtime_env=RAY_ENV, max_retries=DEATHS_TO_FAIL - 1,
                              fn_kwargs=dict(done=done, **stages["read"]))
        # no restarts: Ray would retry the image a worker died on; run_batch decides instead
        return dataset.map(ScanWorker, fn_constructor_kwargs=stages["scan"],
                           compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, max_restarts=0,
                           runtime_env=RAY_ENV,
                           scheduling_strategy="SPREAD")  # workers on as many machines as there are


def _tally(summary: BatchSummary, row: dict, seen: set[str], engine, db: str) -> None:
    """Write a row (unless its image was done before, or met under another path in this run)
    and count it."""
    if row["status"] == "skipped":
        summary.skipped += 1
        return
    if row["image_sha256"] in seen:  # scanned under another path in this run: a failure here must not overwrite it
        summary.duplicates += 1
        return
    _write(engine, row, db)
    if row["status"] == "done":
        seen.add(row["image_sha256"])
        summary.done += 1
    else:
        summary.failed += 1
        summary.failures.append(row["error"])
    if "peak_rss_mb" in row:  # not for an image its worker died on
        summary.peak_rss_mb[row["worker"]] = max(summary.peak_rss_mb.get(row["worker"], 0), row["peak_rss_mb"])
