"""Scan of one 3328×4084 phantom mammogram: per-patch vs batched vs fully convolutional.

Each engine runs in its own process (so peak RSS is that engine's alone), reading the
same DICOM and scanning it `--repeats` times; the median wall time of the scan
(read + resample + breast mask + scoring) is reported with the ratio to the per-patch
engine and the achieved GFLOP/s (per-patch model FLOPs × scanned tiles / time).

    python benchmarks/bench_scan.py [--repeats 5] [--threads 2]
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

ENGINES = ("patch", "batched", "convolutional")


def run_engine(path: str, engine: str, repeats: int) -> dict:
    from mccscan.perf import peak_flops
    from mccscan.scan import scan_file
    from mccscan.weights import load_model

    loaded = load_model()
    scan_file(path, loaded, engine=engine)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result, _ = scan_file(path, loaded, engine=engine)
        times.append(time.perf_counter() - start)
    tiles = result.counts["mcc"] + result.counts["normal"]
    median = statistics.median(times)
    gflops = tiles * loaded.model.flops_per_patch() / median / 1e9
    return {"engine": engine, "median_s": median, "min_s": min(times), "tiles_scanned": tiles,
            "gflop_s": gflops, "fraction_of_peak": gflops * 1e9 / peak_flops(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "counts": result.counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_engine(args.child[0], args.child[1], args.repeats)))
        return

    from mccscan.datasets.phantom import make_phantom

    with tempfile.TemporaryDirectory() as tmp:
        path = make_phantom(7, size="large", n_clusters=3).write(tmp, formats=("dcm",))["dcm"]
        rows = []
        for engine in ENGINES:
            cmd = [sys.executable, __file__, "--repeats", str(args.repeats), "--child", str(path), engine]
            if args.threads:
                cmd[2:2] = ["--threads", str(args.threads)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    base = rows[0]["median_s"]
    print(f"3328×4084 phantom, {rows[0]['tiles_scanned']} breast tiles scanned, median of {args.repeats} runs")
    print(f"{'engine':<15}{'median s':>10}{'min s':>8}{'speed-up':>10}{'GFLOP/s':>9}{'of peak':>9}{'peak RSS MB':>13}")
    for r in rows:
        print(f"{r['engine']:<15}{r['median_s']:>10.3f}{r['min_s']:>8.3f}{base / r['median_s']:>9.2f}×"
              f"{r['gflop_s']:>9.0f}{r['fraction_of_peak']:>9.0%}{r['peak_rss_mb']:>13.0f}")
    assert len({json.dumps(r["counts"]) for r in rows}) == 1, "engines disagree on the counts"


if __name__ == "__main__":
    main()
