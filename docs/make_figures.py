"""Make the README's pictures: a phantom mammogram, a zoom on one cluster, a demo scan.

    python docs/make_figures.py   (after `mccscan demo`, which writes mccscan-demo/)
"""

from pathlib import Path

import numpy as np
from PIL import Image

from mccscan.datasets.phantom import make_phantom
from mccscan.render import preview

DOCS = Path(__file__).parent


def main(seed: int = 7, clusters: int = 3) -> None:
    ph = make_phantom(seed, n_clusters=clusters)  # the same phantom `mccscan demo` scans
    img8 = ph.to_uint8()
    preview(np.repeat(img8[..., None], 3, 2), 640).save(DOCS / "phantom.png")
    c = max(ph.clusters, key=lambda c: c.n_mcs)
    half = 150  # 300 px = 21 mm
    x0 = int(np.clip(c.x - half, 0, img8.shape[1] - 2 * half))
    y0 = int(np.clip(c.y - half, 0, img8.shape[0] - 2 * half))
    zoom = Image.fromarray(img8[y0:y0 + 2 * half, x0:x0 + 2 * half]).resize((600, 600), Image.LANCZOS)
    zoom.save(DOCS / "phantom-cluster.png")
    shown = Path("mccscan-demo") / f"phantom_{seed}.preview.png"  # the overlay with its legend
    if shown.is_file():
        Image.open(shown).save(DOCS / "demo-scan.png")


if __name__ == "__main__":
    main()
