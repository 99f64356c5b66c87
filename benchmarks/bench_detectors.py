"""The cluster detector against today's tile scan, on the same 3328×4084 phantom in one run;
and each detector's peak RSS on the largest image the pixel limit allows (100 Mpx).

Each measurement runs in its own process (so peak RSS is its own). Reported: the median
over `--repeats` of the scan itself (breast mask + detection, what ScanResult.elapsed_s
counts) and of the whole `scan_file` (read + resample too), and the ratio cluster / tile.

    python benchmarks/bench_detectors.py [--repeats 5]
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

DETECTORS = ("paper", "mc")


def run(path: str, detector: str, repeats: int) -> dict:
    from mccscan.scan import scan_file
    from mccscan.weights import load_detector

    loaded = load_detector(detector)
    scan_file(path, loaded)  # warm-up
    scan_s, total_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result, _ = scan_file(path, loaded)
        total_s.append(time.perf_counter() - start)
        scan_s.append(result.elapsed_s)
    return {"detector": detector, "scan_s": statistics.median(scan_s), "total_s": statistics.median(total_s),
            "clusters": len(result.findings), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*args: str) -> dict:
    return json.loads(subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True,
                                     text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=3, metavar=("PATH", "DETECTOR", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child[0], args.child[1], int(args.child[2]))))
        return

    import numpy as np

    from mccscan.datasets.phantom import make_phantom
    from mccscan.io import write_dicom

    with tempfile.TemporaryDirectory() as tmp:
        ph = make_phantom(7, size="large", n_clusters=3)
        path = ph.write(tmp, formats=("dcm",))["dcm"]
        rows = [child(str(path), d, str(args.repeats)) for d in DETECTORS]
        big = np.zeros((10_000, 10_000), np.uint16)  # 100 Mpx: three phantoms side by side, 70 µm
        for k in range(3):
            big[:4084, k * 3328:(k + 1) * 3328] = ph.to_uint16()
            big[5000:9084, k * 3328:(k + 1) * 3328] = ph.to_uint16()
        big_path = write_dicom(f"{tmp}/big.dcm", big, bits_stored=14, pixel_spacing_mm=0.07)
        large = [child(str(big_path), d, "1") for d in DETECTORS]
    tile, cluster = rows
    print(f"3328×4084 phantom, median of {args.repeats}:")
    print(f"{'detector':<10}{'scan s':>9}{'scan_file s':>13}{'reported':>10}{'peak RSS MB':>13}{'100 Mpx RSS MB':>16}")
    for r, big_r in zip(rows, large):
        print(f"{r['detector']:<10}{r['scan_s']:>9.3f}{r['total_s']:>13.3f}{r['clusters']:>10}{r['peak_rss_mb']:>13.0f}"
              f"{big_r['peak_rss_mb']:>16.0f}")
    print(f"cluster / tile: scan {cluster['scan_s'] / tile['scan_s']:.2f}×, scan_file "
          f"{cluster['total_s'] / tile['total_s']:.2f}×")


if __name__ == "__main__":
    main()
