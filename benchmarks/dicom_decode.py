"""Decode time of a full-field mammogram (3328×4084, 14-bit phantom) in every transfer syntax a
scanner sends, read as `mccscan scan` reads it (`read_mammogram`: decode, modality LUT, stretch).

    python benchmarks/dicom_decode.py [--repeats 5]

Encoders: pydicom's (RLE, JPEG-LS, JPEG 2000) and dcmtk's dcmcjpeg (JPEG Lossless, which
pydicom cannot write). Prints a markdown table: file size, median decode time, ratio to
the uncompressed file, and whether the pixels equal the uncompressed ones.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid

from mccscan.datasets.phantom import make_phantom
from mccscan.io import read_mammogram

PYDICOM_SYNTAXES = [(uid.RLELossless, {}), (uid.JPEGLSLossless, {}), (uid.JPEGLSNearLossless, {"jls_error": 2}),
                    (uid.JPEG2000Lossless, {}), (uid.JPEG2000, {"j2k_cr": [10]})]
DCMTK_SYNTAXES = [("JPEG Lossless SV1 (process 14)", ["+e1"]),
                  ("JPEG Lossless (process 14, SV 6)", ["+el", "+sv", "6"])]


def encode_all(source: Path, folder: Path) -> dict[str, Path]:
    files = {"uncompressed (explicit VR LE)": source}
    for syntax, options in PYDICOM_SYNTAXES:
        ds = pydicom.dcmread(source)
        ds.compress(syntax, **options)
        files[syntax.name] = folder / f"{len(files)}.dcm"
        ds.save_as(files[syntax.name])
    for name, flags in DCMTK_SYNTAXES:
        files[name] = folder / f"{len(files)}.dcm"
        subprocess.run(["dcmcjpeg", *flags, str(source), str(files[name])], check=True, capture_output=True)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ph = make_phantom(240_000, n_clusters=3)
    rows, cols = ph.image.shape
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "plain.dcm"
        from mccscan.io import write_dicom

        write_dicom(source, ph.to_uint16(), bits_stored=14, pixel_spacing_mm=0.07)
        files = encode_all(source, folder)
        plain = read_mammogram(source).image
        base = None
        print(f"{cols}×{rows} px, 14 bits stored; median of {args.repeats} reads\n")
        print("| transfer syntax | file MB | decode s | × uncompressed | pixels equal |")
        print("|---|---|---|---|---|")
        for name, path in files.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                image = read_mammogram(path).image
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            base = base or median
            print(f"| {name} | {path.stat().st_size / 1e6:.1f} | {median:.2f} | {median / base:.1f} | "
                  f"{'yes' if np.array_equal(image, plain) else f'no (max diff {np.abs(image - plain).max():.4f})'} |",
                  flush=True)


if __name__ == "__main__":
    main()
