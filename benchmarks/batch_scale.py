"""Archive-scale scanning: a plain loop over `scan_file` against `mccscan batch` on Ray.

    python benchmarks/batch_scale.py [--images 100] [--folder /tmp/mccscan-archive] [--jpeg2000] [--repeats 3]

On N full-field phantom DICOMs (3328×4084, 14 bit; made once into --folder; with --jpeg2000
stored JPEG 2000 lossless, as archives often are, into FOLDER-jpeg2000), each mode runs
in its own process, writing to a fresh SQLite database:
  loop      a plain Python loop over scan_file (the baseline)
  batch1    mccscan batch, Ray started in the process, 1 scan worker
  batch2    the same with 2 workers
  cluster   a two-node Ray cluster on this machine (ray.cluster_utils), 2 workers spread over it
Prints images/s (whole run, and steady: first result to last), peak RSS per process or
scan worker, and Ray's overhead against the loop at 1 worker. On a small machine the rates
of one run vary by ±5 %, so loop and batch1 run --repeats times, alternately, and the
overhead is taken between their medians. Then the rate at which the
driver can write result rows (one transaction each) to SQLite, and to PostgreSQL with
--postgresql URL: what the database allows before it, not the scans, bounds a batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

MODES = ("loop", "batch1", "batch2", "cluster")


def make_one(args: tuple[int, str, bool]) -> None:
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    from mccscan.datasets.phantom import make_phantom
    from mccscan.io import write_dicom

    seed, folder, jpeg2000 = args
    path = Path(folder) / f"phantom_{seed}.dcm"
    if not path.exists():
        ph = make_phantom(seed, n_clusters=2)
        write_dicom(path, ph.to_uint16(), bits_stored=14, pixel_spacing_mm=0.07, description="synthetic phantom")
        if jpeg2000:
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000Lossless)
            ds.save_as(path)


def run_mode(mode: str, folder: Path) -> dict:
    """One mode, in this process; returns its figures."""
    from mccscan.batch import list_images, run_batch

    paths = list_images(folder)
    stamps: list[float] = []
    start = time.perf_counter()
    if mode == "loop":
        from mccscan.scan import scan_file
        from mccscan.weights import load_detector

        loaded = load_detector("mc")
        for path in paths:
            scan_file(path, loaded)
            stamps.append(time.perf_counter())
        peaks = {"this process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/results.sqlite3"
            address, cluster = None, None
            if mode == "cluster":
                from ray.cluster_utils import Cluster

                cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
                cluster.add_node(num_cpus=2)
                address = cluster.address
            summary = run_batch(folder, db, workers=1 if mode == "batch1" else 2, ray_address=address,
                                on_row=lambda row: stamps.append(time.perf_counter()))
            peaks = summary.peak_rss_mb
            if cluster is not None:
                import ray

                ray.shutdown()
                cluster.shutdown()
            assert summary.done == len(paths), summary
    total = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"mode": mode, "images": len(paths), "total_s": total, "images_per_s": len(paths) / total,
            "steady_images_per_s": steady, "peak_rss_mb": peaks}


def rows_per_s(db_url: str, n: int = 500) -> float:
    """Result rows (a typical cluster list) written one transaction each, per second."""
    from mccscan.database import create_engine
    from mccscan.results_table import create_table, record, result_row

    engine = create_engine(db_url)
    create_table(engine)
    cluster = {"id": 1, "x": 1.0, "y": 2.0, "outline": [[1.0, 2.0]] * 20, "mcs": [{"x": 1, "y": 2, "score": 0.9}] * 10}
    start = time.perf_counter()
    for k in range(n):
        row = result_row(image_path=f"/archive/{k}.dcm", image_sha256=f"{k:064x}", weights_sha256="f" * 64,
                         options="{}", model_name="mc", status="done", scan_s=0.3, worker="bench")
        record(engine, {**row, "n_clusters": 1, "counts": '{"mcc": 1}', "clusters": json.dumps([cluster])})
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--folder", default="/tmp/mccscan-archive", help="where the phantoms are made (kept)")
    parser.add_argument("--jpeg2000", action="store_true", help="store the phantoms JPEG 2000 lossless")
    parser.add_argument("--repeats", type=int, default=3, help="runs of loop and batch1 (alternately)")
    parser.add_argument("--postgresql", metavar="URL", help="also measure row writes to this (empty) database")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    folder = Path(args.folder + ("-jpeg2000" if args.jpeg2000 else ""))
    if args.mode:
        print(json.dumps(run_mode(args.mode, folder)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(make_one, [(270_000 + k, str(folder), args.jpeg2000) for k in range(args.images)]))
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    print("| mode | images | total s | images/s | steady images/s | peak RSS MB |\n|---|---|---|---|---|---|")
    for mode in [*("loop", "batch1") * args.repeats, "batch2", "cluster"]:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--folder", str(folder)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        runs[mode].append(r)
        peaks = ", ".join(f"{mb:.0f}" for mb in r["peak_rss_mb"].values())
        print(f"| {mode} | {r['images']} | {r['total_s']:.1f} | {r['images_per_s']:.3f} | "
              f"{r['steady_images_per_s']:.3f} | {peaks} |", flush=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    print(f"\nRay's overhead at 1 worker (medians of {args.repeats} runs): "
          f"{median('batch1', 'total_s') / median('loop', 'total_s') - 1:+.1%} on the whole run, "
          f"{median('loop', 'steady_images_per_s') / median('batch1', 'steady_images_per_s') - 1:+.1%} in steady state")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"result rows written per second: SQLite {rows_per_s(f'sqlite:///{tmp}/rate.sqlite3'):.0f}"
              + (f", PostgreSQL {rows_per_s(args.postgresql):.0f}" if args.postgresql else ""))
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
