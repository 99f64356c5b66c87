"""`mccscan batch`: scan a whole archive on Ray Data into a database, resumably.

Pipeline, streamed by Ray Data: list the images → read (CPU tasks: hash the file, skip it if
done with these weights, decode, resample to 70 µm) → scan (actors holding the model, one
per worker) → the driver writes one row per image, in its own transaction, as results
arrive. Ray's backpressure bounds the images in flight, so memory does not grow with the
archive. Ray starts in this process unless `ray_address` names a cluster; the same code
runs on both.

Every image is recorded once per weights (`results_table`): a killed batch, rerun, skips
what is done and scans the rest; a failed image is recorded with its reason and never
stops the batch.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from mccscan.errors import InputError, MccscanError, MissingDataError

NO_IMAGE = np.zeros((1, 1), np.float32)  # the image column of a row with no image (skipped, failed)
READ_CPUS = 0.5  # Ray CPUs a read task asks for; a scan worker asks for 1
HASH_CHUNK_BYTES = 1 << 20
MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"P5", b"P2")  # PNG, JPEG, TIFF, PGM


def looks_like_image(path: Path) -> bool:
    """Whether a file's first bytes are those of a DICOM, PNG, JPEG, TIFF or PGM file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or head.startswith(MAGIC)


def list_images(source: str | Path, studies: list[str] | None = None) -> list[str]:
    """The mammograms a source names: every image file under a folder (found by content, not
    extension; hidden files skipped), the paths in a CSV (a `path` column, else the first
    column; relative paths are relative to the CSV), or the MG images of `studies` in a PACS
    whose DICOMweb root `source` is (as URL#study/series/instance). Sorted, each once."""
    if str(source).startswith(("http://", "https://")):
        return _list_dicomweb(str(source), studies)
    if studies:
        raise InputError("--studies is for a DICOMweb source")
    source = Path(source)
    if not source.exists():
        raise MissingDataError(f"{source}: no such folder or CSV file")
    if source.is_dir():
        found = (p for p in source.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                           p.relative_to(source).parts))
        return sorted({str(p) for p in found if looks_like_image(p)})
    with open(source, newline="") as fh:
        table = list(csv.reader(fh))
    if not table:
        raise InputError(f"{source}: empty CSV; expected a column of image paths")
    column = table[0].index("path") if "path" in table[0] else 0
    header = 1 if "path" in table[0] or not (source.parent / table[0][0]).exists() else 0
    return sorted({str((source.parent / row[column]).resolve()) for row in table[header:] if row and row[column]})


def _list_dicomweb(url: str, studies: list[str] | None) -> list[str]:
    from mccscan.dicomweb import connect, find_images

    if not studies:
        raise InputError(f"{url}: say which studies to scan (--studies FILE, one Study Instance UID a line)")
    client = connect(url)
    refs = [r for study in studies for r in find_images(client, study=study)]
    return sorted({f"{url}#{r.study}/{r.series}/{r.sop}" for r in refs})


def _fetched(path: str, folder: str) -> str:
    """A local file for an image: the path itself, or a PACS image (URL#study/series/instance)
    retrieved with WADO-RS into `folder`."""
    if "#" not in path or not path.startswith(("http://", "https://")):
        return path
    from mccscan.dicomweb import ImageRef, connect, fetch

    url, uids = path.split("#", 1)
    return str(fetch(connect(url), ImageRef(*uids.split("/")), folder))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


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
            out["sha256"] = file_sha256(local)
        except (OSError, MccscanError) as exc:
            reason = f"cannot read the file ({exc.strerror or exc})" if isinstance(exc, OSError) else str(exc)
            return {**out, "sha256": hashlib.sha256(f"unreadable:{path}".encode()).hexdigest(), "status": "failed",
                    "error": f"{path}: {reason}"}
        if out["sha256"] in done:
            return {**out, "status": "skipped"}
        try:
            prepared = prepare_file(local, pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels)
            out["image"], out["prepared"] = prepared.image, replace(prepared.without_source_pixels(), image=NO_IMAGE)
        except MccscanError as exc:
            return {**out, "status": "failed", "error": str(exc).replace(local, path)}
        except Exception as exc:  # noqa: BLE001 — one file's surprise must not stop the batch
            return {**out, "status": "failed", "error": f"{path}: {type(exc).__name__}: {exc}"}
    return {**out, "read_s": time.perf_counter() - start}


class ScanWorker:
    """Ray actor: holds the model, scans what the read tasks prepared."""

    def __init__(self, detector: str | None, weights: str | None, threshold: float | None, threads: int):
        import socket

        import ray
        import torch

        from mccscan.weights import load_detector

        torch.set_num_threads(threads)
        self.loaded, self.threshold = load_detector(detector, weights), threshold
        node = ray.get_runtime_context().get_node_id()[:8]
        self.name = f"{socket.gethostname()}/node {node}/pid {os.getpid()}"  # two nodes may share a host

    def __call__(self, row: dict) -> dict:
        """A results-table row for what the read task made, plus the worker's name and peak RSS."""
        import resource

        from mccscan.results_table import result_row
        from mccscan.scan import scan_prepared

        status, error, result, scan_s = row["status"], row["error"] or None, None, row["read_s"]
        if status == "read":
            start = time.perf_counter()
            try:
                result = scan_prepared(replace(row["prepared"], image=row["image"]), self.loaded,
                                       name=Path(row["path"]).name, threshold=self.threshold)
                status, scan_s = "done", scan_s + time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001 — recorded as failed, the batch goes on
                status, error = "failed", f"{row['path']}: scan failed ({type(exc).__name__}: {exc})"
        table_row = result_row(image_path=row["path"], image_sha256=row["sha256"], weights_sha256=self.loaded.sha256,
                               model_name=self.loaded.name, status="done" if status == "skipped" else status,
                               error=error, result=result, scan_s=scan_s, worker=self.name)
        # a skipped image keeps its row's shape (Ray joins blocks by schema); the driver writes no row for it
        return {**table_row, "skipped": status == "skipped",
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@dataclass
class BatchSummary:
    images: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # done before, with the same weights
    elapsed_s: float = 0.0
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # per scan worker
    failures: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.done + self.failed) / self.elapsed_s if self.elapsed_s else 0.0


def start_ray(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start Ray in this process (quietly)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise InputError("mccscan batch runs on Ray: pip install 'mccscan[archive]'") from None

    if ray.is_initialized():
        return
    options = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address:
        ray.init(address=address, **options)
    else:  # local: one CPU more than the machine has, so read tasks run beside busy scan workers
        ray.init(num_cpus=num_cpus or (os.cpu_count() or 1) + 1, **options)


def run_batch(source: str | Path, db_url: str, *, studies: list[str] | None = None, workers: int = 1,
              ray_address: str | None = None,
              detector: str | None = None, weights: str | None = None, threshold: float | None = None,
              pixel_spacing_mm: float | None = None, max_pixels: int | None = None, threads: int | None = None,
              progress: bool = False, on_row: Callable[[dict], None] | None = None) -> BatchSummary:
    """Scan every image of `source` not yet done with these weights; rows go to `db_url`.
    `progress` shows a bar with images/s and the time left; `on_row` sees each row."""
    from tqdm import tqdm

    from mccscan.database import create_engine
    from mccscan.results_table import COLUMNS, create_table, done_images, record
    from mccscan.weights import load_detector

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    paths = list_images(source, studies)
    engine = create_engine(db_url)
    create_table(engine)
    loaded = load_detector(detector, weights)  # its name and SHA-256 key the rows
    done = frozenset(done_images(engine, loaded.sha256))
    summary, start = BatchSummary(images=len(paths)), time.perf_counter()
    if not paths:
        return summary
    start_ray(ray_address)
    import ray

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts images; Ray's count blocks per operator
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    dataset = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=min(len(paths), 1000))
    dataset = dataset.map(read_stage, num_cpus=READ_CPUS, compute=ray.data.TaskPoolStrategy(size=workers + 1),
                          fn_kwargs=dict(done=done, pixel_spacing_mm=pixel_spacing_mm, max_pixels=max_pixels))
    with warnings.catch_warnings():  # Ray 2.6x moves max_restarts; it is still the way to set it
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        # no restarts: a crashed worker ends the batch, and a rerun resumes after the last image written
        dataset = dataset.map(ScanWorker, fn_constructor_kwargs=dict(detector=detector, weights=weights,
                                                                     threshold=threshold, threads=threads),
                              compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1, max_restarts=0,
                              scheduling_strategy="SPREAD")  # workers on as many machines as there are
    bar = tqdm(total=len(paths), unit="image", desc="batch", disable=not progress, smoothing=0.1)
    for row in dataset.iter_rows():
        bar.update(1)
        if row["skipped"]:
            summary.skipped += 1
        else:
            record(engine, {k: row[k] for k in COLUMNS})
            summary.done += row["status"] == "done"
            summary.failed += row["status"] == "failed"
            if row["status"] == "failed":
                summary.failures.append(row["error"])
            summary.peak_rss_mb[row["worker"]] = max(summary.peak_rss_mb.get(row["worker"], 0), row["peak_rss_mb"])
        summary.elapsed_s = time.perf_counter() - start
        if on_row is not None:
            on_row(row)
    bar.close()
    summary.elapsed_s = time.perf_counter() - start
    return summary
